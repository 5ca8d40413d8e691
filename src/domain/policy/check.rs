//! The policy file as written, and the checks that compile it into a [`Policy`]: every error
//! and warning names the file, line and column.

use std::collections::BTreeMap;

use marked_yaml::Spanned;
use serde::Deserialize;

use super::*;

pub(super) fn load_error(file: &str, error: marked_yaml::LoadError) -> Diagnostic {
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

// ---------------------------------------------------------------------------------------------
// The file as written.

pub(super) type Map<V> = BTreeMap<String, V>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(default)]
    pub(super) settings: Option<RawSettings>,
    pub(super) digest: Option<super::digest::RawDigest>,
    #[serde(default)]
    pub(super) groups: Map<RawGroup>,
    #[serde(default)]
    pub(super) identities: Map<Map<Spanned<String>>>,
    #[serde(default)]
    pub(super) providers: Map<RawProvider>,
    #[serde(default)]
    pub(super) resources: Map<RawResource>,
    #[serde(default)]
    pub(super) clients: Map<super::clients::RawClient>,
    #[serde(default)]
    pub(super) bundles: Map<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSettings {
    pub(super) request_ttl: Option<Spanned<String>>,
    pub(super) min_duration: Option<Spanned<String>>,
    pub(super) timezone: Option<Spanned<String>>,
    pub(super) grant_deadline: Option<Spanned<String>>,
    pub(super) admins: Option<Vec<Spanned<String>>>,
    pub(super) max_open_per_user: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    pub(super) members: Option<Vec<Spanned<String>>>,
    pub(super) rotation: Option<RawRotation>,
    pub(super) pagerduty: Option<super::directory::RawPagerDuty>,
    /// `on_call` (default) or `members`: who of an on-call group may approve.
    pub(super) approve: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRotation {
    pub(super) members: Vec<Spanned<String>>,
    pub(super) shift: Spanned<String>,
    pub(super) start: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) kind: Spanned<String>,
    pub(super) url_env: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) secret_env: Option<Spanned<String>>,
    pub(super) region: Option<Spanned<String>>,
    pub(super) endpoint_url: Option<Spanned<String>>,
    pub(super) kubeconfig_env: Option<Spanned<String>>,
    pub(super) instance_arn: Option<Spanned<String>>,
    pub(super) identity_store_id: Option<Spanned<String>>,
    pub(super) credentials_env: Option<Spanned<String>>,
    pub(super) concurrency: Option<Spanned<u32>>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResource {
    pub(super) description: Option<String>,
    pub(super) provider: Spanned<String>,
    pub(super) grant: Option<Spanned<serde_json::Map<String, serde_json::Value>>>,
    pub(super) min_duration: Option<Spanned<String>>,
    pub(super) max_duration: Spanned<String>,
    pub(super) default_duration: Option<Spanned<String>>,
    pub(super) channel: Spanned<String>,
    pub(super) approvers: Spanned<Vec<Spanned<String>>>,
    pub(super) approvals: Option<Spanned<u32>>,
    pub(super) self_approval: Option<bool>,
    pub(super) break_glass: Option<bool>,
    pub(super) reason_required: Option<bool>,
    pub(super) reason_pattern: Option<Spanned<String>>,
    pub(super) requesters: Option<Vec<Spanned<String>>>,
    pub(super) escalation: Option<super::oncall::RawEscalation>,
    pub(super) remind: Option<Spanned<String>>,
    pub(super) auto_approve: Option<Vec<RawAutoApprove>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAutoApprove {
    pub(super) requesters: Spanned<Vec<Spanned<String>>>,
    pub(super) max_duration: Spanned<String>,
}

pub(super) struct Checker<'a> {
    pub(super) root: &'a marked_yaml::Node,
    pub(super) file: &'a str,
    pub(super) errors: Vec<Diagnostic>,
    pub(super) warnings: Vec<Diagnostic>,
    /// Names of the API clients, once `clients` is checked: requesters may name them.
    pub(super) client_names: std::collections::BTreeSet<String>,
    /// The rotation groups, once `groups` is checked.
    pub(super) rotations: BTreeMap<String, super::Rotation>,
    pub(super) pagerduty_groups: BTreeMap<String, super::PagerDutyGroup>,
}

