//! The runner: one task per lane claims that lane's due jobs and runs each as a task of its own,
//! so the lanes never wait for one another and a lane never waits for one slow call.
//!
//! Within a lane, jobs are grouped by key (a provider, a Slack channel). A key runs at most
//! [`Scheduler::key_limit`] jobs at once; the rest of its claimed jobs wait in order in memory.
//! A key that already has jobs waiting is left out of the next claim, so one busy provider or
//! channel cannot fill the lane and the next claim reaches everyone else's jobs.
//!
//! Claimed jobs are leased for [`JOB_LEASE`] and the lease is renewed every
//! [`LEASE_RENEW_EVERY`] while this process holds them, so a dead process's jobs are taken back
//! within seconds. If renewals fail for longer than the lease (PostgreSQL unreachable), this
//! process stops its jobs before another replica may take them: no job runs twice at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use super::turns::Turns;
use super::upkeep::{self, Settle};
use super::{IDLE_RECHECK, Scheduler, pace};
use crate::domain::{Job, Lane};
use crate::store::{Claim, JobRow};

/// How long a claimed job stays reserved for this process without a renewal.
pub const JOB_LEASE: Duration = Duration::from_secs(3);
/// How often the leases of held jobs are renewed.
pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(1);
/// Jobs are stopped this long before their lease could have run out.
pub(super) const LEASE_MARGIN: Duration = Duration::from_millis(500);
/// Most jobs claimed in one statement.
const CLAIM_BATCH: usize = 64;
/// Pause when a due job could not be claimed just now (another worker's claim in flight).
const BUSY_POLL: Duration = Duration::from_millis(25);
/// Pause after the store failed to answer a claim.
const STORE_TROUBLE_PAUSE: Duration = Duration::from_millis(500);
/// Tries to record a job's outcome before leaving it to its lease (it then runs again).
pub(super) const SETTLE_TRIES: u32 = 3;
/// Most lease renewals in one statement.
pub(super) const RENEW_CHUNK: usize = 500;
/// Most finished jobs marked done in one statement.
pub(super) const SETTLE_BATCH: usize = 500;

/// How many jobs a lane holds (claimed, running or waiting for their key) and runs at once.
#[derive(Clone, Copy, Debug)]
struct LaneShape {
    hold: usize,
    run: usize,
    /// Least time between two claims: work that arrives meanwhile is claimed together. Zero for
    /// the lanes that must react at once (a revoke due now runs now).
    cadence: Duration,
}

/// Most Slack calls in flight at once.
const SLACK_IN_FLIGHT: usize = 32;
/// An expiry storm: the access lane finishes at least this many jobs within [`STORM_WINDOW`]
/// (about 64 a second). Slack messages wait while it lasts, so revokes get the store and the CPU
/// first. It is the pace of revokes that counts, not how many wait: a provider that hangs holds
/// jobs but finishes none, and is no reason for messages to wait.
const STORM_PACE: u32 = 32;
/// The window [`STORM_PACE`] is counted over; a storm is over one window after it slows down.
const STORM_WINDOW: Duration = Duration::from_millis(500);

/// The access lane's recent pace, shared with the lanes that yield to it.
#[derive(Default)]
pub(super) struct Pace {
    /// Start of the current window (epoch ms) and jobs finished in it.
    window: Mutex<(i64, u32)>,
    /// When the pace last reached a storm (epoch ms).
    storm_seen: AtomicI64,
}

impl Pace {
    fn finished_one(&self) {
        let now = now_ms();
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if now - window.0 > STORM_WINDOW.as_millis() as i64 {
            *window = (now, 0);
        }
        window.1 += 1;
        if window.1 >= STORM_PACE {
            self.storm_seen.store(now, Ordering::Relaxed);
        }
    }

    fn storm(&self) -> bool {
        now_ms() - self.storm_seen.load(Ordering::Relaxed) < STORM_WINDOW.as_millis() as i64
    }
}

