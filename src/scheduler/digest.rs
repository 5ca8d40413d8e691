//! Posting the weekly digest: one job per period, keyed by the period's end, so it is posted once
//! however many replicas queue it and however often they restart. After posting, the next
//! period's job is queued.

use chrono::{DateTime, Utc};

use super::{Scheduler, ms};
use crate::domain::{Job, Policy, Scheduled};
use crate::slack::digest::digest_message;

/// The job of the next digest after `now`, if the policy asks for one.
pub fn next_digest(policy: &Policy, now: DateTime<Utc>) -> Option<Scheduled> {
    let settings = policy.digest.as_ref()?;
    let (_, end) = settings.period(now)?;
    Some(
        Job::Digest {
            period_end: ms(end),
            channel: settings.channel.clone(),
        }
        .at(ms(end)),
    )
}

impl Scheduler {
    /// Posts the digest of the period ending at `period_end` to `channel`, and queues the next.
    /// A job left from a schedule the policy no longer has posts nothing and queues the next of
    /// the schedule in force.
    pub(super) async fn post_digest(&self, period_end: i64, channel: &str) -> anyhow::Result<()> {
        let policy = self.policy.now();
        let now = Utc::now();
        let period = DateTime::<Utc>::from_timestamp_millis(period_end).and_then(|end| {
            let settings = policy.digest.as_ref()?;
            let (start, next_end) = settings.period(end - chrono::TimeDelta::milliseconds(1))?;
            (next_end == end && settings.channel == channel).then_some((start, end))
        });
        if let Some((start, end)) = period {
            let digest = crate::service::digest::gather(&self.store, start, end, now).await?;
            let (text, blocks) = digest_message(&digest);
            self.slack
                .post_message(channel, &text, Some(blocks), None)
                .await?;
            tracing::info!(channel, period_end = %end, "posted the weekly digest");
        } else {
            tracing::info!(
                period_end,
                "a digest job of a schedule no longer in the policy: skipped"
            );
        }
        if let Some(next) = next_digest(
            &policy,
            now.max(DateTime::<Utc>::from_timestamp_millis(period_end).unwrap_or(now)),
        ) {
            self.store.enqueue(&[next], ms(now)).await?;
        }
        Ok(())
    }
}
