//! Who is on call, and the escalation ladder. A `rotation` group hands the pager from member to
//! member every `shift` from `start`; by default only the person on call now may approve for it
//! (`approve: members` lets every member). A resource's `escalation` pages, step by step, whoever
//! each step names (for an on-call group: the person on call at that moment), and `remind` nudges
//! its approvers once before.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::check::{Checker, Key};
use super::{GrantDuration, Policy, is_user_id};

/// A `rotation` group.
#[derive(Clone, Debug)]
pub struct Rotation {
    pub members: Vec<String>,
    pub shift: GrantDuration,
    pub start: DateTime<Utc>,
    /// `settings.timezone`: shifts hand over at the same wall-clock time across daylight saving.
    pub tz: chrono_tz::Tz,
    /// `approve: members`: every member may approve, not only the one on call.
    pub everyone_approves: bool,
}

impl Rotation {
    /// The member on call at `now` (before `start`, the first). Time is counted on the wall
    /// clock of `settings.timezone`, so a weekly 09:00 handover stays at 09:00 after a clock change.
    pub fn on_call(&self, now: DateTime<Utc>) -> &str {
        let shift = self.shift.secs().max(1) as i64;
        let wall = |t: DateTime<Utc>| t.with_timezone(&self.tz).naive_local();
        let shifts = (wall(now) - wall(self.start)).num_seconds().max(0) / shift;
        let len = self.members.len().max(1) as i64;
        self.members
            .get(shifts.rem_euclid(len) as usize)
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// A rotation's `start`: RFC 3339 with an offset, or a wall-clock time (`2026-01-05T09:00`,
/// seconds optional, `T` or a space) in `tz`. A time the clock skips is moved past the gap, one
/// it shows twice is the earlier.
pub(super) fn parse_start(text: &str, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    use chrono::{NaiveDateTime, TimeZone};
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    let naive = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())?;
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            Some(t.with_timezone(&Utc))
        }
        chrono::LocalResult::None => tz
            .from_local_datetime(&(naive + chrono::TimeDelta::hours(1)))
            .earliest()
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// One step of a resource's escalation ladder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// How long after the request it pages.
    pub after: GrantDuration,
    /// A group name or a user ID.
    pub to: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawEscalation {
    Many(Vec<RawStep>),
    One(RawStep),
}

/// Plain strings: an untagged enum loses the parser's marks, so errors point at the
/// `escalation` key's line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) after: String,
    pub(super) to: String,
}

impl Policy {
    /// Is `user` named by these approver entries at `now`? An on-call group names only the
    /// person on call, unless it says `approve: members` (or PagerDuty cannot say who: then its
    /// members).
    pub fn approves(&self, entries: &[String], user: &str, now: DateTime<Utc>) -> bool {
        entries
            .iter()
            .any(|entry| match self.on_call_now(entry, now) {
                Some(person) => person == user,
                None => self.names(std::slice::from_ref(entry), user),
            })
    }

    /// The one person an on-call group that approves alone has on call at `now`; `None` for
    /// any other entry, for `approve: members`, and for a PagerDuty group falling back to its
    /// members.
    fn on_call_now(&self, entry: &str, now: DateTime<Utc>) -> Option<String> {
        if let Some(r) = self.rotations.get(entry) {
            return (!r.everyone_approves).then(|| r.on_call(now).to_string());
        }
        let pd = self.pagerduty.get(entry)?;
        match self.lookups.on_call(entry) {
            Some(super::OnCall::Person(p)) if !pd.everyone_approves => Some(p),
            _ => None,
        }
    }

    /// Is `name` a group with someone on call (a rotation or a PagerDuty schedule)?
    pub fn is_on_call_group(&self, name: &str) -> bool {
        self.rotations.contains_key(name) || self.pagerduty.contains_key(name)
    }

    /// Who a step to `to` pages at `now`: the person on call for an on-call group (a PagerDuty
    /// group's members when PagerDuty cannot say), every member of another group, or the user
    /// (or the members of the Slack user group) it names.
    pub fn paged(&self, to: &str, now: DateTime<Utc>) -> Vec<String> {
        if let Some(r) = self.rotations.get(to) {
            return vec![r.on_call(now).to_string()];
        }
        if self.pagerduty.contains_key(to)
            && let Some(super::OnCall::Person(p)) = self.lookups.on_call(to)
        {
            return vec![p];
        }
        self.expand(&[to.to_string()]).into_iter().collect()
    }

    /// Why a PagerDuty group's members stand in for the person on call, if they do.
    pub fn on_call_fallback(&self, to: &str) -> Option<String> {
        self.pagerduty.get(to)?;
        match self.lookups.on_call(to) {
            Some(super::OnCall::Person(_)) => None,
            Some(super::OnCall::Fallback(why)) => Some(why),
            None => Some("PagerDuty has not answered recently".into()),
        }
    }

    /// The people who may approve with these entries at `now`: for an on-call group that
    /// approves alone, the person on call; everyone else the entries name.
    pub fn approvers_now(
        &self,
        entries: &[String],
        now: DateTime<Utc>,
    ) -> std::collections::BTreeSet<String> {
        let mut people = std::collections::BTreeSet::new();
        for entry in entries {
            match self.on_call_now(entry, now) {
                Some(person) => {
                    people.insert(person);
                }
                None => people.extend(self.expand(std::slice::from_ref(entry))),
            }
        }
        people
    }
}

impl Checker<'_> {
    /// A resource's ladder: each step to a defined group or a user ID, before the request times out.
    pub(super) fn escalation(
        &mut self,
        raw: Option<&RawEscalation>,
        name: &str,
        path: &str,
        groups: &std::collections::BTreeMap<String, Vec<String>>,
        request_ttl: GrantDuration,
    ) -> Vec<Step> {
        let steps: Vec<&RawStep> = match raw {
            None => return Vec::new(),
            Some(RawEscalation::One(step)) => vec![step],
            Some(RawEscalation::Many(steps)) => steps.iter().collect(),
        };
        let mut out = Vec::new();
        let key = ["resources", name, "escalation"];
        for (i, step) in steps.into_iter().enumerate() {
            let at = format!("{path}.escalation[{i}]");
            let after = match GrantDuration::parse(&step.after) {
                Ok(d) => d,
                Err(e) => {
                    self.error(Key(&key), format!("{at}.after"), e.to_string());
                    continue;
                }
            };
            if after >= request_ttl {
                self.error(
                    Key(&key),
                    format!("{at}.after"),
                    format!(
                        "{after} is not before the request times out (settings.request_ttl {request_ttl}): this step would never page"
                    ),
                );
                continue;
            }
            let to = step.to.as_str();
            if !groups.contains_key(to) && !is_user_id(to) && !super::is_usergroup_id(to) {
                self.error(
                    Key(&key),
                    format!("{at}.to"),
                    format!("`{to}` is neither a defined group nor a Slack user ID"),
                );
                continue;
            }
            if out.last().is_some_and(|prev: &Step| prev.after >= after) {
                self.warn(
                    Key(&key),
                    format!("{at}.after"),
                    "steps page in the order of `after`; this one is not later than the one before",
                );
            }
            out.push(Step {
                after,
                to: to.to_string(),
            });
        }
        out
    }
}