fn shape(lane: Lane) -> LaneShape {
    match lane {
        // Per-provider limits bound these; the lane bounds only memory.
        Lane::Access => LaneShape {
            hold: 2048,
            run: 2048,
            cadence: Duration::ZERO,
        },
        Lane::Grants => LaneShape {
            hold: 1024,
            run: 1024,
            cadence: Duration::ZERO,
        },
        // A Slack call takes tens of milliseconds anyway; gathering a few milliseconds of new
        // messages into one claim spares the store a claim per request under load.
        Lane::Messages => LaneShape {
            hold: 256,
            run: SLACK_IN_FLIGHT,
            cadence: Duration::from_millis(25),
        },
        Lane::Housekeeping => LaneShape {
            hold: 64,
            run: 8,
            cadence: Duration::from_millis(100),
        },
    }
}

pub(super) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[derive(Default)]
struct KeyState {
    running: usize,
    waiting: VecDeque<(JobRow, Job)>,
}

#[derive(Default)]
struct LaneState {
    /// Ids of every job this lane holds.
    held: HashSet<i32>,
    running: usize,
    keys: HashMap<String, KeyState>,
    tasks: HashMap<i32, AbortHandle>,
}

pub(super) struct LaneRunner {
    pub(super) lane: Lane,
    shape: LaneShape,
    pub(super) sched: Scheduler,
    pub(super) worker: Arc<str>,
    state: Mutex<LaneState>,
    /// The access lane's pace, for the lanes that yield to it.
    pace: Arc<Pace>,
    /// Finished jobs go here to be marked done together.
    pub(super) finished: mpsc::UnboundedSender<i32>,
}

/// Every lane's runner, the lease heartbeat, and the task that marks finished jobs done.
pub struct Runner {
    sched: Scheduler,
    worker: Arc<str>,
    lanes: Vec<Arc<LaneRunner>>,
    finished: mpsc::UnboundedReceiver<i32>,
}

impl Runner {
    pub fn new(sched: Scheduler) -> Runner {
        use rand::Rng;
        let tag: u32 = rand::rng().random();
        let worker: Arc<str> = format!("w{}-{tag:08x}", std::process::id()).into();
        let (finished_tx, finished) = mpsc::unbounded_channel();
        let pace = Arc::new(Pace::default());
        let lanes = Lane::ALL
            .into_iter()
            .map(|lane| {
                Arc::new(LaneRunner {
                    lane,
                    shape: shape(lane),
                    sched: sched.clone(),
                    worker: worker.clone(),
                    state: Mutex::new(LaneState::default()),
                    pace: pace.clone(),
                    finished: finished_tx.clone(),
                })
            })
            .collect();
        Runner {
            sched,
            worker,
            lanes,
            finished,
        }
    }

    /// This process's name on the jobs it holds.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Runs every lane and the lease heartbeat until the future is dropped; dropping it stops
    /// every job this process runs (as a crash would: the jobs stay in the store).
    pub async fn run(self) {
        let mut tasks = JoinSet::new();
        for lane in &self.lanes {
            tasks.spawn(lane.clone().run());
        }
        tasks.spawn(upkeep::mark_done(
            self.sched.clone(),
            self.worker.clone(),
            self.finished,
        ));
        tasks.spawn(upkeep::heartbeat(
            self.sched.clone(),
            self.worker.clone(),
            self.lanes,
        ));
        while tasks.join_next().await.is_some() {}
    }
}

/// Stops a lane's job tasks when the lane's own task stops.
struct StopJobsOnDrop(Arc<LaneRunner>);

impl Drop for StopJobsOnDrop {
    fn drop(&mut self) {
        self.0.abandon_all();
    }
}

impl LaneRunner {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Jobs this lane may start now: Slack messages wait out an expiry storm.
    fn run_limit(&self) -> usize {
        if self.lane == Lane::Messages && self.pace.storm() {
            0
        } else {
            self.shape.run
        }
    }

    fn key_limit(&self, key: &str) -> usize {
        self.sched.key_limit(self.lane, key).max(1)
    }

    /// Keys to leave out of the next claim: those that already have jobs waiting.
    fn busy_keys(&self) -> (usize, Vec<String>) {
        let st = self.lock();
        let room = self.shape.hold.saturating_sub(st.held.len());
        let busy = st
            .keys
            .iter()
            .filter(|(key, ks)| ks.running + ks.waiting.len() > self.key_limit(key))
            .map(|(key, _)| key.clone())
            .collect();
        (room, busy)
    }

