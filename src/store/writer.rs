//! Group commit: the store's one writer. New requests and state changes from every handler and
//! job go to one writer task, which takes whatever is waiting (up to [`BATCH`]) and commits it in
//! one transaction with set-based statements: one multi-row insert for the new requests (`ON
//! CONFLICT (open_key) DO NOTHING RETURNING *`, so the one-open-request rule stays exact), one
//! guarded `UPDATE … WHERE id IN (…) AND state IN (…) RETURNING *` per kind of change, one insert
//! for all their jobs and one for all their audit events. One commit (one fsync, on a durable
//! store) per batch instead of per request; on SQLite, where every statement is a round trip to
//! the connection's own thread, a few statements per batch instead of six per request. Batches of
//! new requests only take shorter ways ([`super::commit`]): on SQLite through the library on this
//! thread, on PostgreSQL in one round trip under load (two otherwise), where the open key's
//! unique index keeps the rule exact.
//!
//! Each write stays all-or-nothing and guarded, and is answered only once its batch is committed.
//! A batch carries at most one write per request (and one new request per person and resource).
//! If a batch fails as a whole, each of its writes is retried alone, so one bad write never takes
//! the others down with it; a write that fails alone is answered with its error.

use std::collections::{HashMap, HashSet, VecDeque};

use sea_orm::{ConnectionTrait, DatabaseConnection};
use tokio::sync::{mpsc, oneshot};

use super::commit::commit;
use super::requests::Created;
use super::requests::{NewAudit, NewGrant, NewRequest, Transition};
use crate::domain::{Scheduled, State};

/// Most writes committed together.
const BATCH: usize = 256;
/// A batch not committed within this is rolled back and each of its writes fails: shorter than
/// the deadline the HTTP edge keeps for Slack, so an answer of "try again" is true.
pub const WRITE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);
/// Writes waiting for the writer before submitters wait too.
const QUEUE: usize = 8_192;

/// A new request with everything that goes with it.
pub(super) struct Intake {
    pub new: NewRequest,
    pub state: State,
    pub grant: Option<NewGrant>,
    /// Its first jobs, once its id is known (called again if its batch is retried alone).
    pub jobs: Box<dyn Fn(i32) -> Vec<Scheduled> + Send + Sync>,
    pub event: NewAudit,
    pub now: i64,
    /// An auto-approved bundle's other resources, created with it.
    pub members: Vec<super::NewMember>,
}

pub(super) enum Op {
    Create(Intake, oneshot::Sender<Result<Created, String>>),
    Change(Transition, oneshot::Sender<Result<bool, String>>),
}

impl Op {
    /// The one waiting for this write has given up (its own deadline passed): skip it.
    fn abandoned(&self) -> bool {
        match self {
            Op::Create(_, reply) => reply.is_closed(),
            Op::Change(_, reply) => reply.is_closed(),
        }
    }

    /// What a batch may carry only once, and what waits while a batch carrying it commits: a
    /// person's new requests go one batch at a time, so the cap on open requests, counted in each
    /// batch's transaction, sees the ones before (batches commit in parallel on PostgreSQL).
    fn key(&self) -> String {
        match self {
            Op::Create(i, _) => format!("new:{}", i.new.requester),
            Op::Change(t, _) => format!("id:{}", t.id),
        }
    }
}

/// The submitting side; cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Op>,
}

fn answer<T>(reply: Result<Result<T, String>, oneshot::error::RecvError>) -> anyhow::Result<T> {
    match reply {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if e == TOO_SLOW => Err(TooSlow.into()),
        Ok(Err(e)) => Err(anyhow::anyhow!("{e}")),
        Err(_) => Err(anyhow::anyhow!(
            "the store's writer stopped before answering"
        )),
    }
}