/// Something with a place in the file: a spanned value, or a key given by its path.
pub(super) trait At {
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
pub(super) struct Key<'a>(pub(super) &'a [&'a str]);

impl At for Key<'_> {
    fn at(&self, root: &marked_yaml::Node) -> (usize, usize) {
        key_pos(root, self.0)
    }
}

/// Where a key sits in the file, looked up by its path from the top.
pub(super) fn key_pos(root: &marked_yaml::Node, path: &[&str]) -> (usize, usize) {
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
    pub(super) fn error(
        &mut self,
        at: impl At,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = at.at(self.root);
        self.errors.push(Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn warn(
        &mut self,
        at: impl At,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        let (line, column) = at.at(self.root);
        self.warnings.push(Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn duration(&mut self, text: &Spanned<String>, path: &str) -> Option<GrantDuration> {
        match GrantDuration::parse(text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(text, path, e.to_string());
                None
            }
        }
    }

    pub(super) fn user_ids(&mut self, list: &[Spanned<String>], path: &str) -> Vec<String> {
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

    /// A plain group's members: user IDs and Slack user groups (`S…`).
    pub(super) fn members(&mut self, list: &[Spanned<String>], path: &str) -> Vec<String> {
        let mut users = Vec::new();
        for (i, user) in list.iter().enumerate() {
            if is_user_id(user) || super::is_usergroup_id(user) {
                users.push(user.to_string());
            } else {
                self.error(
                    user,
                    format!("{path}[{i}]"),
                    format!(
                        "`{}` is not a Slack user ID (U… or W…) or user group ID (S…)",
                        user.as_str()
                    ),
                );
            }
        }
        users
    }

    /// Group names, user IDs and Slack user groups (`S…`); an unknown name is an error.
    pub(super) fn principals(
        &mut self,
        list: &[Spanned<String>],
        path: &str,
        groups: &BTreeMap<String, Vec<String>>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            if groups.contains_key(entry.as_str())
                || is_user_id(entry)
                || super::is_usergroup_id(entry)
            {
                out.push(entry.to_string());
            } else if self.client_names.contains(entry.as_str()) {
                self.error(
                    entry,
                    format!("{path}[{i}]"),
                    format!(
                        "`{}` is an API client: clients may request, never approve or administer",
                        entry.as_str()
                    ),
                );
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

    /// Who may ask: group names, user IDs and API clients; an unknown name is an error.
    pub(super) fn requesters(
        &mut self,
        list: &[Spanned<String>],
        path: &str,
        groups: &BTreeMap<String, Vec<String>>,
    ) -> Vec<String> {
        let (clients, people): (Vec<_>, Vec<_>) = list
            .iter()
            .cloned()
            .partition(|entry| self.client_names.contains(entry.as_str()));
        let mut out = self.principals(&people, path, groups);
        out.extend(clients.iter().map(|c| c.to_string()));
        out
    }

    pub(super) fn compile(&mut self, raw: RawPolicy) -> Policy {
        let admins = raw
            .settings
            .as_ref()
            .and_then(|s| s.admins.clone())
            .unwrap_or_default();
        let mut settings = self.settings(raw.settings);
        let groups = self.groups(raw.groups, settings.timezone);
        let clients = self.clients(raw.clients, &groups);
        settings.admins = self.principals(&admins, "settings.admins", &groups);
        let identities = self.identities(raw.identities);
        let limits = self.provider_limits(&raw.providers);
        let providers = self.providers(raw.providers);
        let mut resources = BTreeMap::new();
        for (name, res) in raw.resources {
            if let Some(resource) = self.resource(&name, res, &settings, &groups, &providers) {
                resources.insert(name.to_string(), resource);
            }
        }
        self.same_access_twice(&resources);
        let bundles = self.bundles(raw.bundles, &resources);
        let digest = raw.digest.and_then(|d| self.digest(d, settings.timezone));
        Policy {
            settings,
            groups,
            identities,
            providers,
            limits,
            resources,
            clients,
            bundles,
            families: BTreeMap::new(),
            digest,
            rotations: std::mem::take(&mut self.rotations),
            pagerduty: std::mem::take(&mut self.pagerduty_groups),
            lookups: Default::default(),
        }
    }

    pub(super) fn settings(&mut self, raw: Option<RawSettings>) -> Settings {
        let mut settings = Settings {
            request_ttl: GrantDuration::from_secs(DEFAULT_REQUEST_TTL_SECS)
                .expect("constant is positive"),
            min_duration: GrantDuration::from_secs(DEFAULT_MIN_DURATION_SECS)
                .expect("constant is positive"),
            grant_deadline: GrantDuration::from_secs(DEFAULT_GRANT_DEADLINE_SECS)
                .expect("constant is positive"),
            admins: Vec::new(),
            max_open_per_user: DEFAULT_MAX_OPEN_PER_USER,
            timezone: chrono_tz::UTC,
        };
        let Some(raw) = raw else { return settings };
        if let Some(deadline) = raw
            .grant_deadline
            .as_ref()
            .and_then(|t| self.duration(t, "settings.grant_deadline"))
        {
            settings.grant_deadline = deadline;
        }
        if let Some(max) = &raw.max_open_per_user {
            if **max == 0 {
                self.error(
                    max,
                    "settings.max_open_per_user",
                    "must be at least 1 (nobody could ask for anything)",
                );
            } else {
                settings.max_open_per_user = **max;
            }
        }
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
        if let Some(tz) = &raw.timezone {
            match tz.as_str().parse::<chrono_tz::Tz>() {
                Ok(zone) => settings.timezone = zone,
                Err(_) => {
                    let hint = super::Policy::closest(
                        tz.as_str(),
                        chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()),
                    )
                    .map(|z| format!(" Did you mean `{z}`?"))
                    .unwrap_or_default();
                    self.error(
                        tz,
                        "settings.timezone",
                        format!(
                            "`{}` is not an IANA time zone name such as Europe/Berlin or UTC.{hint}",
                            tz.as_str()
                        ),
                    );
                }
            }
        }
        settings
    }

    pub(super) fn groups(
        &mut self,
        raw: Map<RawGroup>,
        tz: chrono_tz::Tz,
    ) -> BTreeMap<String, Vec<String>> {
        let mut groups = BTreeMap::new();
        for (name, group) in raw {
            let path = format!("groups.{name}");
            if looks_like_slack_id(&name) {
                self.error(Key(&["groups", &name]), &path, "a group name must not look like a Slack ID; use a lowercase name such as `dba`");
                continue;
            }
            if group.rotation.is_some() && (group.members.is_some() || group.pagerduty.is_some())
                || group.members.is_none() && group.rotation.is_none()
            {
                self.error(
                    Key(&["groups", &name]),
                    &path,
                    "a group has `members`, a `rotation`, or `pagerduty` with `members` to fall back on",
                );
                continue;
            }
            let everyone_approves = match group.approve.as_ref().map(|a| a.as_str()) {
                None | Some("on_call") => false,
                Some("members") => true,
                Some(_) => {
                    if let Some(a) = &group.approve {
                        self.error(
                            a,
                            format!("{path}.approve"),
                            "`on_call` (only the person on call approves) or `members`",
                        );
                    }
                    false
                }
            };
            if let (Some(a), None, None) = (&group.approve, &group.rotation, &group.pagerduty) {
                self.error(
                    a,
                    format!("{path}.approve"),
                    "`approve` is for on-call groups (`rotation` or `pagerduty`); every member of this group approves",
                );
            }
            if let Some(pd) = &group.pagerduty
                && let Some(config) = self.pagerduty(pd, &path, everyone_approves)
            {
                self.pagerduty_groups.insert(name.to_string(), config);
            }
            let members = if let Some(members) = &group.members {
                self.members(members, &format!("{path}.members"))
            } else if let Some(rotation) = &group.rotation {
                let shift = self.duration(&rotation.shift, &format!("{path}.rotation.shift"));
                let start = super::oncall::parse_start(&rotation.start, tz);
                if start.is_none() {
                    self.error(
                        &rotation.start,
                        format!("{path}.rotation.start"),
                        format!("not a time such as 2026-01-05T09:00 (in settings.timezone, {tz}) or 2026-01-05T09:00:00Z"),
                    );
                }
                let members = self.user_ids(&rotation.members, &format!("{path}.rotation.members"));
                if let (Some(shift), Some(start)) = (shift, start)
                    && !members.is_empty()
                {
                    self.rotations.insert(
                        name.to_string(),
                        super::Rotation {
                            members: members.clone(),
                            shift,
                            start,
                            tz,
                            everyone_approves,
                        },
                    );
                }
                members
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
}
