//! When the policy changes (at start, and at each reload), requests still waiting for a decision
//! are held to the policy in force now: a request whose resource left the policy, whose
//! requester may no longer ask, or whose duration is now out of bounds ends `cancelled`
//! ("policy changed"), with its card updated and its requester told.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Service, ms};
use crate::domain::{Job, Lane, Policy, State};
use crate::metrics::Metrics;
use crate::slack::blocks;
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
    pub async fn enforce_policy(&self, now: DateTime<Utc>) -> anyhow::Result<u64> {
        let policy = self.policy.now();
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