impl Writer {
    /// Starts the writer on a thread of its own, on the connection `connect` opens there, with
    /// up to `parallel` batches committing at once (1 for SQLite, which has one write lock). It
    /// stops when the last [`Writer`] is dropped.
    ///
    /// Its own thread, because a commit is a chain of round trips (to SQLite's connection
    /// thread, or to PostgreSQL), and on a runtime busy with HTTP requests every hop would wait
    /// in line behind them: measured on 2 cores, a batch took 4 ms there and 2 ms here. A
    /// PostgreSQL pool is opened on that thread so its sockets are served by that thread too.
    pub(super) async fn start<F>(
        connect: F,
        parallel: usize,
        statistics: Option<Statistics>,
    ) -> anyhow::Result<Writer>
    where
        F: std::future::Future<Output = anyhow::Result<DatabaseConnection>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (ready, opened) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("jitbot-writer")
            .build()?;
        std::thread::Builder::new()
            .name("jitbot-writer".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match connect.await {
                        Ok(db) => {
                            let _ = ready.send(Ok(()));
                            run(db, rx, parallel.max(1), statistics).await;
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                });
            })?;
        match opened.await {
            Ok(Ok(())) => Ok(Writer { tx }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(anyhow::anyhow!(
                "the store's writer thread ended while starting"
            )),
        }
    }

    async fn send(&self, op: Op) -> anyhow::Result<()> {
        self.tx
            .send(op)
            .await
            .map_err(|_| anyhow::anyhow!("the store's writer has stopped"))
    }

    /// A state change; `false` if its guard failed.
    pub(super) async fn submit(&self, t: Transition) -> anyhow::Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Change(t, reply)).await?;
        answer(rx.await)
    }

    /// A new request, or why it was not stored.
    pub(super) async fn create(&self, intake: Intake) -> anyhow::Result<Created> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Create(intake, reply)).await?;
        answer(rx.await)
    }
}

/// Keeping the planner's statistics in step with the tables' growth, where the server may not
/// (a PostgreSQL run with autovacuum off, as on many small hosts): a fresh store analyzed while
/// empty plans its hot queries as scans of a few rows, and as the tables grow to tens of
/// thousands those scans cost milliseconds each, many times a second (measured: the queue's
/// claims read 4.8M tuples in 11 s of load, the server taking 40 % of the CPU; in a storm of
/// 10,000 expiries, loading each request with its grant took 25 ms, a hash join over every
/// grant, and the last revoke came 15.7 s late instead of 5.6 s). So after every so many writes
/// the writer runs `sql` itself, as autovacuum would: after [`Statistics::MIN_WRITES`] writes,
/// or a fifth of the jobs table (the largest) as last counted, whichever is more.
pub(super) struct Statistics {
    /// Refreshes the statistics.
    pub sql: &'static str,
    /// Reads the jobs table's estimated row count (one row, one column).
    pub jobs_rows_sql: &'static str,
}

impl Statistics {
    const MIN_WRITES: u64 = 2_000;
}

/// Runs `statistics.sql`; answers the writes to wait for before the next run.
async fn refresh(db: DatabaseConnection, statistics: &Statistics) -> u64 {
    let started = std::time::Instant::now();
    if let Err(e) = db.execute_unprepared(statistics.sql).await {
        tracing::warn!(error = %e, "could not refresh the planner's statistics");
        return Statistics::MIN_WRITES;
    }
    let rows = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            statistics.jobs_rows_sql,
        ))
        .await
        .ok()
        .flatten()
        .and_then(|row| row.try_get_by_index::<i64>(0).ok())
        .unwrap_or_default();
    tracing::debug!(
        jobs = rows,
        ms = started.elapsed().as_millis() as u64,
        "refreshed the planner's statistics"
    );
    (u64::try_from(rows).unwrap_or_default() / 5).max(Statistics::MIN_WRITES)
}

