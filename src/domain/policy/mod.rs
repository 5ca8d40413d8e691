//! The policy file: parsed with spans (`marked-yaml`) so every error names a line and column,
//! then checked and compiled into [`Policy`], which answers who may request and approve what.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::duration::GrantDuration;
pub use bundles::MAX_BUNDLE;
use check::{Checker, RawPolicy, load_error};
pub use clients::{Client, DEFAULT_CLIENT_RATE, token_sha256};
pub use digest::DigestSettings;
pub use directory::{Lookups, OnCall, PagerDutyGroup, STALE_AFTER, is_usergroup_id};
pub use live::LivePolicy;
pub use oncall::{Rotation, Step};

mod advice;
mod bundles;
mod check;
mod clients;
mod digest;
mod directory;
mod identities;
mod live;
mod oncall;
mod providers;
mod resource;
mod template;
#[cfg(test)]
mod tests;

/// One problem found in a policy file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Key path such as `resources.prod-db.approvers`; empty for syntax errors.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A problem with the file as a whole (it cannot be read, it is empty) has no place in it.
        if self.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found in one policy file (never empty).
#[derive(Debug, thiserror::Error)]
#[error("{}", self.0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct PolicyErrors(pub Vec<Diagnostic>);

/// What `check` prints as warnings: fine to load, but `serve` will refuse it as is.
pub type Warnings = Vec<Diagnostic>;

// ---------------------------------------------------------------------------------------------
// The compiled policy.

#[derive(Clone, Debug)]
pub struct Policy {
    pub settings: Settings,
    pub groups: BTreeMap<String, Vec<String>>,
    pub identities: BTreeMap<String, BTreeMap<String, String>>,
    pub providers: BTreeMap<String, ProviderConfig>,
    /// How hard jitbot may push each provider (by name); see [`ProviderLimits`].
    pub limits: BTreeMap<String, ProviderLimits>,
    pub resources: BTreeMap<String, Resource>,
    /// Machines that use the HTTP API, by name.
    pub clients: BTreeMap<String, Client>,
    /// Resources asked for together, by bundle name.
    pub bundles: BTreeMap<String, Vec<String>>,
    /// The rotation groups: who is on call when.
    pub rotations: BTreeMap<String, Rotation>,
    /// The PagerDuty groups (their `members` are in `groups`, to fall back on).
    pub pagerduty: BTreeMap<String, PagerDutyGroup>,
    /// What Slack and PagerDuty last said (user groups' members, who is on call); shared by
    /// every version of the policy, see [`LivePolicy`].
    pub lookups: std::sync::Arc<Lookups>,
    /// The weekly digest: where and when (`digest:`).
    pub digest: Option<DigestSettings>,
    /// The template each expanded resource came from (`aws-prod-read` → `aws-{account}-{level}`).
    pub families: BTreeMap<String, String>,
}

/// How hard jitbot may push one provider: calls in flight at once and how long one may take.
/// Revokes and grants each get `concurrency` calls, so revokes never wait for grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderLimits {
    pub concurrency: u32,
    pub timeout: GrantDuration,
}

/// Default `providers.*.concurrency`: cloud APIs throttle mutating calls at a few tens per second.
pub const DEFAULT_PROVIDER_CONCURRENCY: u32 = 16;
/// Default `providers.*.timeout`: one grant or revoke call, the target's read-back included.
pub const DEFAULT_PROVIDER_TIMEOUT_SECS: u64 = 10;
/// Largest `providers.*.concurrency` accepted.
const MAX_PROVIDER_CONCURRENCY: u32 = 256;

