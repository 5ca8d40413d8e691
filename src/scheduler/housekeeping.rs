//! Bookkeeping jobs: state changes with no outside call: the timeout of a request nobody decided,
//! and the store's upkeep (escalation steps and the digest belong here too).

use chrono::Utc;
use serde_json::json;

use super::{JobResult, Scheduler, ms};
use crate::domain::{Job, State};
use crate::slack::blocks;
use crate::store::{self, Transition};

impl Scheduler {
    pub(super) async fn timeout(&self, id: i32) -> JobResult {
        let request = self.request(id).await?;
        if request.state != State::Pending.as_str() {
            return Ok(());
        }
        let now = Utc::now();
        let mut t = Transition::new(id, &[State::Pending], State::TimedOut, ms(now));
        t.jobs = vec![
            Job::UpdateCard {
                request_id: id,
                channel: request.channel.clone(),
            }
            .at(ms(now)),
            Job::Dm {
                user: request.requester.clone(),
                text: blocks::dm_timed_out(
                    id,
                    &request.resource,
                    &self.policy.now().settings.request_ttl.to_string(),
                ),
                done: None,
            }
            .at(ms(now)),
        ];
        t.audit = vec![store::audit("jitbot", "timed_out", json!({}))];
        self.commit(t).await?;
        Ok(())
    }
}

impl Scheduler {
    /// Store upkeep: finished jobs past their retention go (the audit trail stays), the planner's
    /// statistics are refreshed, and the next round is queued.
    pub(super) async fn maintain(&self) -> JobResult {
        let now = ms(Utc::now());
        let cutoff = now - self.job_retention.as_millis() as i64;
        let pruned = self.store.prune_jobs(cutoff).await?;
        self.store.refresh_statistics().await?;
        if pruned > 0 {
            tracing::info!(pruned, "pruned finished jobs");
        }
        self.store
            .enqueue(&[Job::next_maintenance(now)], now)
            .await?;
        Ok(())
    }
}