async fn run(
    db: DatabaseConnection,
    mut rx: mpsc::Receiver<Op>,
    parallel: usize,
    statistics: Option<Statistics>,
) {
    let statistics = statistics.map(std::sync::Arc::new);
    let mut since_refresh: u64 = 0;
    let mut refresh_after: u64 = Statistics::MIN_WRITES;
    let mut refreshing: Option<tokio::task::JoinHandle<u64>> = None;
    let mut queue: VecDeque<Op> = VecDeque::new();
    let mut incoming = Vec::with_capacity(BATCH);
    // Keys of the writes in batches now committing: a later write with the same key waits for
    // its batch, so writes to one request apply in the order they were submitted.
    let mut busy: HashSet<String> = HashSet::new();
    let mut committing = tokio::task::JoinSet::new();
    let kept = std::sync::Arc::new(super::commit::Kept::default());
    let mut keys_of: HashMap<tokio::task::Id, Vec<String>> = HashMap::new();
    let mut open = true;
    let mut last_batch = 0;
    let mut last_ended = std::time::Instant::now();
    let mut last_started = std::time::Instant::now();
    loop {
        // What is waiting, without waiting for more.
        while open && queue.len() < QUEUE {
            match rx.try_recv() {
                Ok(op) => queue.push_back(op),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        if committing.is_empty() && open {
            gather(&mut rx, &mut queue, last_batch, last_ended);
        }
        while committing.len() < parallel {
            // One batch at a time while commits flow (bigger batches: fewer statements and
            // commits per write); another beside it only once the one committing has taken
            // [`EXTRA_AFTER`] (a lock wait, a slow flush) or [`EXTRA_FROM`] writes wait.
            if !committing.is_empty()
                && queue.len() < EXTRA_FROM
                && last_started.elapsed() < EXTRA_AFTER
            {
                break;
            }
            let batch = take_batch(&mut queue, &busy);
            if batch.is_empty() {
                break;
            }
            last_batch = batch.len();
            last_started = std::time::Instant::now();
            let keys: Vec<String> = batch.iter().map(Op::key).collect();
            busy.extend(keys.iter().cloned());
            since_refresh += batch.len() as u64;
            let (db, kept) = (db.clone(), kept.clone());
            let task = committing.spawn(async move { commit(&db, batch, &kept).await });
            keys_of.insert(task.id(), keys);
        }
        if let Some(done) = refreshing.take_if(|task| task.is_finished()) {
            refresh_after = done.await.unwrap_or(Statistics::MIN_WRITES);
        }
        if let Some(statistics) = &statistics
            && refreshing.is_none()
            && since_refresh >= refresh_after
        {
            since_refresh = 0;
            let (db, statistics) = (db.clone(), statistics.clone());
            refreshing = Some(tokio::spawn(async move { refresh(db, &statistics).await }));
        }
        if !open && committing.is_empty() && queue.is_empty() {
            return;
        }
        // Wait for a batch to finish, or, while none commits, for a new write; while one does
        // and a slot is free, until another may start beside it. New writes meanwhile wait in
        // the channel and are taken together: waking this thread for each would slow the
        // commits down.
        let extra_at = tokio::time::Instant::from_std(last_started + EXTRA_AFTER);
        tokio::select! {
            biased;
            Some(done) = committing.join_next_with_id(), if !committing.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    // A batch's task panicked: its writers see their answer dropped ("the
                    // store's writer stopped before answering"), and the writer goes on.
                    Err(e) => {
                        tracing::error!(error = %e, "a batch of writes ended abnormally");
                        e.id()
                    }
                };
                for key in keys_of.remove(&id).unwrap_or_default() {
                    busy.remove(&key);
                }
                last_ended = std::time::Instant::now();
            }
            n = rx.recv_many(&mut incoming, BATCH), if open
                && (committing.is_empty()
                    || (committing.len() < parallel && last_started.elapsed() >= EXTRA_AFTER)) => {
                if n == 0 {
                    open = false;
                }
                queue.extend(incoming.drain(..));
            }
            () = tokio::time::sleep_until(extra_at),
                if !committing.is_empty() && committing.len() < parallel
                    && extra_at > tokio::time::Instant::now() => {}
            else => return,
        }
    }
}

/// Under load, waits a moment for the writes the last batch's answers bring back, so they
/// commit together with the ones already waiting instead of in two alternating halves.
///
/// With one batch committing at a time (SQLite: one write lock, one fsync per commit), the
/// people answered by a batch ask again a fraction of a millisecond after it commits, while
/// others, who came in during that commit, already wait. Starting the next batch at once, or
/// once as many wait as the last batch carried, splits the writers into two groups that take
/// turns, each batch about half of them, each commit's fixed cost paid twice. So after a commit
/// the writer waits up to [`GATHER`] until the ones it just answered are back as well: as many
/// as waited when it started waiting plus as many as the last batch carried ([`gather_target`];
/// PostgreSQL's `commit_delay` waits the same way). Below [`GATHER_FROM`] writes a batch there
/// is no load to gather and nothing waits (the latency at a fixed 200 requests/s is unchanged).
///
/// Measured with 16 clients (the bench's load), three alternated 10 s runs each: waiting only
/// until as many wait as the last batch carried took batches from 7.6 writes to 9.9 and SQLite
/// from 6,900 to 8,000 requests/s (2026-12-06); waiting for the ones just answered too took
/// batches from ~9 to ~13 writes on both stores and SQLite from 7,882 to 8,971 requests/s
/// (+14 %, 2026-12-08, one build switching between the two). On PostgreSQL the runs disagreed
/// by more than any difference (+6 to +18 % in one build, -4 % between released builds an hour
/// later): within the host's noise. A longer wait, 1 ms, did worse on SQLite (7,845), 0.3 ms
/// the same as 0.5.
fn gather(
    rx: &mut mpsc::Receiver<Op>,
    queue: &mut VecDeque<Op>,
    last_batch: usize,
    last_ended: std::time::Instant,
) {
    if last_batch < GATHER_FROM {
        return;
    }
    let target = gather_target(queue.len(), last_batch);
    loop {
        while let Ok(op) = rx.try_recv() {
            queue.push_back(op);
        }
        if queue.len() >= target || last_ended.elapsed() >= GATHER {
            return;
        }
        // Sub-millisecond: tokio's timer counts whole milliseconds. This thread runs only the
        // writer, and with one batch at a time nothing else of it waits meanwhile.
        std::thread::sleep(GATHER_STEP);
    }
}

