//! Access that ends soon: `JIT_ENDING_SOON` (10 minutes) before a grant's end, its requester is
//! told, with a button to extend it (by its first length, within what the policy allows) and one
//! to end it now. An extension moves the end: the reminder then waits for the new one.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Scheduler, ms};
use crate::domain::{GrantDuration, State};
use crate::slack::blocks;

/// A reminder's plan, read from the store when it runs.
struct Reminder {
    end: i64,
    /// How much more an extension may add now (`None`: none).
    more: Option<GrantDuration>,
    resource: String,
}

impl Scheduler {
    /// What the grant of `id` looks like now: `None` when there is nothing to remind of.
    async fn reminder(&self, id: i32) -> anyhow::Result<Option<Reminder>> {
        let Some((request, Some(grant))) = self.store.request_with_grant(id).await? else {
            return Ok(None);
        };
        let (Some(start), Some(end)) = (grant.granted_at, grant.expires_at) else {
            return Ok(None);
        };
        if request.state != State::Active.as_str() || grant.end_reason.is_some() {
            return Ok(None);
        }
        let policy = self.policy.now();
        let more = policy.resources.get(&request.resource).and_then(|r| {
            let cap = start.saturating_add(r.max_duration.secs() as i64 * 1000);
            let room = (cap - end).max(0) / 1000;
            let wanted = request.duration_secs.min(room);
            (wanted >= 1)
                .then(|| GrantDuration::from_secs(wanted as u64))
                .flatten()
        });
        Ok(Some(Reminder {
            end,
            more,
            resource: request.resource,
        }))
    }

    /// How long the reminder of `id` must still wait (its end moved), if it must.
    pub(super) async fn ending_soon_wait(&self, id: i32) -> anyhow::Result<Option<Duration>> {
        let Some(reminder) = self.reminder(id).await? else {
            return Ok(None);
        };
        let due = reminder.end - self.ending_soon.as_millis() as i64;
        let early = due - ms(Utc::now());
        Ok((early > 1_000).then(|| Duration::from_millis(early as u64)))
    }

    /// Sends the reminder of `id` to `user`, if the grant still runs.
    pub(super) async fn ending_soon(&self, id: i32, user: &str) -> anyhow::Result<()> {
        let Some(reminder) = self.reminder(id).await? else {
            return Ok(());
        };
        let Some(end) = DateTime::<Utc>::from_timestamp_millis(reminder.end) else {
            return Ok(());
        };
        let text = blocks::dm_ending_soon(id, &reminder.resource, end, reminder.more);
        self.slack
            .post_message(
                user,
                &blocks::plain_fallback(&text),
                Some(blocks::ending_soon_blocks(&text, id, reminder.more)),
                None,
            )
            .await
            .map(|_| ())
    }
}