impl Default for ProviderLimits {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_PROVIDER_CONCURRENCY,
            timeout: GrantDuration::from_secs(DEFAULT_PROVIDER_TIMEOUT_SECS)
                .expect("constant is positive"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// Pending requests nobody decides are timed out after this.
    pub request_ttl: GrantDuration,
    /// Shortest grant anyone may ask for.
    pub min_duration: GrantDuration,
    /// An approved grant the provider has not confirmed this long after its approval is
    /// `grant_failed`: access never starts hours after the people who approved it expected.
    pub grant_deadline: GrantDuration,
    /// Group names and user IDs who may end any grant and see every pending request.
    pub admins: Vec<String>,
    /// Pending and active requests one person may hold at once.
    pub max_open_per_user: u32,
    /// `settings.timezone` (an IANA name): the digest's schedule and dates, and rotation shifts,
    /// follow its wall clock.
    pub timezone: chrono_tz::Tz,
}

/// Default `settings.request_ttl`: two hours is long enough for a reviewer in another meeting.
const DEFAULT_REQUEST_TTL_SECS: u64 = 2 * 3_600;
/// Default `settings.min_duration`.
const DEFAULT_MIN_DURATION_SECS: u64 = 60;
/// The most memory one `reason_pattern` may compile to: a pattern is written by people, checked
/// against every reason, and must not cost more than a moment.
const REASON_PATTERN_BYTES: usize = 256 * 1024;

/// Default `settings.grant_deadline`.
const DEFAULT_GRANT_DEADLINE_SECS: u64 = 10 * 60;
/// Default `settings.max_open_per_user`.
const DEFAULT_MAX_OPEN_PER_USER: u32 = 10;
/// The duration of a request that names none, unless the resource's `max_duration` is shorter.
pub const FALLBACK_DURATION_SECS: u64 = 3_600;

/// How to reach one provider. A grant keeps a copy of this, so its revoke works after the policy
/// changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    Postgres {
        url_env: String,
    },
    Webhook {
        url: String,
        secret_env: String,
    },
    /// A cluster reached through the kubeconfig file named by `kubeconfig_env`, else
    /// `KUBECONFIG`, `~/.kube/config` or the pod's service account.
    Kubernetes {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kubeconfig_env: Option<String>,
    },
    /// AWS IAM through the SDK's credential chain; `endpoint_url` for a stand-in such as moto.
    AwsIam {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
    },
    /// GCP IAM through Application Default Credentials, or the key file whose path is in
    /// `credentials_env`; `endpoint_url` for a stand-in.
    GcpIam {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials_env: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
    },
    /// AWS IAM Identity Center: account assignments of permission sets.
    AwsSso {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
        instance_arn: String,
        identity_store_id: String,
    },
}