    async fn run(self: Arc<Self>) {
        let _stop = StopJobsOnDrop(self.clone());
        let store = self.sched.store.clone();
        let notify = self.sched.wake.clone();
        let mut last_claim = std::time::Instant::now() - self.shape.cadence;
        let mut more = false;
        let mut turns = Turns::new();
        loop {
            // A lane with a cadence gathers new work between claims; a full claim is followed
            // at once (more is waiting).
            let since = last_claim.elapsed();
            if !more && since < self.shape.cadence {
                tokio::time::sleep(self.shape.cadence - since).await;
            }
            last_claim = std::time::Instant::now();
            more = false;
            // Jobs held back (by a storm in another lane, say) start once they may.
            self.start_ready(&mut self.lock());
            let now = now_ms();
            let (room, mut skip_keys) = self.busy_keys();
            let passed_over = turns.pass_over(&mut skip_keys);
            let holds = if self.lane == Lane::Messages {
                self.sched.slack.gate().holds()
            } else {
                Default::default()
            };
            let skip_kinds: Vec<&'static str> = holds
                .methods
                .iter()
                .flat_map(|m| kinds_calling(m))
                .collect();
            let claim = Claim {
                lane: self.lane,
                now,
                limit: room.min(CLAIM_BATCH) as u64,
                worker: &self.worker,
                lease_end: now + JOB_LEASE.as_millis() as i64,
                skip_keys: &skip_keys,
                skip_kinds: &skip_kinds,
                skip_posts_to: &holds.post_channels,
            };
            if claim.limit > 0 {
                match store.claim(&claim).await {
                    Ok(rows) => {
                        let full = rows.len() as u64 == claim.limit;
                        if full && !passed_over {
                            turns.took_whole_claim(rows.iter().map(|r| r.queue_key.as_str()));
                        }
                        let mut booked = Vec::new();
                        for row in rows {
                            if let Some(slot) = self.later_turn(&row) {
                                booked.push((row.id, slot));
                            } else {
                                self.admit(row).await;
                            }
                        }
                        if let Err(e) = store.pace_jobs(&booked, &self.worker).await {
                            // Their leases run out and they are claimed again.
                            tracing::warn!(
                                error = format!("{e:#}"),
                                "cannot book posts into their channel's pace"
                            );
                        }
                        // After a claim that passed keys over, claim again at once with
                        // them back in.
                        if full || passed_over {
                            more = true;
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            lane = self.lane.as_str(),
                            error = format!("{e:#}"),
                            "cannot claim jobs"
                        );
                        tokio::time::sleep(STORE_TROUBLE_PAUSE).await;
                        continue;
                    }
                }
            }
            let sleep = if claim.limit == 0 {
                IDLE_RECHECK
            } else {
                let until = now_ms() + IDLE_RECHECK.as_millis() as i64;
                match store.next_due(&claim, until).await {
                    Ok((_, Some(lease_end))) if lease_end <= now_ms() => {
                        // Another worker's lease ran out: it is gone; take its jobs back.
                        match store.release_expired(self.lane, now_ms()).await {
                            Ok(n) => tracing::warn!(
                                lane = self.lane.as_str(),
                                jobs = n,
                                "took back jobs whose worker stopped renewing their lease"
                            ),
                            Err(e) => tracing::error!(
                                error = format!("{e:#}"),
                                "cannot take back expired leases"
                            ),
                        }
                        continue;
                    }
                    Ok((Some(at), _)) => Duration::from_millis(
                        (at - now_ms()).clamp(0, IDLE_RECHECK.as_millis() as i64) as u64,
                    )
                    .max(BUSY_POLL),
                    Ok((None, _)) => IDLE_RECHECK,
                    Err(e) => {
                        tracing::error!(
                            lane = self.lane.as_str(),
                            error = format!("{e:#}"),
                            "cannot read the job queue"
                        );
                        STORE_TROUBLE_PAUSE
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = notify.lane(self.lane).notified() => {}
            }
        }
    }

    /// For a Slack post that is not its channel's turn yet: when its turn is.
    fn later_turn(&self, row: &JobRow) -> Option<i64> {
        let posting = crate::domain::job::POSTING_KINDS.contains(&row.kind.as_str());
        if self.lane != Lane::Messages || row.paced || !posting {
            return None;
        }
        match self.sched.pacer.book(&row.queue_key, now_ms()) {
            pace::Turn::Now => None,
            pace::Turn::At(slot) => Some(slot),
        }
    }

    /// Takes a claimed job in: it runs now if its key and the lane have room, else waits.
    async fn admit(self: &Arc<Self>, row: JobRow) {
        let job: Job = match serde_json::from_str(&row.payload) {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(job = row.id, error = %e, "unreadable job; dropping it");
                self.settle(
                    row.id,
                    Settle::Finish("failed", Some(format!("unreadable: {e}"))),
                )
                .await;
                return;
            }
        };
        let mut st = self.lock();
        st.held.insert(row.id);
        let key = row.queue_key.clone();
        st.keys
            .entry(key)
            .or_default()
            .waiting
            .push_back((row, job));
        self.start_ready(&mut st);
    }

    /// Starts waiting jobs, the oldest first, while the lane and their keys have room.
    fn start_ready(self: &Arc<Self>, st: &mut LaneState) {
        let run_limit = self.run_limit();
        while st.running < run_limit {
            let next = st
                .keys
                .iter()
                .filter(|(key, ks)| ks.running < self.key_limit(key))
                .filter_map(|(key, ks)| {
                    ks.waiting.front().map(|(row, _)| (row.run_at, row.id, key))
                })
                .min()
                .map(|(_, _, key)| key.clone());
            let Some(key) = next else { break };
            let Some(ks) = st.keys.get_mut(&key) else {
                break;
            };
            let Some((row, job)) = ks.waiting.pop_front() else {
                break;
            };
            ks.running += 1;
            st.running += 1;
            let id = row.id;
            let me = self.clone();
            let handle = tokio::spawn(async move {
                me.run_job(row, job).await;
                me.done(id, &key);
            });
            st.tasks.insert(id, handle.abort_handle());
        }
        self.note_load(st);
    }

    fn note_load(&self, st: &LaneState) {
        self.sched
            .metrics
            .set_lane(self.lane, st.held.len(), st.running);
    }

    /// A job ended (whatever its outcome): its slot goes to the next one.
    fn done(self: &Arc<Self>, id: i32, key: &str) {
        let mut st = self.lock();
        if st.tasks.remove(&id).is_none() {
            return; // abandoned meanwhile
        }
        if self.lane == Lane::Access {
            self.pace.finished_one();
        }
        st.held.remove(&id);
        st.running = st.running.saturating_sub(1);
        let mut key_has_room = true;
        if let Some(ks) = st.keys.get_mut(key) {
            ks.running = ks.running.saturating_sub(1);
            key_has_room = ks.waiting.is_empty();
            if ks.running == 0 && ks.waiting.is_empty() {
                st.keys.remove(key);
            }
        }
        self.start_ready(&mut st);
        let lane_was_full = st.held.len() + 1 >= self.shape.hold;
        drop(st);
        // Claim more only when this key has drained its queue, or the lane was full: a busy
        // key's completions should not each cost a claim.
        if key_has_room || lane_was_full {
            self.sched.wake.lane(self.lane).notify_one();
        }
    }

    /// Stops every job of this lane; their leases run out and they are claimed again.
    pub(super) fn abandon_all(&self) {
        let mut st = self.lock();
        for (_, task) in st.tasks.drain() {
            task.abort();
        }
        *st = LaneState::default();
        self.note_load(&st);
    }

    pub(super) fn held_ids(&self) -> Vec<i32> {
        self.lock().held.iter().copied().collect()
    }
}

/// Job kinds that call a Slack method (for leaving them out of claims while it is held back).
fn kinds_calling(method: &str) -> Vec<&'static str> {
    match method {
        "chat.update" => vec!["update_card"],
        "chat.postEphemeral" => vec!["ephemeral"],
        "chat.postMessage" => crate::domain::job::POSTING_KINDS.to_vec(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_wait_only_while_revokes_finish_at_a_storms_pace() {
        let pace = Pace::default();
        for _ in 0..STORM_PACE - 1 {
            pace.finished_one();
        }
        assert!(!pace.storm(), "a steady trickle is no storm");
        pace.finished_one();
        assert!(pace.storm());
        std::thread::sleep(STORM_WINDOW + Duration::from_millis(50));
        assert!(!pace.storm(), "a storm ends one window after it slows down");
    }
}
