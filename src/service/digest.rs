//! The weekly digest's figures, read from the store for one period.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Service, ms, secs};
use crate::domain::State;
use crate::slack::blocks::BREAK_GLASS;
use crate::slack::digest::{Digest, MAX_PROBLEMS, TOP};
use crate::store::Store;

/// Most rows of one state the digest reads for its "still failing" lines.
const FAILING_LIMIT: u64 = 1_000;

/// The `q`-quantile (0..=1) of sorted values, nearest rank.
fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn top(counts: BTreeMap<String, usize>) -> Vec<(String, usize)> {
    let mut list: Vec<(String, usize)> = counts.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    list.truncate(TOP);
    list
}

impl Service {
    /// `/jit digest`: the current period's digest, for `settings.admins`.
    pub(super) async fn digest_for(
        &self,
        user: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<String, String>> {
        let policy = self.policy.now();
        if !policy.is_admin(user) {
            return Ok(Err(
                "`/jit digest` is for the jitbot admins (`settings.admins` in the policy).".into(),
            ));
        }
        let Some((from, to)) = policy.digest.as_ref().and_then(|d| d.period(now)) else {
            return Ok(Err(
                "The policy has no `digest:` (channel and schedule); add one to get the weekly digest."
                    .into(),
            ));
        };
        let digest = self.digest(from, now.min(to), now).await?;
        Ok(Ok(crate::slack::digest::digest_text(&digest)))
    }

    /// The digest of `[from, to)`, as the store stands at `now`.
    pub async fn digest(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Digest> {
        gather(&self.store, from, to, now).await
    }
}

/// The digest of `[from, to)`, as `store` stands at `now` (for `serve`'s posting job, `/jit
/// digest` and `jitbot digest --dry-run`).
pub async fn gather(
    store: &Store,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<Digest> {
    {
        let (from_ms, to_ms) = (ms(from), ms(to));
        let rows = store.requests_created_between(from_ms, to_ms).await?;
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut resources: BTreeMap<String, usize> = BTreeMap::new();
        let mut requesters: BTreeMap<String, usize> = BTreeMap::new();
        let mut waits: Vec<i64> = Vec::new();
        let mut digest = Digest {
            from: Some(from),
            to: Some(to),
            requests: rows.len(),
            ..Digest::default()
        };
        for (r, grant) in &rows {
            *outcomes.entry(r.state.clone()).or_default() += 1;
            *resources.entry(r.resource.clone()).or_default() += 1;
            *requesters.entry(r.requester.clone()).or_default() += 1;
            let state = State::parse(&r.state);
            let decided_by_people = !r.auto_approved
                && r.extends.is_none()
                && r.bundle_of.is_none()
                && !matches!(
                    state,
                    None | Some(State::Pending | State::Cancelled | State::TimedOut)
                );
            if decided_by_people && let Some(at) = r.decided_at {
                waits.push((at - r.created_at).max(0));
            }
            if r.auto_approved && r.bundle_of.is_none() {
                digest.auto_approved += 1;
            }
            if r.decision_note.as_deref() == Some(BREAK_GLASS) {
                digest
                    .break_glass
                    .push((r.id, r.requester.clone(), r.resource.clone()));
            } else if grant
                .as_ref()
                .and_then(|g| g.approved_by.as_deref())
                .is_some_and(|by| by.split(',').any(|a| a == r.requester))
            {
                digest.self_approved += 1;
            }
            if state == Some(State::GrantFailed) {
                let why = grant
                    .as_ref()
                    .and_then(|g| g.last_error.clone())
                    .unwrap_or_else(|| "no error recorded".into());
                digest.problems.push(format!(
                    "#{} *{}*: the grant failed ({})",
                    r.id,
                    r.resource,
                    crate::slack::blocks::cut(&crate::slack::blocks::escape(&why), 200)
                ));
            }
        }
        // Revokes still failing now, whenever they were asked for: access left in place.
        for (r, grant) in store
            .in_state_with_grants(State::RevokeFailed, FAILING_LIMIT)
            .await?
        {
            let why = grant
                .and_then(|g| g.last_error)
                .unwrap_or_else(|| "no error recorded".into());
            digest.problems.insert(
                0,
                format!(
                    "#{} *{}*: removing access is failing and being retried ({})",
                    r.id,
                    r.resource,
                    crate::slack::blocks::cut(&crate::slack::blocks::escape(&why), 200)
                ),
            );
        }
        for event in store.audit_between("slack_failed", from_ms, to_ms).await? {
            if digest.problems.len() > MAX_PROBLEMS * 4 {
                break;
            }
            let detail: serde_json::Value = serde_json::from_str(&event.detail).unwrap_or_default();
            digest.problems.push(format!(
                "a Slack message{} was refused for good: `{}` ({})",
                event
                    .request_id
                    .map(|id| format!(" about #{id}"))
                    .unwrap_or_default(),
                detail["error"].as_str().unwrap_or("?"),
                detail["job"].as_str().unwrap_or("message")
            ));
        }
        // Escalations of the period, and who answered them.
        let mut paged: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        for event in store.audit_between("escalated", from_ms, to_ms).await? {
            let detail: serde_json::Value = serde_json::from_str(&event.detail).unwrap_or_default();
            if let Some(id) = event.request_id {
                let people = paged.entry(id).or_default();
                for p in detail["paged"].as_array().into_iter().flatten() {
                    if let Some(p) = p.as_str()
                        && !people.iter().any(|q| q == p)
                    {
                        people.push(p.to_string());
                    }
                }
            }
        }
        for (id, people) in paged {
            let answer = match rows.iter().find(|(r, _)| r.id == id) {
                Some((r, _)) => match (State::parse(&r.state), r.decided_by.as_deref()) {
                    (Some(State::Pending), _) => "still waiting".to_string(),
                    (Some(State::TimedOut), _) => "nobody answered (timed out)".to_string(),
                    (_, Some(by)) if !by.is_empty() => format!(
                        "{} by {}",
                        r.state.replace('_', " "),
                        by.split(',')
                            .map(crate::slack::blocks::mention)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    _ => r.state.replace('_', " "),
                },
                None => "asked for before this period".to_string(),
            };
            digest.escalations.push((id, people, answer));
        }
        waits.sort_unstable();
        let human = |ms: i64| secs((ms / 1000).max(1));
        digest.decision_median = quantile(&waits, 0.5).map(human);
        digest.decision_p95 = quantile(&waits, 0.95).map(human);
        let mut outcomes: Vec<(String, usize)> = outcomes.into_iter().collect();
        outcomes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        digest.outcomes = outcomes;
        digest.top_resources = top(resources);
        digest.top_requesters = top(requesters);
        digest.active_now = store.count_in_state(State::Active).await? as usize;
        match store.verify_audit().await {
            Ok(report) => match &report.broken {
                None => {
                    digest.chain_ok = true;
                    digest.chain = format!(
                        "Audit chain verified at {}: {} links, head `{}`",
                        crate::slack::blocks::when(now),
                        report.sealed,
                        report.head_hash.chars().take(16).collect::<String>()
                    );
                }
                Some(broken) => {
                    digest.chain = format!("The audit chain is BROKEN: {broken}");
                }
            },
            Err(e) => digest.chain = format!("The audit chain could not be checked: {e:#}"),
        }
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=20).collect();
        assert_eq!(quantile(&v, 0.5), Some(10));
        assert_eq!(quantile(&v, 0.95), Some(19));
        assert_eq!(quantile(&[7], 0.95), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