/// How many writes the next batch waits for (see [`gather`]): those `waiting` now and the
/// `last_batch` just answered, at most a batch.
fn gather_target(waiting: usize, last_batch: usize) -> usize {
    waiting.saturating_add(last_batch).min(BATCH)
}

/// A batch committing this long lets another start beside it (PostgreSQL; see [`run`]).
const EXTRA_AFTER: std::time::Duration = std::time::Duration::from_millis(5);
/// Writes waiting that let another batch start beside the one committing.
const EXTRA_FROM: usize = 64;

/// Longest wait for a batch to gather (see [`gather`]).
const GATHER: std::time::Duration = std::time::Duration::from_micros(500);
/// Steps of that wait.
const GATHER_STEP: std::time::Duration = std::time::Duration::from_micros(50);
/// Smallest last batch that makes the writer wait for the next to gather.
const GATHER_FROM: usize = 4;

/// The next batch: waiting writes in order, at most [`BATCH`], one per key, none whose key is in
/// a batch still committing; the rest stay queued in order. Abandoned writes are dropped.
fn take_batch(queue: &mut VecDeque<Op>, busy: &HashSet<String>) -> Vec<Op> {
    let mut seen = HashSet::new();
    let mut batch = Vec::new();
    let mut later = VecDeque::new();
    while let Some(op) = queue.pop_front() {
        if op.abandoned() {
            continue;
        }
        let key = op.key();
        if batch.len() < BATCH && !busy.contains(&key) && seen.insert(key) {
            batch.push(op);
        } else {
            later.push_back(op);
        }
    }
    *queue = later;
    batch
}

pub(super) const TOO_SLOW: &str = "the store did not finish this write in time; it was not written, unless its commit was already under way";

/// The store did not commit a write within [`WRITE_DEADLINE`]: nothing of it was written, unless
/// its commit had reached the server already (a COMMIT, or PostgreSQL's chained insert, in
/// flight), which may then land after this answer. Nothing is written twice: a new request's
/// second try meets its open key, a transition's second try its guard.
#[derive(Debug, thiserror::Error)]
#[error("{TOO_SLOW}")]
pub struct TooSlow;

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: i32) -> (Op, oneshot::Receiver<Result<bool, String>>) {
        let (reply, rx) = oneshot::channel();
        let t = Transition::new(id, &[State::Pending], State::Cancelled, 0);
        (Op::Change(t, reply), rx)
    }

    fn ids(ops: &[Op]) -> Vec<i32> {
        ops.iter()
            .map(|op| match op {
                Op::Change(t, _) => t.id,
                Op::Create(..) => 0,
            })
            .collect()
    }

    #[test]
    fn a_batch_takes_one_write_per_request_and_none_of_a_request_still_committing() {
        let mut waiting = Vec::new();
        let mut queue = VecDeque::new();
        for id in [1, 2, 1, 3, 2, 4] {
            let (op, rx) = change(id);
            queue.push_back(op);
            waiting.push(rx);
        }
        let busy = HashSet::from([change(3).0.key()]);
        let batch = take_batch(&mut queue, &busy);
        assert_eq!(ids(&batch), [1, 2, 4]);
        // The rest wait, in the order they came.
        assert_eq!(ids(queue.make_contiguous()), [1, 3, 2]);
        let next = take_batch(&mut queue, &HashSet::new());
        assert_eq!(ids(&next), [1, 3, 2]);
        assert!(queue.is_empty());
    }

    #[test]
    fn a_batch_waits_for_the_writers_just_answered_as_well_as_those_waiting() {
        // 7 came in while a batch of 9 committed: the next waits for those 9 to come back too.
        assert_eq!(gather_target(7, 9), 16);
        assert_eq!(gather_target(0, 9), 9);
        assert_eq!(gather_target(BATCH, 9), BATCH);
    }

    #[test]
    fn a_write_whose_submitter_gave_up_is_dropped() {
        let mut queue = VecDeque::new();
        let (gone, rx) = change(1);
        drop(rx);
        let (kept, _rx) = change(2);
        queue.extend([gone, kept]);
        assert_eq!(ids(&take_batch(&mut queue, &HashSet::new())), [2]);
    }
}
