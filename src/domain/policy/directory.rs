//! What the policy names but only Slack and PagerDuty know: the members of Slack user groups
//! (`S…`, the `@dba-team` people already keep up to date) and who a PagerDuty schedule has on
//! call. `crate::directory` fetches them; the policy reads the last answers here without waiting,
//! so a decision never blocks on Slack or PagerDuty.
//!
//! An answer older than [`STALE_AFTER`] is not used: a user group nobody could read for that long
//! names nobody (a person removed from it must not keep approving), and a PagerDuty group falls
//! back to its `members`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use marked_yaml::Spanned;
use serde::Deserialize;

use super::check::Checker;

/// How long an answer may be used when no newer one could be had.
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
/// PagerDuty's REST API, unless a group names another (`api_url`).
pub const PAGERDUTY_API: &str = "https://api.pagerduty.com";

/// A `pagerduty` group: its schedule, where its token is, and who of it approves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagerDutyGroup {
    pub schedule_id: String,
    /// The environment variable holding the REST API token (never the token).
    pub token_env: String,
    pub api_url: String,
    /// `approve: members`: every member may approve, not only the one on call.
    pub everyone_approves: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPagerDuty {
    pub(super) schedule_id: Spanned<String>,
    pub(super) token_env: Spanned<String>,
    pub(super) api_url: Option<Spanned<String>>,
}

/// Who PagerDuty says is on call for a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnCall {
    /// The Slack user on call now.
    Person(String),
    /// PagerDuty could not say (unreachable, refused, nobody on call, no Slack account for the
    /// email): the group's `members` stand in, and this says why.
    Fallback(String),
}

#[derive(Debug)]
struct Answer<T> {
    value: T,
    at: Instant,
}

/// The last answers of Slack (user groups) and PagerDuty (who is on call), shared by every
/// policy version so a reload keeps them.
#[derive(Debug, Default)]
pub struct Lookups {
    usergroups: RwLock<HashMap<String, Answer<Vec<String>>>>,
    on_call: RwLock<HashMap<String, Answer<OnCall>>>,
}

impl Lookups {
    /// The members of user group `id`, if Slack answered recently enough.
    pub fn usergroup(&self, id: &str) -> Option<Vec<String>> {
        let groups = self.usergroups.read().unwrap_or_else(|e| e.into_inner());
        groups
            .get(id)
            .filter(|a| a.at.elapsed() < STALE_AFTER)
            .map(|a| a.value.clone())
    }

    /// Is `user` in user group `id`, as far as a recent answer says?
    pub fn in_usergroup(&self, id: &str, user: &str) -> bool {
        let groups = self.usergroups.read().unwrap_or_else(|e| e.into_inner());
        groups
            .get(id)
            .is_some_and(|a| a.at.elapsed() < STALE_AFTER && a.value.iter().any(|m| m == user))
    }

    /// How old the last answer for user group `id` is.
    pub fn usergroup_age(&self, id: &str) -> Option<Duration> {
        let groups = self.usergroups.read().unwrap_or_else(|e| e.into_inner());
        groups.get(id).map(|a| a.at.elapsed())
    }

    pub fn set_usergroup(&self, id: &str, members: Vec<String>) {
        let mut groups = self.usergroups.write().unwrap_or_else(|e| e.into_inner());
        groups.insert(
            id.to_string(),
            Answer {
                value: members,
                at: Instant::now(),
            },
        );
    }

    /// Who PagerDuty said is on call for `group`, if it said so recently enough.
    pub fn on_call(&self, group: &str) -> Option<OnCall> {
        let answers = self.on_call.read().unwrap_or_else(|e| e.into_inner());
        answers
            .get(group)
            .filter(|a| a.at.elapsed() < STALE_AFTER)
            .map(|a| a.value.clone())
    }

    pub fn on_call_age(&self, group: &str) -> Option<Duration> {
        let answers = self.on_call.read().unwrap_or_else(|e| e.into_inner());
        answers.get(group).map(|a| a.at.elapsed())
    }

    pub fn set_on_call(&self, group: &str, answer: OnCall) {
        let mut answers = self.on_call.write().unwrap_or_else(|e| e.into_inner());
        answers.insert(
            group.to_string(),
            Answer {
                value: answer,
                at: Instant::now(),
            },
        );
    }
}

/// `S…` followed by capitals and digits: a Slack user group.
pub fn is_usergroup_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next() == Some('S')
        && s.len() >= 3
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

impl Checker<'_> {
    /// A `pagerduty:` block: a schedule ID, the variable holding the token (unset is a warning
    /// here and an error in `serve`), and an https base URL (http only on this machine's
    /// loopback, for a test double).
    pub(super) fn pagerduty(
        &mut self,
        raw: &RawPagerDuty,
        path: &str,
        everyone_approves: bool,
    ) -> Option<PagerDutyGroup> {
        let mut ok = true;
        let schedule = raw.schedule_id.as_str();
        if schedule.is_empty() || !schedule.chars().all(|c| c.is_ascii_alphanumeric()) {
            self.error(
                &raw.schedule_id,
                format!("{path}.pagerduty.schedule_id"),
                "a PagerDuty schedule ID such as PABC123 (in the schedule's URL)",
            );
            ok = false;
        }
        let var = raw.token_env.as_str();
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            self.error(
                &raw.token_env,
                format!("{path}.pagerduty.token_env"),
                "the name of the environment variable holding the token, such as PAGERDUTY_TOKEN",
            );
            ok = false;
        } else if std::env::var_os(var).is_none()
            && std::env::var_os(format!("{var}_FILE")).is_none()
        {
            self.warn(
                &raw.token_env,
                format!("{path}.pagerduty.token_env"),
                format!(
                    "environment variable {var} is not set; `jitbot serve` will refuse to start without it"
                ),
            );
        }
        let api_url = match &raw.api_url {
            None => PAGERDUTY_API.to_string(),
            Some(url) => match reqwest::Url::parse(url.as_str()) {
                Ok(u)
                    if u.scheme() == "https"
                        || (u.scheme() == "http"
                            && matches!(
                                u.host_str(),
                                Some("127.0.0.1" | "localhost" | "[::1]")
                            )) =>
                {
                    url.as_str().trim_end_matches('/').to_string()
                }
                _ => {
                    self.error(
                        url,
                        format!("{path}.pagerduty.api_url"),
                        "an https URL such as https://api.pagerduty.com (plain http only to 127.0.0.1)",
                    );
                    ok = false;
                    String::new()
                }
            },
        };
        ok.then(|| PagerDutyGroup {
            schedule_id: schedule.to_string(),
            token_env: var.to_string(),
            api_url,
            everyone_approves,
        })
    }
}
