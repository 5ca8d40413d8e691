//! Runs the durable queue's jobs: grants, expiries, timeouts and Slack posts.
//!
//! - [`runner`]: one runner per [`Lane`], each claiming its own due jobs and running them
//!   concurrently, bounded per key (a provider, a Slack channel); leases renewed while jobs run.
//! - [`access`]: grants, revokes (expiry, early revoke, cancel while granting), clean-up.
//! - [`messages`]: approval cards, card updates, DMs, notes, ephemeral answers; Slack errors that
//!   retrying cannot fix are reported once and not retried.
//! - [`housekeeping`]: timeouts of undecided requests.
//! - [`pace`]: Slack's pace for posts, one channel at a time.
//! - `upkeep`: finished jobs marked done in batches; leases renewed while jobs run.
//!
//! A new kind of job needs a [`Job`] variant (its lane and key), a handler in the family module,
//! and one arm in [`Scheduler::execute`]; the runner does not change.

mod access;
pub mod digest;
mod escalation;
mod housekeeping;
mod messages;
pub mod pace;
mod reminders;
mod runner;
mod turns;
mod upkeep;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::Notify;

use crate::domain::{Job, Lane, LivePolicy, Scheduled};
use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::slack::SlackApi;
use crate::store::{self, JobRow, Store};
pub use runner::{JOB_LEASE, LEASE_RENEW_EVERY, Runner};

/// Longest sleep between looks at a lane's queue, for jobs another replica queued.
pub const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// First retry delay; doubles per attempt.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Retry delays stop growing here.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// An ephemeral answer is dropped after this many attempts: it matters only for a moment.
const EPHEMERAL_ATTEMPTS: i32 = 3;
/// A grant still failing after this many attempts becomes `grant_failed`.
pub const GRANT_ATTEMPTS: i32 = 5;
/// Deadline of a housekeeping job (state changes only, no outside call).
const HOUSEKEEPING_DEADLINE: Duration = Duration::from_secs(30);
/// Jobs of one provider a lane runs at once, as a multiple of the provider's `concurrency`:
/// the calls themselves are bounded by `concurrency`, the rest of a job is store work that
/// should overlap with them.
const JOBS_PER_PROVIDER_CALL: usize = 4;

/// Wakes the lane runners when jobs are queued (one notifier per lane).
#[derive(Default)]
pub struct Wake {
    lanes: [Notify; 4],
}

impl Wake {
    pub fn lane(&self, lane: Lane) -> &Notify {
        let i = Lane::ALL.iter().position(|l| *l == lane).unwrap_or(0);
        &self.lanes[i]
    }

    /// These jobs were queued: wake the lanes that must run one of them before their next
    /// look at the queue anyway (at most [`IDLE_RECHECK`] away).
    pub fn for_jobs(&self, jobs: &[Scheduled]) {
        let soon = Utc::now().timestamp_millis() + IDLE_RECHECK.as_millis() as i64;
        for lane in Lane::ALL {
            if jobs
                .iter()
                .any(|s| s.job.lane() == lane && s.run_at <= soon)
            {
                self.lane(lane).notify_one();
            }
        }
    }
}

/// What a job handler says when it did not finish its job.
#[derive(Debug)]
pub enum JobError {
    /// Failed; try again after the backoff (or after Slack's `Retry-After`, when longer).
    Retry(anyhow::Error),
    /// Not a failure: it waits on something else (a grant still running, a rate limit). Run it
    /// again after this long, without counting an attempt.
    Defer(Duration),
    /// Retrying cannot help. The handler has already reported it (audit event, metric, log).
    Permanent(anyhow::Error),
}

impl From<anyhow::Error> for JobError {
    fn from(e: anyhow::Error) -> Self {
        JobError::Retry(e)
    }
}

impl From<sea_orm::DbErr> for JobError {
    fn from(e: sea_orm::DbErr) -> Self {
        JobError::Retry(e.into())
    }
}

/// A job's outcome.
pub type JobResult = Result<(), JobError>;

/// What every job handler needs.
#[derive(Clone)]
pub struct Scheduler {
    pub store: Store,
    pub policy: Arc<LivePolicy>,
    pub slack: SlackApi,
    pub providers: Arc<Providers>,
    pub metrics: Arc<Metrics>,
    pub wake: Arc<Wake>,
    /// Shortened by tests and the demo; production uses [`BACKOFF_START`].
    pub backoff_start: Duration,
    /// Deadline of one Slack call, for the messages lane's job deadline.
    pub slack_timeout: Duration,
    /// Calls in flight per provider and lane (see `access::provider_call`).
    pub provider_calls: Arc<ProviderCalls>,
    /// Slack's pace for posts, per channel.
    pub pacer: Arc<pace::Pacer>,
    /// How long a finished job is kept before it is pruned.
    pub job_retention: Duration,
    /// How long before its end the requester is offered to extend a grant.
    pub ending_soon: Duration,
    /// Who is on call on PagerDuty, asked before an escalation step pages.
    pub directory: Arc<crate::directory::Directory>,
}

