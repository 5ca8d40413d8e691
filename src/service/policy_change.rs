//! When the policy changes (at start, and at each reload), requests still waiting for a decision
//! are held to the policy in force now: a request whose resource left the policy, whose
//! requester may no longer ask, or whose duration is now out of bounds ends `cancelled`
//! ("policy changed"), with its card updated and its requester told.

use chrono::{DateTime, Utc};
use serde_json::json;

use sha2::{Digest, Sha256};

use super::{Service, ms};
use crate::domain::policy::is_usergroup_id;
use crate::domain::{Job, Lane, Policy, State};
use crate::metrics::Metrics;
use crate::slack::blocks;
use crate::store::marks::POLICY_ENFORCED;
use crate::store::{self, Transition};

/// Pending requests read per query while walking them.
const PAGE: u64 = 500;
/// After each page the walk rests this many times as long as the page took, so it uses at
/// most a quarter of a core beside the requests being answered. It is early notice, not a
/// safeguard (a click and a grant check the policy in force themselves); unpaced, walking a
/// million pending requests at start took both cores for seconds and delayed acks.
const REST_PER_PAGE: u32 = 3;

impl Service {
    /// Ends every pending request the policy in force no longer allows; returns how many.
    /// Walks all of them, a page at a time, however many wait, resting between pages.
    ///
    /// Not walked when the rules it checks are those of the last full walk (a restart, a
    /// replica starting, a reload of the same file): nothing can have changed its verdicts.
    pub async fn enforce_policy(&self, now: DateTime<Utc>) -> anyhow::Result<u64> {
        let policy = self.policy.now();
        let digest = enforcement_digest(&policy);
        if let Some(digest) = &digest
            && self.store.mark(POLICY_ENFORCED).await?.as_ref() == Some(digest)
        {
            tracing::debug!("the policy's rules for pending requests are unchanged: not walked");
            return Ok(0);
        }
        let mut after = 0;
        let mut ended = 0;
        loop {
            let started = std::time::Instant::now();
            let page = self.store.pending_after(after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            let last_page = page.len() < PAGE as usize;
            // A page's cancellations go to the writer together, so they commit in a few
            // batches rather than one round trip each.
            let mut cancels = tokio::task::JoinSet::new();
            for request in page {
                if let Some(why) = refusal(&policy, &request) {
                    let service = self.clone();
                    cancels
                        .spawn(async move { service.cancel_for_policy(&request, &why, now).await });
                }
            }
            while let Some(done) = cancels.join_next().await {
                if done?? {
                    ended += 1;
                }
            }
            if last_page {
                break;
            }
            tokio::time::sleep(started.elapsed() * REST_PER_PAGE).await;
        }
        if let Some(digest) = digest {
            self.store.set_mark(POLICY_ENFORCED, &digest).await?;
        }
        if ended > 0 {
            self.woke(&[Lane::Messages]);
            tracing::info!(
                requests = ended,
                "cancelled pending requests the policy no longer allows"
            );
        }
        Ok(ended)
    }

    /// One request ends `cancelled` because of the policy: card, DM, audit. `false` when it was
    /// no longer pending (decided meanwhile).
    pub(super) async fn cancel_for_policy(
        &self,
        request: &store::Request,
        why: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let now_ms = ms(now);
        let mut t = Transition::new(request.id, &[State::Pending], State::Cancelled, now_ms);
        t.note = Some(format!("policy changed: {why}"));
        t.jobs = vec![
            Job::UpdateCard {
                request_id: request.id,
                channel: request.channel.clone(),
            }
            .at(now_ms),
            Job::Dm {
                user: request.requester.clone(),
                text: blocks::dm_policy_cancelled(request.id, &request.resource, why),
                done: None,
            }
            .at(now_ms),
        ];
        t.audit = vec![store::audit(
            "jitbot",
            "cancelled",
            json!({"reason": "policy changed", "why": why}),
        )];
        let done = self.store.transition(t).await?;
        if done {
            Metrics::inc(&self.metrics.policy_cancellations);
        }
        Ok(done)
    }
}

/// Everything [`refusal`] reads from the policy, as one digest: each resource's requesters,
/// duration bounds and provider kind, the groups of requesters, the identities, and this version of
/// jitbot (its rules may change). `None` when a verdict also rests on Slack's user groups,
/// which change without the file changing: then every start and reload walks.
pub fn enforcement_digest(policy: &Policy) -> Option<String> {
    let usergroups = policy.resources.values().any(|r| {
        r.requesters.iter().flatten().any(|entry| {
            is_usergroup_id(entry)
                || policy
                    .groups
                    .get(entry)
                    .is_some_and(|members| members.iter().any(|m| is_usergroup_id(m)))
        })
    });
    if usergroups {
        return None;
    }
    let resources: Vec<serde_json::Value> = policy
        .resources
        .values()
        .map(|r| {
            json!([
                r.name,
                r.requesters,
                r.min_duration.secs(),
                r.max_duration.secs(),
                policy.providers.get(&r.provider).map(|p| p.kind()),
            ])
        })
        .collect();
    // The groups that say who may ask (approvers' groups decide nothing here).
    let groups: std::collections::BTreeMap<&String, &Vec<String>> = policy
        .resources
        .values()
        .flat_map(|r| r.requesters.iter().flatten())
        .filter_map(|entry| policy.groups.get_key_value(entry))
        .collect();
    let rules = json!({
        "jitbot": env!("CARGO_PKG_VERSION"),
        "resources": resources,
        "groups": groups,
        "identities": policy.identities,
    });
    Some(hex::encode(Sha256::digest(rules.to_string())))
}

/// Why `policy` would not let this stored request go on, if it would not.
/// A bundle is held to every resource's rules.
pub fn refusal(policy: &Policy, request: &store::Request) -> Option<String> {
    let names = store::BundleSpec::resources_of(request);
    names
        .iter()
        .find_map(|name| match policy.resources.get(name) {
            None => Some(format!("{name} is no longer in the policy")),
            Some(resource) => {
                policy.no_longer_allows(resource, &request.requester, request.duration_secs)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::enforcement_digest;
    use crate::domain::Policy;

    const POLICY: &str = r#"
groups:
  dba: { members: [U0DBA1] }
  oncall: { members: [U0ALICE] }
identities:
  U0ALICE: { postgres: alice }
providers:
  pg: { kind: postgres, url_env: JIT_PG_ADMIN_URL }
resources:
  db:
    provider: pg
    grant: { role: rw }
    max_duration: 4h
    channel: C0REVIEW
    approvers: [dba]
    requesters: [oncall]
"#;

    fn digest(text: &str) -> Option<String> {
        let (policy, _) = Policy::parse("p.yaml", text).expect("policy compiles");
        enforcement_digest(&policy)
    }

    fn edited(from: &str, to: &str) -> Option<String> {
        assert!(POLICY.contains(from), "{from}");
        digest(&POLICY.replacen(from, to, 1))
    }

    #[test]
    fn the_digest_changes_with_every_rule_a_pending_request_is_held_to_and_only_with_those() {
        let base = digest(POLICY).expect("no Slack user group named");
        assert_eq!(digest(POLICY), Some(base.clone()), "deterministic");
        for (from, to) in [
            ("max_duration: 4h", "max_duration: 2h"),
            (
                "max_duration: 4h",
                "max_duration: 4h\n    min_duration: 10m",
            ),
            ("requesters: [oncall]", "requesters: [oncall, U0BOB]"),
            (
                "oncall: { members: [U0ALICE] }",
                "oncall: { members: [U0BOB] }",
            ),
            (
                "U0ALICE: { postgres: alice }",
                "U0ALICE: { postgres: alice2 }",
            ),
            ("  db:\n", "  db2:\n"),
        ] {
            assert_ne!(edited(from, to), Some(base.clone()), "{from} -> {to}");
        }
        // Who approves, and where the card goes, decide nothing about a request's standing.
        for (from, to) in [
            ("approvers: [dba]", "approvers: [U0DBA1]"),
            ("channel: C0REVIEW", "channel: C0OTHER"),
            ("dba: { members: [U0DBA1] }", "dba: { members: [U0DBA2] }"),
        ] {
            assert_eq!(edited(from, to), Some(base.clone()), "{from} -> {to}");
        }
    }

    #[test]
    fn a_policy_that_names_a_slack_user_group_has_no_digest() {
        assert_eq!(
            edited("requesters: [oncall]", "requesters: [S0ONCALL]"),
            None
        );
        assert_eq!(
            edited(
                "oncall: { members: [U0ALICE] }",
                "oncall: { members: [U0ALICE, S0ONCALL] }"
            ),
            None
        );
    }
}
