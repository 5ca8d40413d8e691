//! The policy file: parsed with spans (`marked-yaml`) so every error names a line and column,
//! then checked and compiled into [`Policy`], which answers who may request and approve what.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use marked_yaml::Spanned;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::duration::GrantDuration;

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
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
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
}

/// Default `settings.request_ttl`: two hours is long enough for a reviewer in another meeting.
const DEFAULT_REQUEST_TTL_SECS: u64 = 2 * 3_600;
/// Default `settings.min_duration`.
const DEFAULT_MIN_DURATION_SECS: u64 = 60;
/// The duration of a request that names none, unless the resource's `max_duration` is shorter.
pub const FALLBACK_DURATION_SECS: u64 = 3_600;

/// How to reach one provider. A grant keeps a copy of this, so its revoke works after the policy
/// changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderConfig {
    Postgres { url_env: String },
    Webhook { url: String, secret_env: String },
}

impl ProviderConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Postgres { .. } => "postgres",
            ProviderConfig::Webhook { .. } => "webhook",
        }
    }

    /// Can this provider name a person by email (and so fall back to the Slack profile's)?
    pub fn uses_email(&self) -> bool {
        matches!(self, ProviderConfig::Webhook { .. })
    }

    /// Names of the environment variables this provider reads.
    pub fn env_vars(&self) -> Vec<&str> {
        match self {
            ProviderConfig::Postgres { url_env } => vec![url_env],
            ProviderConfig::Webhook { secret_env, .. } => vec![secret_env],
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
    pub reason_required: bool,
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

    /// Is `user` named by a list of group names and user IDs? (No allocation: called per request.)
    pub fn names(&self, entries: &[String], user: &str) -> bool {
        entries.iter().any(|entry| match self.groups.get(entry) {
            Some(members) => members.iter().any(|m| m == user),
            None => entry == user,
        })
    }

    pub fn expand(&self, entries: &[String]) -> BTreeSet<String> {
        let mut users = BTreeSet::new();
        for entry in entries {
            match self.groups.get(entry) {
                Some(members) => users.extend(members.iter().cloned()),
                None => {
                    users.insert(entry.clone());
                }
            }
        }
        users
    }

    pub fn may_request(&self, resource: &Resource, user: &str) -> bool {
        match &resource.requesters {
            None => true,
            Some(entries) => self.names(entries, user),
        }
    }

    /// Is `user` among the resource's approvers? (Self-approval is checked separately.)
    pub fn is_approver(&self, resource: &Resource, user: &str) -> bool {
        self.names(&resource.approvers, user)
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

    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<(Policy, Warnings), PolicyErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            PolicyErrors(vec![Diagnostic {
                file: file.clone(),
                line: 0,
                column: 0,
                path: String::new(),
                message: format!("cannot read the policy file: {e}"),
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
        let options = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true);
        let node = marked_yaml::parse_yaml_with_options(0, text, options)
            .map_err(|e| PolicyErrors(vec![load_error(file, e)]))?;
        let raw: RawPolicy = marked_yaml::from_node(&node).map_err(|e| {
            let (line, column) = e
                .start_mark()
                .map(|m| (m.line(), m.column()))
                .unwrap_or((1, 1));
            PolicyErrors(vec![diag(
                line,
                column,
                e.path().unwrap_or(""),
                (*e).to_string(),
            )])
        })?;
        let mut checker = Checker {
            root: &node,
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let policy = checker.compile(raw);
        if checker.errors.is_empty() {
            Ok((policy, checker.warnings))
        } else {
            checker.errors.sort_by_key(|d| (d.line, d.column));
            Err(PolicyErrors(checker.errors))
        }
    }
}

fn load_error(file: &str, error: marked_yaml::LoadError) -> Diagnostic {
    use marked_yaml::LoadError as E;
    let (marker, message) = match &error {
        E::TopLevelMustBeMapping(m) => (
            Some(*m),
            "the policy must be a mapping of sections".to_string(),
        ),
        E::TopLevelMustBeSequence(m) => (Some(*m), "unexpected top level".to_string()),
        E::UnexpectedAnchor(m) => (
            Some(*m),
            "anchors and aliases are not allowed in a policy".to_string(),
        ),
        E::MappingKeyMustBeScalar(m) => (Some(*m), "keys must be plain strings".to_string()),
        E::UnexpectedTag(m) => (Some(*m), "tags are not allowed in a policy".to_string()),
        E::ScanError(m, e) => (Some(*m), format!("syntax error: {e}")),
        E::DuplicateKey(inner) => (
            inner.key.span().start().copied(),
            format!("duplicate key `{}`", inner.key.as_str()),
        ),
    };
    let (line, column) = marker.map(|m| (m.line(), m.column())).unwrap_or((1, 1));
    Diagnostic {
        file: file.to_string(),
        line,
        column,
        path: String::new(),
        message,
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

/// `U…`/`W…` followed by capitals and digits.
pub fn is_user_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('U' | 'W'))
        && s.len() >= 3
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn looks_like_slack_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('U' | 'W' | 'S'))
        && s.len() >= 2
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn is_channel_id(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('C' | 'G'))
        && s.len() >= 3
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// The file as written.

type Map<V> = BTreeMap<String, V>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    settings: Option<RawSettings>,
    digest: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    groups: Map<RawGroup>,
    #[serde(default)]
    identities: Map<Map<Spanned<String>>>,
    #[serde(default)]
    providers: Map<RawProvider>,
    #[serde(default)]
    resources: Map<RawResource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    request_ttl: Option<Spanned<String>>,
    min_duration: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    members: Option<Vec<Spanned<String>>>,
    rotation: Option<RawRotation>,
    pagerduty: Option<Spanned<IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotation {
    members: Vec<Spanned<String>>,
    shift: Spanned<String>,
    start: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    kind: Spanned<String>,
    url_env: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    endpoint_url: Option<Spanned<String>>,
    concurrency: Option<Spanned<u32>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResource {
    description: Option<String>,
    provider: Spanned<String>,
    grant: Option<Spanned<serde_json::Map<String, serde_json::Value>>>,
    min_duration: Option<Spanned<String>>,
    max_duration: Spanned<String>,
    default_duration: Option<Spanned<String>>,
    channel: Spanned<String>,
    approvers: Spanned<Vec<Spanned<String>>>,
    approvals: Option<Spanned<u32>>,
    self_approval: Option<bool>,
    reason_required: Option<bool>,
    requesters: Option<Vec<Spanned<String>>>,
    escalation: Option<Spanned<IgnoredAny>>,
    auto_approve: Option<Vec<RawAutoApprove>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutoApprove {
    requesters: Spanned<Vec<Spanned<String>>>,
    max_duration: Spanned<String>,
}

/// Provider kinds of the interface that this version does not implement yet.
const LATER_PROVIDER_KINDS: &[&str] = &["aws_iam", "gcp_iam", "gcp", "kubernetes", "k8s"];
const IDENTITY_KEYS: &[&str] = &[
    "postgres",
    "aws_iam_user",
    "gcp_member",
    "k8s_user",
    "email",
];

struct Checker<'a> {
    root: &'a marked_yaml::Node,
    file: &'a str,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

/// Something with a place in the file: a spanned value, or a key given by its path.
trait At {
    fn at(&self, root: &marked_yaml::Node) -> (usize, usize);
}

impl<T> At for &Spanned<T> {
    fn at(&self, _root: &marked_yaml::Node) -> (usize, usize) {
        self.span()
            .start()
            .map(|m| (m.line(), m.column()))
            .unwrap_or((1, 1))
    }
}

/// A key, by its path from the top of the file.
struct Key<'a>(&'a [&'a str]);

impl At for Key<'_> {
    fn at(&self, root: &marked_yaml::Node) -> (usize, usize) {
        key_pos(root, self.0)
    }
}

/// Where a key sits in the file, looked up by its path from the top.
fn key_pos(root: &marked_yaml::Node, path: &[&str]) -> (usize, usize) {
    let mut node = root;
    let mut at = (1, 1);
    for part in path {
        let Some(map) = node.as_mapping() else { break };
        let Some((key, value)) = map.iter().find(|(k, _)| k.as_str() == *part) else {
            break;
        };
        if let Some(m) = key.span().start() {
            at = (m.line(), m.column());
        }
        node = value;
    }
    at
}

impl Checker<'_> {
    fn error(&mut self, at: impl At, path: impl Into<String>, message: impl Into<String>) {
        let (line, column) = at.at(self.root);
        self.errors.push(Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            path: path.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, at: impl At, path: impl Into<String>, message: impl Into<String>) {
        let (line, column) = at.at(self.root);
        self.warnings.push(Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, text: &Spanned<String>, path: &str) -> Option<GrantDuration> {
        match GrantDuration::parse(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(text, path, e.to_string());
                None
            }
        }
    }

    fn user_ids(&mut self, list: &[Spanned<String>], path: &str) -> Vec<String> {
        let mut users = Vec::new();
        for (i, user) in list.iter().enumerate() {
            if is_user_id(user) {
                users.push(user.to_string());
            } else {
                self.error(
                    user,
                    format!("{path}[{i}]"),
                    format!("`{}` is not a Slack user ID (U… or W…)", user.as_str()),
                );
            }
        }
        users
    }

    /// Group names and user IDs; an unknown name is an error.
    fn principals(
        &mut self,
        list: &[Spanned<String>],
        path: &str,
        groups: &BTreeMap<String, Vec<String>>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            if groups.contains_key(entry.as_str()) || is_user_id(entry) {
                out.push(entry.to_string());
            } else {
                self.error(
                    entry,
                    format!("{path}[{i}]"),
                    format!(
                        "`{}` is neither a defined group nor a Slack user ID",
                        entry.as_str()
                    ),
                );
            }
        }
        out
    }

    fn compile(&mut self, raw: RawPolicy) -> Policy {
        let settings = self.settings(raw.settings);
        if let Some(digest) = &raw.digest {
            self.error(
                digest,
                "digest",
                "the weekly digest is not supported by this version of jitbot yet",
            );
        }
        let groups = self.groups(raw.groups);
        let identities = self.identities(raw.identities);
        let limits = self.provider_limits(&raw.providers);
        let providers = self.providers(raw.providers);
        let mut resources = BTreeMap::new();
        for (name, res) in raw.resources {
            if let Some(resource) = self.resource(&name, res, &settings, &groups, &providers) {
                resources.insert(name.to_string(), resource);
            }
        }
        Policy {
            settings,
            groups,
            identities,
            providers,
            limits,
            resources,
        }
    }

    fn provider_limits(&mut self, raw: &Map<RawProvider>) -> BTreeMap<String, ProviderLimits> {
        let mut out = BTreeMap::new();
        for (name, p) in raw {
            let path = format!("providers.{name}");
            let mut limits = ProviderLimits::default();
            if let Some(c) = &p.concurrency {
                if (1..=MAX_PROVIDER_CONCURRENCY).contains(&**c) {
                    limits.concurrency = **c;
                } else {
                    self.error(
                        c,
                        format!("{path}.concurrency"),
                        format!("concurrency is between 1 and {MAX_PROVIDER_CONCURRENCY}"),
                    );
                }
            }
            if let Some(t) = &p.timeout
                && let Some(d) = self.duration(t, &format!("{path}.timeout"))
            {
                if d.secs() > 300 {
                    self.error(
                        t,
                        format!("{path}.timeout"),
                        "a provider call may take at most 5m; a revoke must not wait longer",
                    );
                } else {
                    limits.timeout = d;
                }
            }
            out.insert(name.to_string(), limits);
        }
        out
    }

    fn settings(&mut self, raw: Option<RawSettings>) -> Settings {
        let mut settings = Settings {
            request_ttl: GrantDuration::from_secs(DEFAULT_REQUEST_TTL_SECS)
                .expect("constant is positive"),
            min_duration: GrantDuration::from_secs(DEFAULT_MIN_DURATION_SECS)
                .expect("constant is positive"),
        };
        let Some(raw) = raw else { return settings };
        if let Some(ttl) = raw
            .request_ttl
            .as_ref()
            .and_then(|t| self.duration(t, "settings.request_ttl"))
        {
            settings.request_ttl = ttl;
        }
        if let Some(min) = raw
            .min_duration
            .as_ref()
            .and_then(|t| self.duration(t, "settings.min_duration"))
        {
            settings.min_duration = min;
        }
        if let Some(tz) = &raw.timezone
            && tz.as_str() != "UTC"
        {
            self.error(
                tz,
                "settings.timezone",
                "only UTC is supported by this version of jitbot",
            );
        }
        settings
    }

    fn groups(&mut self, raw: Map<RawGroup>) -> BTreeMap<String, Vec<String>> {
        let mut groups = BTreeMap::new();
        for (name, group) in raw {
            let path = format!("groups.{name}");
            if looks_like_slack_id(&name) {
                self.error(Key(&["groups", &name]), &path, "a group name must not look like a Slack ID; use a lowercase name such as `dba`");
                continue;
            }
            let kinds = usize::from(group.members.is_some())
                + usize::from(group.rotation.is_some())
                + usize::from(group.pagerduty.is_some());
            if kinds != 1 {
                self.error(
                    Key(&["groups", &name]),
                    &path,
                    "a group has exactly one of `members`, `rotation` or `pagerduty`",
                );
                continue;
            }
            if let Some(pd) = &group.pagerduty {
                self.error(
                    pd,
                    format!("{path}.pagerduty"),
                    "PagerDuty groups are not supported by this version of jitbot yet",
                );
                continue;
            }
            let members = if let Some(members) = &group.members {
                self.user_ids(members, &format!("{path}.members"))
            } else if let Some(rotation) = &group.rotation {
                self.duration(&rotation.shift, &format!("{path}.rotation.shift"));
                if chrono::DateTime::parse_from_rfc3339(&rotation.start).is_err() {
                    self.error(
                        &rotation.start,
                        format!("{path}.rotation.start"),
                        "not an RFC 3339 time such as 2026-01-05T09:00:00Z",
                    );
                }
                self.user_ids(&rotation.members, &format!("{path}.rotation.members"))
            } else {
                Vec::new()
            };
            if members.is_empty() {
                self.error(
                    Key(&["groups", &name]),
                    &path,
                    "a group needs at least one member",
                );
            }
            groups.insert(name.to_string(), members);
        }
        groups
    }

    fn identities(
        &mut self,
        raw: Map<Map<Spanned<String>>>,
    ) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (user, fields) in raw {
            let path = format!("identities.{user}");
            if !is_user_id(&user) {
                self.error(
                    Key(&["identities", &user]),
                    &path,
                    "identities are keyed by Slack user ID (U… or W…)",
                );
                continue;
            }
            let mut known = BTreeMap::new();
            for (key, value) in fields {
                if IDENTITY_KEYS.contains(&key.as_str()) {
                    known.insert(key.to_string(), value.to_string());
                } else {
                    self.error(
                        Key(&["identities", &user, &key]),
                        format!("{path}.{key}"),
                        format!(
                            "unknown identity key; expected one of {}",
                            IDENTITY_KEYS.join(", ")
                        ),
                    );
                }
            }
            out.insert(user.to_string(), known);
        }
        out
    }

    fn providers(&mut self, raw: Map<RawProvider>) -> BTreeMap<String, ProviderConfig> {
        let mut out = BTreeMap::new();
        for (name, p) in raw {
            let path = format!("providers.{name}");
            let kind = p.kind.as_str();
            let config = match kind {
                "postgres" => {
                    self.refuse_fields(
                        &path,
                        kind,
                        [
                            ("url", &p.url),
                            ("secret_env", &p.secret_env),
                            ("region", &p.region),
                            ("endpoint_url", &p.endpoint_url),
                        ],
                    );
                    match &p.url_env {
                        Some(url_env) => Some(ProviderConfig::Postgres {
                            url_env: url_env.to_string(),
                        }),
                        None => {
                            self.error(&p.kind, &path, "a postgres provider needs `url_env`, the name of the variable holding its admin URL");
                            None
                        }
                    }
                }
                "webhook" => {
                    self.refuse_fields(
                        &path,
                        kind,
                        [
                            ("url_env", &p.url_env),
                            ("region", &p.region),
                            ("endpoint_url", &p.endpoint_url),
                        ],
                    );
                    match (&p.url, &p.secret_env) {
                        (Some(url), Some(secret_env)) => {
                            if !(url.starts_with("https://") || url.starts_with("http://")) {
                                self.error(
                                    url,
                                    format!("{path}.url"),
                                    "a webhook URL starts with https:// or http://",
                                );
                            }
                            Some(ProviderConfig::Webhook {
                                url: url.to_string(),
                                secret_env: secret_env.to_string(),
                            })
                        }
                        _ => {
                            self.error(
                                &p.kind,
                                &path,
                                "a webhook provider needs `url` and `secret_env`",
                            );
                            None
                        }
                    }
                }
                k if LATER_PROVIDER_KINDS.contains(&k) => {
                    self.error(
                        &p.kind,
                        format!("{path}.kind"),
                        format!(
                            "provider kind `{k}` is not supported by this version of jitbot yet"
                        ),
                    );
                    None
                }
                k => {
                    self.error(
                        &p.kind,
                        format!("{path}.kind"),
                        format!("unknown provider kind `{k}`; expected postgres or webhook"),
                    );
                    None
                }
            };
            if let Some(config) = config {
                for var in config.env_vars() {
                    if std::env::var_os(var).is_none() {
                        self.warn(Key(&["providers", &name]), &path, format!("environment variable {var} is not set; `jitbot serve` will refuse to start without it"));
                    }
                }
                out.insert(name.to_string(), config);
            }
        }
        out
    }

    fn refuse_fields<const N: usize>(
        &mut self,
        path: &str,
        kind: &str,
        fields: [(&str, &Option<Spanned<String>>); N],
    ) {
        for (key, value) in fields {
            if let Some(value) = value {
                self.error(
                    value,
                    format!("{path}.{key}"),
                    format!("`{key}` does not apply to a {kind} provider"),
                );
            }
        }
    }

    fn resource(
        &mut self,
        name: &str,
        raw: RawResource,
        settings: &Settings,
        groups: &BTreeMap<String, Vec<String>>,
        providers: &BTreeMap<String, ProviderConfig>,
    ) -> Option<Resource> {
        let path = format!("resources.{name}");
        let before = self.errors.len();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace()) {
            self.error(
                Key(&["resources", name]),
                &path,
                "a resource name is one word",
            );
        }
        let provider = providers.get(raw.provider.as_str());
        if provider.is_none() {
            self.error(
                &raw.provider,
                format!("{path}.provider"),
                format!(
                    "provider `{}` is not defined under `providers`",
                    raw.provider.as_str()
                ),
            );
        }
        let grant = raw
            .grant
            .as_ref()
            .map(|g| (**g).clone())
            .unwrap_or_default();
        if let Some(ProviderConfig::Postgres { .. }) = provider {
            let ok = grant.len() == 1
                && grant
                    .get("role")
                    .and_then(|r| r.as_str())
                    .is_some_and(|r| !r.is_empty());
            if !ok {
                match &raw.grant {
                    Some(g) => self.error(
                        g,
                        format!("{path}.grant"),
                        "a postgres grant is `{ role: <role name> }`",
                    ),
                    None => self.error(
                        Key(&["resources", name]),
                        format!("{path}.grant"),
                        "a postgres grant is `{ role: <role name> }`",
                    ),
                }
            }
        }
        let max_duration = self.duration(&raw.max_duration, &format!("{path}.max_duration"));
        let min_duration = match &raw.min_duration {
            Some(d) => self.duration(d, &format!("{path}.min_duration")),
            None => Some(settings.min_duration),
        };
        if let (Some(min), Some(max)) = (min_duration, max_duration)
            && min > max
        {
            self.error(
                &raw.max_duration,
                format!("{path}.max_duration"),
                format!("max_duration {max} is shorter than min_duration {min}"),
            );
        }
        let default_duration = match (&raw.default_duration, max_duration) {
            (Some(d), max) => {
                let d = self.duration(d, &format!("{path}.default_duration"));
                if let (Some(dd), Some(max), Some(text)) = (d, max, &raw.default_duration)
                    && dd > max
                {
                    self.error(
                        text,
                        format!("{path}.default_duration"),
                        "default_duration is longer than max_duration",
                    );
                }
                d
            }
            (None, Some(max)) => GrantDuration::from_secs(FALLBACK_DURATION_SECS.min(max.secs())),
            (None, None) => None,
        };
        if !is_channel_id(&raw.channel) {
            self.error(
                &raw.channel,
                format!("{path}.channel"),
                format!(
                    "`{}` is not a Slack channel ID (C… or G…)",
                    raw.channel.as_str()
                ),
            );
        }
        if raw.approvers.is_empty() {
            self.error(
                &raw.approvers,
                format!("{path}.approvers"),
                "name at least one approver (a group or a user ID)",
            );
        }
        let approvers = self.principals(&raw.approvers, &format!("{path}.approvers"), groups);
        let approvals = raw.approvals.as_ref().map(|a| **a).unwrap_or(1);
        if let Some(a) = &raw.approvals {
            let possible = approvers
                .iter()
                .flat_map(|e| groups.get(e).cloned().unwrap_or_else(|| vec![e.clone()]))
                .collect::<BTreeSet<_>>()
                .len();
            if approvals == 0 {
                self.error(
                    a,
                    format!("{path}.approvals"),
                    "approvals must be at least 1; use auto_approve to grant without a decision",
                );
            } else if approvals as usize > possible && self.errors.len() == before {
                self.error(
                    a,
                    format!("{path}.approvals"),
                    format!("needs {approvals} distinct approvers but only {possible} can approve"),
                );
            }
        }
        let requesters = raw
            .requesters
            .as_ref()
            .map(|r| self.principals(r, &format!("{path}.requesters"), groups));
        if let Some(esc) = &raw.escalation {
            self.error(
                esc,
                format!("{path}.escalation"),
                "escalation is not supported by this version of jitbot yet",
            );
        }
        let mut auto_approve = Vec::new();
        for (i, rule) in raw.auto_approve.iter().flatten().enumerate() {
            let rule_path = format!("{path}.auto_approve[{i}]");
            let requesters =
                self.principals(&rule.requesters, &format!("{rule_path}.requesters"), groups);
            if rule.requesters.is_empty() {
                self.error(
                    &rule.requesters,
                    format!("{rule_path}.requesters"),
                    "an auto_approve rule names who it applies to",
                );
            }
            let rule_max = self.duration(&rule.max_duration, &format!("{rule_path}.max_duration"));
            if let Some(rule_max) = rule_max {
                auto_approve.push(AutoApprove {
                    requesters,
                    max_duration: rule_max,
                });
            }
        }
        if self.errors.len() != before {
            return None;
        }
        Some(Resource {
            name: name.to_string(),
            description: raw.description.unwrap_or_default(),
            provider: raw.provider.to_string(),
            grant,
            min_duration: min_duration?,
            max_duration: max_duration?,
            default_duration: default_duration?,
            channel: raw.channel.to_string(),
            approvers,
            approvals,
            self_approval: raw.self_approval.unwrap_or(false),
            reason_required: raw.reason_required.unwrap_or(false),
            requesters,
            auto_approve,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
settings:
  request_ttl: 2h
  min_duration: 5m
groups:
  dba:
    members: [U0DBA1, U0DBA2]
identities:
  U0ALICE: { postgres: alice, email: alice@example.com }
providers:
  pg-main:
    kind: postgres
    url_env: JIT_PG_ADMIN_URL
resources:
  prod-db:
    provider: pg-main
    grant: { role: prod_rw }
    max_duration: 4h
    channel: C0REVIEW
    approvers: [dba]
    requesters: [U0ALICE, dba]
    auto_approve:
      - requesters: [U0DBA1]
        max_duration: 30m
"#;

    fn errors(text: &str) -> Vec<Diagnostic> {
        Policy::parse("p.yaml", text)
            .expect_err("policy should be refused")
            .0
    }

    #[test]
    fn a_good_policy_compiles() {
        let (policy, _) = Policy::parse("p.yaml", GOOD).unwrap();
        let db = &policy.resources["prod-db"];
        assert!(policy.is_approver(db, "U0DBA2"));
        assert!(!policy.is_approver(db, "U0ALICE"));
        assert!(policy.may_request(db, "U0ALICE"));
        assert!(!policy.may_request(db, "U0MALLORY"));
        assert_eq!(db.default_duration.secs(), 3600);
        assert!(policy.auto_approves(db, "U0DBA1", GrantDuration::parse("30m").unwrap()));
        assert!(!policy.auto_approves(db, "U0DBA1", GrantDuration::parse("31m").unwrap()));
        assert_eq!(policy.suggest("prod_db"), Some("prod-db"));
        assert_eq!(policy.suggest("staging"), None);
    }

    #[test]
    fn an_unknown_key_names_line_and_column() {
        let text = GOOD.replace("    max_duration: 4h", "    max_duraton: 4h");
        let errs = errors(&text);
        assert_eq!((errs[0].line, errs[0].column), (18, 5), "{errs:?}");
        assert!(errs[0].message.contains("max_duraton"), "{}", errs[0]);
    }

    #[test]
    fn a_type_error_names_its_line() {
        let text = GOOD.replace("self_approval", "x").replace(
            "    channel: C0REVIEW",
            "    channel: C0REVIEW\n    approvals: many",
        );
        let errs = errors(&text);
        assert_eq!(errs[0].line, 20, "{errs:?}");
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let errs = errors("resources:\n  a: [unclosed\n");
        assert!(errs[0].line >= 2, "{errs:?}");
        assert!(errs[0].message.starts_with("syntax error"));
    }

    #[test]
    fn semantic_errors_name_the_key_path_and_line() {
        let text = GOOD.replace("approvers: [dba]", "approvers: [dbas]");
        let errs = errors(&text);
        assert_eq!(errs[0].path, "resources.prod-db.approvers[0]");
        assert_eq!(errs[0].line, 20);
        let text = GOOD.replace("channel: C0REVIEW", "channel: '#review'");
        assert_eq!(errors(&text)[0].path, "resources.prod-db.channel");
    }

    #[test]
    fn later_provider_kinds_are_refused_by_name_and_line() {
        let text = GOOD.replace(
            "kind: postgres\n    url_env: JIT_PG_ADMIN_URL",
            "kind: aws_iam\n    region: us-east-1",
        );
        let errs = errors(&text);
        let e = errs
            .iter()
            .find(|e| e.path == "providers.pg-main.kind")
            .expect("kind error");
        assert!(
            e.message.contains("aws_iam") && e.message.contains("not supported"),
            "{e}"
        );
        assert_eq!(e.line, 12);
    }

    #[test]
    fn group_names_must_not_look_like_ids() {
        let text = GOOD.replace("  dba:\n", "  U0TEAM:\n");
        assert!(errors(&text).iter().any(|e| e.path == "groups.U0TEAM"));
    }

    #[test]
    fn the_shipped_example_policy_passes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifest/policy.yaml");
        if let Err(e) = Policy::load(&path) {
            panic!("manifest/policy.yaml: {e}");
        }
    }
}