/// One semaphore per provider and lane, sized by the provider's `concurrency`.
#[derive(Default)]
pub struct ProviderCalls {
    by: std::sync::Mutex<std::collections::HashMap<(Lane, String), Arc<tokio::sync::Semaphore>>>,
}

impl ProviderCalls {
    fn semaphore(&self, lane: Lane, provider: &str, size: usize) -> Arc<tokio::sync::Semaphore> {
        let mut by = self.by.lock().unwrap_or_else(|e| e.into_inner());
        by.entry((lane, provider.to_string()))
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(size.max(1))))
            .clone()
    }
}

/// The delay before retry number `attempt` (1-based): exponential, capped, with ±20 % jitter.
pub fn backoff(start: Duration, attempt: i32) -> Duration {
    let exp = start.saturating_mul(1u32 << attempt.clamp(1, 20).saturating_sub(1) as u32);
    let base = exp.min(BACKOFF_CAP);
    let jitter = rand::rng().random_range(0.8..1.2);
    base.mul_f64(jitter).min(BACKOFF_CAP)
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

impl Scheduler {
    /// Runs one job. The runner holds the job's lease and records the outcome.
    pub async fn execute(&self, job: &Job, row: &JobRow) -> JobResult {
        match job {
            Job::Grant { request_id, .. } => self.grant(*request_id, row).await,
            Job::EndAccess { request_id, .. } => self.end_access(*request_id).await,
            Job::Cleanup { request_id, .. } => self.cleanup(*request_id).await,
            Job::PostCard { .. }
            | Job::UpdateCard { .. }
            | Job::Dm { .. }
            | Job::ChannelNote { .. }
            | Job::Ephemeral { .. }
            | Job::Respond { .. }
            | Job::Digest { .. }
            | Job::Page { .. } => self.message(job, row).await,
            Job::Timeout { request_id } => self.timeout(*request_id).await,
            Job::Escalate { request_id, step } => self.escalate(*request_id, *step).await,
            Job::Maintain { .. } => self.maintain().await,
            Job::EndingSoon { request_id, .. } => match self.ending_soon_wait(*request_id).await? {
                Some(wait) => Err(JobError::Defer(wait)),
                None => self.message(job, row).await,
            },
        }
    }

    /// The longest a job may run before it counts as failed (every outside call in it has its
    /// own, shorter deadline; this one also bounds the store work around them).
    pub fn deadline(&self, job: &Job) -> Duration {
        match job.lane() {
            Lane::Access | Lane::Grants => {
                let limits = self.policy.now().provider_limits(job.queue_key());
                // a read-back, the call itself, and for a grant a Slack profile lookup
                limits.timeout.std() * 3 + self.slack_timeout + Duration::from_secs(5)
            }
            Lane::Messages => self.slack_timeout * 2 + Duration::from_secs(5),
            Lane::Housekeeping => HOUSEKEEPING_DEADLINE,
        }
    }

    /// How many jobs with this key may run at once in this lane.
    pub fn key_limit(&self, lane: Lane, key: &str) -> usize {
        match lane {
            Lane::Access | Lane::Grants => {
                self.policy.now().provider_limits(key).concurrency as usize * JOBS_PER_PROVIDER_CALL
            }
            // One at a time per channel: a channel's cards and updates go out in order, at the
            // pace Slack allows there.
            Lane::Messages => 1,
            Lane::Housekeeping => usize::MAX,
        }
    }

    /// Commits a transition and wakes the lanes its jobs wait in; `false` if its guard failed.
    async fn commit(&self, t: store::Transition) -> anyhow::Result<bool> {
        let jobs = t.jobs.clone();
        let changed = self.store.transition(t).await?;
        if changed {
            self.wake.for_jobs(&jobs);
        }
        Ok(changed)
    }

    async fn request(&self, id: i32) -> anyhow::Result<store::Request> {
        self.store
            .request(id)
            .await?
            .with_context(|| format!("request #{id} is gone"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stops_at_the_cap() {
        let first = backoff(BACKOFF_START, 1);
        assert!(
            first >= Duration::from_millis(800) && first <= Duration::from_millis(1200),
            "{first:?}"
        );
        let fourth = backoff(BACKOFF_START, 4);
        assert!(fourth >= Duration::from_millis(6400), "{fourth:?}");
        assert!(backoff(BACKOFF_START, 40) <= BACKOFF_CAP);
    }
}