impl ProviderConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Postgres { .. } => "postgres",
            ProviderConfig::Webhook { .. } => "webhook",
            ProviderConfig::Kubernetes { .. } => "kubernetes",
            ProviderConfig::AwsIam { .. } => "aws_iam",
            ProviderConfig::AwsSso { .. } => "aws_sso",
            ProviderConfig::GcpIam { .. } => "gcp_iam",
        }
    }

    /// Can this provider name a person by email (and so fall back to the Slack profile's)?
    pub fn uses_email(&self) -> bool {
        matches!(
            self,
            ProviderConfig::Webhook { .. }
                | ProviderConfig::Kubernetes { .. }
                | ProviderConfig::AwsSso { .. }
                | ProviderConfig::GcpIam { .. }
        )
    }

    /// Names of the environment variables this provider reads.
    pub fn env_vars(&self) -> Vec<&str> {
        match self {
            ProviderConfig::Postgres { url_env } => vec![url_env],
            ProviderConfig::Webhook { secret_env, .. } => vec![secret_env],
            ProviderConfig::Kubernetes { kubeconfig_env } => {
                kubeconfig_env.iter().map(String::as_str).collect()
            }
            ProviderConfig::AwsIam { .. } | ProviderConfig::AwsSso { .. } => Vec::new(),
            ProviderConfig::GcpIam {
                credentials_env, ..
            } => credentials_env.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Resource {
    pub name: String,
    pub description: String,
    pub provider: String,
    /// Provider-specific shape: `{role}` for postgres, anything for a webhook.
    pub grant: serde_json::Map<String, serde_json::Value>,
    pub min_duration: GrantDuration,
    pub max_duration: GrantDuration,
    pub default_duration: GrantDuration,
    pub channel: String,
    /// Group names and user IDs, as written.
    pub approvers: Vec<String>,
    pub approvals: u32,
    pub self_approval: bool,
    /// The requester may approve their own request, with a reason, loudly: every approver and
    /// the channel are alerted.
    pub break_glass: bool,
    /// Who is paged, and when, while nobody decides.
    pub escalation: Vec<Step>,
    /// One reminder to the approvers this long after the request (before the first step).
    pub remind: Option<GrantDuration>,
    pub reason_required: bool,
    /// A reason must match this (`reason_pattern`), e.g. a ticket id.
    pub reason_pattern: Option<regex::Regex>,
    /// `None`: anyone may ask.
    pub requesters: Option<Vec<String>>,
    pub auto_approve: Vec<AutoApprove>,
}

#[derive(Clone, Debug)]
pub struct AutoApprove {
    pub requesters: Vec<String>,
    pub max_duration: GrantDuration,
}

impl Policy {
    /// Slack user IDs named by a list of group names and user IDs.
    /// The limits of the provider called `name` (defaults when the policy no longer names it).
    pub fn provider_limits(&self, name: &str) -> ProviderLimits {
        self.limits.get(name).copied().unwrap_or_default()
    }

    /// Is `user` named by a list of group names, user IDs and Slack user groups (as Slack last
    /// said)? (No allocation: called per request.)
    pub fn names(&self, entries: &[String], user: &str) -> bool {
        let one = |entry: &String| {
            entry == user || (is_usergroup_id(entry) && self.lookups.in_usergroup(entry, user))
        };
        entries.iter().any(|entry| match self.groups.get(entry) {
            Some(members) => members.iter().any(one),
            None => one(entry),
        })
    }

    /// The people a list names: groups and Slack user groups (as Slack last said) expanded.
    pub fn expand(&self, entries: &[String]) -> BTreeSet<String> {
        let mut users = BTreeSet::new();
        let mut one = |entry: &String| {
            if is_usergroup_id(entry) {
                users.extend(self.lookups.usergroup(entry).unwrap_or_default());
            } else {
                users.insert(entry.clone());
            }
        };
        for entry in entries {
            match self.groups.get(entry) {
                Some(members) => members.iter().for_each(&mut one),
                None => one(entry),
            }
        }
        users
    }

    /// The Slack user groups a list names, directly or through its groups.
    pub fn usergroups_in<'a>(&'a self, entries: &'a [String]) -> BTreeSet<&'a str> {
        entries
            .iter()
            .flat_map(|e| {
                self.groups
                    .get(e)
                    .map(|m| m.as_slice())
                    .unwrap_or(std::slice::from_ref(e))
            })
            .filter(|e| is_usergroup_id(e))
            .map(String::as_str)
            .collect()
    }

    /// Every Slack user group the policy names anywhere.
    pub fn all_usergroups(&self) -> BTreeSet<&str> {
        let mut out: BTreeSet<&str> = self
            .groups
            .values()
            .flatten()
            .chain(&self.settings.admins)
            .filter(|e| is_usergroup_id(e))
            .map(String::as_str)
            .collect();
        for r in self.resources.values() {
            out.extend(self.usergroups_in(&r.approvers));
            if let Some(q) = &r.requesters {
                out.extend(self.usergroups_in(q));
            }
            for rule in &r.auto_approve {
                out.extend(self.usergroups_in(&rule.requesters));
            }
        }
        out
    }

    pub fn may_request(&self, resource: &Resource, user: &str) -> bool {
        match &resource.requesters {
            None => true,
            Some(entries) => self.names(entries, user),
        }
    }

    /// Why this policy would refuse a request stored under an earlier one, or `None` if it
    /// still allows it: the requester may still ask, the duration is still within bounds, and
    /// the requester still has an identity at the resource's provider.
    pub fn no_longer_allows(
        &self,
        resource: &Resource,
        requester: &str,
        duration_secs: i64,
    ) -> Option<String> {
        if !self.may_request(resource, requester) {
            return Some(format!(
                "the requester may no longer request {}",
                resource.name
            ));
        }
        let secs = u64::try_from(duration_secs).unwrap_or(0);
        if secs > resource.max_duration.secs() {
            return Some(format!(
                "its duration is over the maximum of {} for {} now",
                resource.max_duration, resource.name
            ));
        }
        if secs < resource.min_duration.secs() {
            return Some(format!(
                "its duration is under the minimum of {} for {} now",
                resource.min_duration, resource.name
            ));
        }
        let kind = self.providers.get(&resource.provider)?.kind();
        if self.identity(requester, kind).is_none() {
            return Some(format!(
                "the requester no longer has a {kind} identity for {}",
                resource.name
            ));
        }
        None
    }

    /// Is `user` one of `settings.admins`?
    pub fn is_admin(&self, user: &str) -> bool {
        self.names(&self.settings.admins, user)
    }

    /// Is `user` among the resource's approvers? (Self-approval is checked separately.)
    pub fn is_approver(&self, resource: &Resource, user: &str) -> bool {
        self.approves(&resource.approvers, user, chrono::Utc::now())
    }

    pub fn auto_approves(&self, resource: &Resource, user: &str, duration: GrantDuration) -> bool {
        resource
            .auto_approve
            .iter()
            .any(|rule| duration <= rule.max_duration && self.names(&rule.requesters, user))
    }

    /// What a person is at a provider of this kind, or `None` when the provider cannot name them.
    /// A webhook gets every field known; postgres needs a login role.
    pub fn identity(&self, user: &str, kind: &str) -> Option<BTreeMap<String, String>> {
        let known = self.identities.get(user).cloned().unwrap_or_default();
        match kind {
            "postgres" => known
                .get("postgres")
                .map(|login| BTreeMap::from([("postgres".to_string(), login.clone())])),
            "aws_iam" => known
                .get("aws_iam_user")
                .map(|user| BTreeMap::from([("aws_iam_user".to_string(), user.clone())])),
            // The IAM member: `gcp_member` (`user:…`, `group:…`), else `user:<email>`.
            "gcp_iam" => Some(
                known
                    .into_iter()
                    .filter(|(k, _)| k == "gcp_member" || k == "email")
                    .collect(),
            ),
            // The Identity Store user: `aws_sso_user` (its user name), else the email.
            "aws_sso" => Some(
                known
                    .into_iter()
                    .filter(|(k, _)| k == "aws_sso_user" || k == "email")
                    .collect(),
            ),
            // The Kubernetes user: `k8s_user`, else the email (an OIDC cluster's usual user
            // name), from `identities` or, at the grant, the Slack profile.
            "kubernetes" => Some(
                known
                    .into_iter()
                    .filter(|(k, _)| k == "k8s_user" || k == "email")
                    .collect(),
            ),
            _ => Some(known),
        }
    }

    /// The closest resource name, for "did you mean".
    pub fn suggest(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.resources
            .keys()
            .map(|k| (edit_distance(&name, &k.to_ascii_lowercase()), k))
            .filter(|(d, k)| *d <= 2.max(k.len() / 3))
            .min()
            .map(|(_, k)| k.as_str())
    }

    /// The closest of `known` to `name`, for "did you mean".
    pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
        known
            .into_iter()
            .map(|k| (edit_distance(name, k), k))
            .filter(|(d, k)| *d <= 2.max(k.len() / 3))
            .min()
            .map(|(_, k)| k)
    }

    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<(Policy, Warnings), PolicyErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            PolicyErrors(vec![Diagnostic {
                file: file.clone(),
                line: 0,
                column: 0,
                path: String::new(),
                message: format!("cannot read the policy file: {}", io_reason(&e)),
            }])
        })?;
        Self::parse(&file, &text)
    }

    /// Parses and checks policy text; `file` only labels the diagnostics.
    pub fn parse(file: &str, text: &str) -> Result<(Policy, Warnings), PolicyErrors> {
        let diag = |line: usize, column: usize, path: &str, message: String| Diagnostic {
            file: file.to_string(),
            line,
            column,
            path: path.to_string(),
            message,
        };
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
        {
            return Err(PolicyErrors(vec![diag(
                0,
                0,
                "",
                "the policy file is empty: it must name at least the resources people may request (see manifest/policy.yaml)".into(),
            )]));
        }
        let options = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true);
        let mut node = marked_yaml::parse_yaml_with_options(0, text, options)
            .map_err(|e| PolicyErrors(vec![load_error(file, e)]))?;
        let mut families = BTreeMap::new();
        let mut template_errors = template::expand(&mut node, file, &mut families);
        if !template_errors.is_empty() {
            template_errors.sort_by_key(|d| (d.line, d.column));
            return Err(PolicyErrors(template_errors));
        }
        let raw: RawPolicy = marked_yaml::from_node(&node).map_err(|e| {
            let (line, column) = e
                .start_mark()
                .map(|m| (m.line(), m.column()))
                .unwrap_or((1, 1));
            PolicyErrors(vec![diag(
                line,
                column,
                e.path().unwrap_or(""),
                advice::plain_error(&(*e).to_string()),
            )])
        })?;
        let mut checker = Checker {
            root: &node,
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
            client_names: BTreeSet::new(),
            rotations: BTreeMap::new(),
            pagerduty_groups: BTreeMap::new(),
        };
        let mut policy = checker.compile(raw);
        policy.families = families;
        if checker.errors.is_empty() {
            Ok((policy, checker.warnings))
        } else {
            checker.errors.sort_by_key(|d| (d.line, d.column));
            Err(PolicyErrors(checker.errors))
        }
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// Why a file could not be read, without the OS error number.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// `U…`/`W…` followed by capitals and digits.
pub fn is_user_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('U' | 'W'))
        && s.len() >= 3
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Does `s` look like a Slack user (`U…`/`W…`, capitals and digits)? Everything else a request
/// may name as its requester is an API client, whose names never look like this.
pub fn is_slack_user(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('U' | 'W'))
        && s.len() >= 2
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn looks_like_slack_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('U' | 'W' | 'S'))
        && s.len() >= 2
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

pub(super) fn is_channel_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('C' | 'G'))
        && s.len() >= 3
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}
