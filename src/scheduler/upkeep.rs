//! What keeps a worker's claims honest: finished jobs marked done in batches, and leases renewed
//! while jobs run (or every job stopped when they cannot be, on a shared store).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{EPHEMERAL_ATTEMPTS, JobError, Scheduler, backoff};
use crate::domain::Job;
use crate::metrics::Metrics;
use crate::slack::SlackError;
use crate::store::JobRow;

use super::runner::{
    JOB_LEASE, LEASE_MARGIN, LEASE_RENEW_EVERY, LaneRunner, RENEW_CHUNK, SETTLE_BATCH,
    SETTLE_TRIES, now_ms,
};

/// Marks finished jobs done, as many per statement as have finished meanwhile: one write per
/// batch instead of one per job. A batch the store does not take is left to its leases (those
/// jobs run again; every job may).
pub(super) async fn mark_done(
    sched: Scheduler,
    worker: Arc<str>,
    mut finished: mpsc::UnboundedReceiver<i32>,
) {
    let mut ids = Vec::with_capacity(SETTLE_BATCH);
    while finished.recv_many(&mut ids, SETTLE_BATCH).await > 0 {
        for attempt in 1..=SETTLE_TRIES {
            match sched.store.finish_jobs(&ids, &worker, now_ms()).await {
                Ok(()) => break,
                Err(e) if attempt == SETTLE_TRIES => {
                    tracing::error!(
                        jobs = ids.len(),
                        error = format!("{e:#}"),
                        "cannot mark finished jobs done; they will run again after their leases"
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await,
            }
        }
        ids.clear();
    }
}

/// Renews the leases of every job this process holds. On PostgreSQL, if renewals keep failing
/// for longer than a lease, stops them all: another replica may take them from then on.
pub(super) async fn heartbeat(sched: Scheduler, worker: Arc<str>, lanes: Vec<Arc<LaneRunner>>) {
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(LEASE_RENEW_EVERY).await;
        let ids: Vec<i32> = lanes.iter().flat_map(|l| l.held_ids()).collect();
        let started = Instant::now();
        if ids.is_empty() {
            last_ok = started;
            continue;
        }
        let lease_end = now_ms() + JOB_LEASE.as_millis() as i64;
        let renew = async {
            for chunk in ids.chunks(RENEW_CHUNK) {
                sched.store.renew_leases(chunk, &worker, lease_end).await?;
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout(JOB_LEASE - LEASE_MARGIN, renew).await {
            Ok(Ok(())) => last_ok = started,
            Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "cannot renew job leases"),
            Err(_) => tracing::warn!("renewing job leases took too long"),
        }
        // One process per SQLite store: nobody else can take its jobs, so they keep running.
        if !sched.store.is_sqlite() && last_ok.elapsed() > JOB_LEASE - LEASE_MARGIN {
            tracing::error!(
                "job leases could not be renewed; stopping this process's jobs so another replica can take them"
            );
            for lane in &lanes {
                lane.abandon_all();
            }
            last_ok = Instant::now();
        }
    }
}

/// What becomes of a job that ran: done, or back in the queue.
pub(super) enum Settle {
    Finish(&'static str, Option<String>),
    Requeue {
        run_at: i64,
        error: Option<String>,
        count: bool,
    },
}

impl LaneRunner {
    pub(super) async fn run_job(&self, row: JobRow, job: Job) {
        let deadline = self.sched.deadline(&job);
        let result = match tokio::time::timeout(deadline, self.sched.execute(&job, &row)).await {
            Ok(result) => result,
            Err(_) => Err(JobError::Retry(anyhow::anyhow!(
                "did not finish within {}s",
                deadline.as_secs()
            ))),
        };
        let settle = match result {
            Ok(()) => {
                Metrics::inc(&self.sched.metrics.jobs_run);
                if self.finished.send(row.id).is_ok() {
                    return;
                }
                Settle::Finish("done", None)
            }
            Err(JobError::Defer(wait)) => Settle::Requeue {
                run_at: now_ms() + wait.as_millis() as i64,
                error: None,
                count: false,
            },
            Err(JobError::Permanent(e)) => Settle::Finish("failed", Some(format!("{e:#}"))),
            Err(JobError::Retry(e))
                if matches!(job, Job::Ephemeral { .. }) && row.attempts >= EPHEMERAL_ATTEMPTS =>
            {
                // A refusal nobody saw within a few tries is stale; let it go.
                tracing::warn!(
                    job = row.id,
                    error = format!("{e:#}"),
                    "giving up on an ephemeral answer"
                );
                Settle::Finish("dropped", Some(format!("{e:#}")))
            }
            Err(JobError::Retry(e)) => {
                Metrics::inc(&self.sched.metrics.jobs_failed);
                // Slack's own Retry-After wins over our backoff when it asks for longer.
                let delay = backoff(self.sched.backoff_start, row.attempts).max(
                    SlackError::find(&e)
                        .and_then(SlackError::wait)
                        .unwrap_or_default(),
                );
                let error = format!("{e:#}");
                tracing::warn!(
                    job = row.id,
                    kind = job.kind(),
                    attempt = row.attempts,
                    retry_in_ms = delay.as_millis() as u64,
                    error,
                    "job failed"
                );
                Settle::Requeue {
                    run_at: now_ms() + delay.as_millis() as i64,
                    error: Some(error),
                    count: true,
                }
            }
        };
        self.settle(row.id, settle).await;
    }

    /// Records a job's outcome, trying a few times; if the store stays away the job is left to
    /// its lease, and runs again once that has run out (every job may run twice).
    pub(super) async fn settle(&self, id: i32, settle: Settle) {
        let store = &self.sched.store;
        for attempt in 1..=SETTLE_TRIES {
            let result = match &settle {
                Settle::Finish(outcome, error) => {
                    store
                        .finish_job(id, &self.worker, now_ms(), outcome, error.as_deref())
                        .await
                }
                Settle::Requeue {
                    run_at,
                    error,
                    count,
                } => {
                    store
                        .requeue_job(id, &self.worker, *run_at, error.as_deref(), *count)
                        .await
                }
            };
            match result {
                Ok(()) => return,
                Err(e) if attempt == SETTLE_TRIES => {
                    tracing::error!(
                        job = id,
                        error = format!("{e:#}"),
                        "cannot record a job's outcome; it will run again after its lease"
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await,
            }
        }
    }
}
