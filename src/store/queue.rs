//! The durable job queue. A job is a row with a lane, a key, a run time, a lease and a retry
//! count. A worker claims due jobs of one lane in one statement (`UPDATE … WHERE id IN (SELECT …
//! FOR UPDATE SKIP LOCKED) RETURNING *` on PostgreSQL; the one SQLite writer makes the same
//! statement atomic), holds them under a short lease that it renews while they run, and settles
//! each one with a statement guarded by its own worker id, so a job another worker took back is
//! never marked by the one that lost it.
//!
//! Every query here is served by a partial index over unfinished jobs (see the migrations).

use std::collections::HashSet;

use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::entities::job;
use super::shapes::{padded_from, runs};
use super::{JobRow, Store};
use crate::domain::job::POSTING_KINDS;
use crate::domain::{Lane, Scheduled};

/// Finished jobs deleted per statement when pruning.
const PRUNE_CHUNK: u64 = 1_000;

/// What a worker asks for when it claims.
#[derive(Debug)]
pub struct Claim<'a> {
    pub lane: Lane,
    pub now: i64,
    pub limit: u64,
    pub worker: &'a str,
    pub lease_end: i64,
    /// Keys not to claim now: this worker already holds as many of them as it may run.
    pub skip_keys: &'a [String],
    /// Kinds not to claim now: their Slack method is rate limited.
    pub skip_kinds: &'a [&'static str],
    /// Channels not to post to now: `chat.postMessage` there is rate limited.
    pub skip_posts_to: &'a [String],
}

/// How a lane's queue looks: due jobs and the oldest of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneStats {
    pub lane: Lane,
    pub due: u64,
    pub oldest_due_run_at: Option<i64>,
}

fn exclude(sel: &mut SelectStatement, c: &Claim<'_>) {
    if !c.skip_keys.is_empty() {
        sel.and_where(job::Column::QueueKey.is_not_in(c.skip_keys.iter().cloned()));
    }
    if !c.skip_kinds.is_empty() {
        sel.and_where(job::Column::Kind.is_not_in(c.skip_kinds.iter().copied()));
    }
    for channel in c.skip_posts_to {
        sel.cond_where(
            Condition::any()
                .add(job::Column::QueueKey.ne(channel.as_str()))
                .add(job::Column::Kind.is_not_in(POSTING_KINDS)),
        );
    }
}

fn job_row(scheduled: &Scheduled, now: i64) -> Result<job::ActiveModel, DbErr> {
    let payload =
        serde_json::to_string(&scheduled.job).map_err(|e| DbErr::Custom(e.to_string()))?;
    Ok(job::ActiveModel {
        kind: Set(scheduled.job.kind().to_string()),
        request_id: Set(scheduled.job.request_id()),
        payload: Set(payload),
        dedupe_key: Set(scheduled.job.dedupe_key()),
        run_at: Set(scheduled.run_at),
        attempts: Set(0),
        locked_until: Set(None),
        done_at: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        lane: Set(scheduled.job.lane().as_str().to_string()),
        queue_key: Set(scheduled.job.queue_key().to_string()),
        locked_by: Set(None),
        outcome: Set(None),
        paced: Set(scheduled.paced),
        ..Default::default()
    })
}

/// Inserts the first jobs of a request just created, in one statement: their dedupe keys name
/// the new request, so none can exist yet.
pub(super) async fn insert_new_jobs<C: ConnectionTrait>(
    db: &C,
    jobs: &[Scheduled],
    now: i64,
) -> Result<(), DbErr> {
    if jobs.is_empty() {
        return Ok(());
    }
    for run in runs(job_rows(jobs, now)?) {
        job::Entity::insert_many(run)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// The rows of jobs to insert.
pub(super) fn job_rows(jobs: &[Scheduled], now: i64) -> Result<Vec<job::ActiveModel>, DbErr> {
    jobs.iter().map(|s| job_row(s, now)).collect()
}

/// Inserts jobs inside the caller's transaction. A job with a dedupe key that already exists is
/// not inserted again; if the new one is due earlier, the existing one is brought forward (an
/// early `/jit revoke` moves the expiry job to now).
pub(super) async fn insert_jobs<C: ConnectionTrait>(
    db: &C,
    jobs: &[Scheduled],
    now: i64,
) -> Result<(), DbErr> {
    let (unique, plain): (Vec<&Scheduled>, Vec<&Scheduled>) =
        jobs.iter().partition(|s| s.job.dedupe_key().is_some());
    if !plain.is_empty() {
        let rows = plain
            .into_iter()
            .map(|s| job_row(s, now))
            .collect::<Result<Vec<_>, _>>()?;
        for run in runs(rows) {
            job::Entity::insert_many(run)
                .exec_without_returning(db)
                .await?;
        }
    }
    if unique.is_empty() {
        return Ok(());
    }
    let rows = unique
        .iter()
        .map(|s| job_row(s, now))
        .collect::<Result<Vec<_>, _>>()?;
    let mut inserted: HashSet<String> = HashSet::new();
    for run in runs(rows) {
        if let sea_orm::TryInsertResult::Inserted(models) = job::Entity::insert_many(run)
            .on_conflict_do_nothing_on([job::Column::DedupeKey])
            .exec_with_returning_many(db)
            .await?
        {
            inserted.extend(models.into_iter().filter_map(|m| m.dedupe_key));
        }
    }
    for scheduled in unique {
        let Some(key) = scheduled.job.dedupe_key() else {
            continue;
        };
        if inserted.contains(&key) {
            continue;
        }
        job::Entity::update_many()
            .col_expr(job::Column::RunAt, Expr::value(scheduled.run_at))
            .filter(job::Column::DedupeKey.eq(key))
            .filter(job::Column::DoneAt.is_null())
            .filter(job::Column::RunAt.gt(scheduled.run_at))
            .exec(db)
            .await?;
    }
    Ok(())
}

impl Store {
    pub async fn enqueue(&self, jobs: &[Scheduled], now: i64) -> anyhow::Result<()> {
        insert_jobs(&self.db, jobs, now).await?;
        Ok(())
    }

    /// Frees the jobs of a lane whose lease ran out (their worker died or lost the store), so
    /// they can be claimed again; returns how many.
    pub async fn release_expired(&self, lane: Lane, now: i64) -> anyhow::Result<u64> {
        let result = job::Entity::update_many()
            .col_expr(job::Column::LockedUntil, Expr::value(Option::<i64>::None))
            .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
            .filter(job::Column::DoneAt.is_null())
            .filter(job::Column::Lane.eq(lane.as_str()))
            .filter(job::Column::LockedUntil.lte(now))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }

    /// Claims up to `limit` free due jobs of a lane for this worker, oldest first, in one
    /// statement. (Jobs whose lease ran out are freed first by [`Store::release_expired`].)
    pub async fn claim(&self, c: &Claim<'_>) -> anyhow::Result<Vec<JobRow>> {
        let mut due = Query::select();
        due.column(job::Column::Id)
            .from(job::Entity)
            .and_where(job::Column::DoneAt.is_null())
            .and_where(job::Column::LockedUntil.is_null())
            .and_where(job::Column::Lane.eq(c.lane.as_str()))
            .and_where(job::Column::RunAt.lte(c.now));
        exclude(&mut due, c);
        due.order_by(job::Column::RunAt, sea_orm::Order::Asc)
            .limit(c.limit);
        if !self.is_sqlite() {
            due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let mut rows = job::Entity::update_many()
            .col_expr(job::Column::LockedUntil, Expr::value(c.lease_end))
            .col_expr(job::Column::LockedBy, Expr::value(c.worker))
            .col_expr(
                job::Column::Attempts,
                Expr::col(job::Column::Attempts).add(1),
            )
            .filter(job::Column::Id.in_subquery(due))
            .exec_with_returning(&self.db)
            .await?;
        rows.sort_by_key(|r| (r.run_at, r.id));
        Ok(rows)
    }

    /// When this lane next has work for this worker: the earliest run time of a free job it may
    /// claim, or the end of the first lease to run out (a dead worker's jobs are taken back
    /// then; this worker's own leases are renewed before they run out).
    /// The second is also returned alone, so the caller knows when to free expired leases.
    ///
    /// Free jobs are looked for only up to `until` (the caller looks again by then anyway):
    /// the keys and channels it skips may hold a long queue (a million cards booked into one
    /// channel's pace), and walking all of it on every wake-up cost a core (147 ms a look
    /// with 100,000 booked).
    pub async fn next_due(
        &self,
        c: &Claim<'_>,
        until: i64,
    ) -> anyhow::Result<(Option<i64>, Option<i64>)> {
        let mut free = Query::select();
        free.column(job::Column::RunAt)
            .from(job::Entity)
            .and_where(job::Column::DoneAt.is_null())
            .and_where(job::Column::Lane.eq(c.lane.as_str()))
            .and_where(job::Column::LockedUntil.is_null())
            .and_where(job::Column::RunAt.lte(until));
        exclude(&mut free, c);
        free.order_by(job::Column::RunAt, sea_orm::Order::Asc)
            .limit(1);
        let next_free: Option<i64> = match self.read.query_one(&free).await? {
            Some(row) => Some(row.try_get("", "run_at")?),
            None => None,
        };
        let mut leased = Query::select();
        leased
            .column(job::Column::LockedUntil)
            .from(job::Entity)
            .and_where(job::Column::DoneAt.is_null())
            .and_where(job::Column::Lane.eq(c.lane.as_str()))
            .and_where(job::Column::LockedUntil.is_not_null())
            .order_by(job::Column::LockedUntil, sea_orm::Order::Asc)
            .limit(1);
        let next_lease: Option<i64> = match self.read.query_one(&leased).await? {
            Some(row) => row.try_get("", "locked_until")?,
            None => None,
        };
        Ok((
            [next_free, next_lease].into_iter().flatten().min(),
            next_lease,
        ))
    }

    /// Settles a job this worker holds: `outcome` is `done`, `failed` (permanently) or `dropped`.
    pub async fn finish_job(
        &self,
        id: i32,
        worker: &str,
        now: i64,
        outcome: &str,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut update = job::Entity::update_many()
            .col_expr(job::Column::DoneAt, Expr::value(now))
            .col_expr(job::Column::Outcome, Expr::value(outcome))
            .col_expr(job::Column::LockedUntil, Expr::value(Option::<i64>::None))
            .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None));
        if let Some(error) = error {
            update = update.col_expr(job::Column::LastError, Expr::value(error));
        }
        update
            .filter(job::Column::Id.eq(id))
            .filter(job::Column::LockedBy.eq(worker))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Marks jobs this worker holds as done, in one statement (completions are group-committed).
    pub async fn finish_jobs(&self, ids: &[i32], worker: &str, now: i64) -> anyhow::Result<()> {
        job::Entity::update_many()
            .col_expr(job::Column::DoneAt, Expr::value(now))
            .col_expr(job::Column::Outcome, Expr::value("done"))
            .col_expr(job::Column::LockedUntil, Expr::value(Option::<i64>::None))
            .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
            .filter(job::Column::Id.is_in(padded_from(ids.iter().copied())))
            .filter(job::Column::LockedBy.eq(worker))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Puts a job this worker holds back in the queue, due at `run_at`. A retry counts as an
    /// attempt; a deferral (waiting on something, not failing) does not.
    pub async fn requeue_job(
        &self,
        id: i32,
        worker: &str,
        run_at: i64,
        error: Option<&str>,
        count_attempt: bool,
    ) -> anyhow::Result<()> {
        let mut update = job::Entity::update_many()
            .col_expr(job::Column::RunAt, Expr::value(run_at))
            .col_expr(job::Column::LockedUntil, Expr::value(Option::<i64>::None))
            .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None));
        if let Some(error) = error {
            // A failed post takes its turn in the channel's pace again when it is retried.
            update = update
                .col_expr(job::Column::LastError, Expr::value(error))
                .col_expr(job::Column::Paced, Expr::value(false));
        }
        if !count_attempt {
            update = update.col_expr(
                job::Column::Attempts,
                Expr::col(job::Column::Attempts).sub(1),
            );
        }
        update
            .filter(job::Column::Id.eq(id))
            .filter(job::Column::LockedBy.eq(worker))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Books Slack posts this worker holds into their channel's pace: each is released, due at
    /// its slot, and marked so it runs then without being paced again.
    pub async fn pace_jobs(&self, slots: &[(i32, i64)], worker: &str) -> anyhow::Result<()> {
        for run in runs(slots.to_vec()) {
            self.pace_run(&run, worker).await?;
        }
        Ok(())
    }

    /// [`Store::pace_jobs`] for one run of the few statement shapes.
    async fn pace_run(&self, slots: &[(i32, i64)], worker: &str) -> anyhow::Result<()> {
        let mut run_at = sea_orm::sea_query::CaseStatement::new();
        for (id, slot) in slots {
            run_at = run_at.case(job::Column::Id.eq(*id), Expr::value(*slot));
        }
        let run_at = run_at.finally(Expr::col(job::Column::RunAt));
        job::Entity::update_many()
            .col_expr(job::Column::RunAt, run_at.into())
            .col_expr(job::Column::Paced, Expr::value(true))
            .col_expr(job::Column::LockedUntil, Expr::value(Option::<i64>::None))
            .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
            .col_expr(
                job::Column::Attempts,
                Expr::col(job::Column::Attempts).sub(1),
            )
            .filter(job::Column::Id.is_in(slots.iter().map(|(id, _)| *id)))
            .filter(job::Column::LockedBy.eq(worker))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Extends the leases of these jobs, where this worker still holds them; returns how many.
    pub async fn renew_leases(
        &self,
        ids: &[i32],
        worker: &str,
        lease_end: i64,
    ) -> anyhow::Result<u64> {
        let result = job::Entity::update_many()
            .col_expr(job::Column::LockedUntil, Expr::value(lease_end))
            .filter(job::Column::Id.is_in(padded_from(ids.iter().copied())))
            .filter(job::Column::LockedBy.eq(worker))
            .filter(job::Column::DoneAt.is_null())
            .exec(&self.lease)
            .await?;
        Ok(result.rows_affected)
    }

    /// Takes back every lease at once. Only for a store one process owns (SQLite): whoever held
    /// them is gone.
    pub async fn release_all_leases(&self) -> anyhow::Result<u64> {
        let result = job::Entity::update_many()
            .col_expr(job::Column::LockedUntil, Expr::value(Option::<i64>::None))
            .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
            .filter(job::Column::DoneAt.is_null())
            .filter(job::Column::LockedUntil.is_not_null())
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }

    /// Hands back the unfinished jobs `worker` holds (it is stopping): any worker may claim them
    /// at once.
    pub async fn release_leases_of(&self, worker: &str) -> anyhow::Result<u64> {
        let result = job::Entity::update_many()
            .col_expr(job::Column::LockedUntil, Expr::value(Option::<i64>::None))
            .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
            .filter(job::Column::DoneAt.is_null())
            .filter(job::Column::LockedBy.eq(worker))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }

    /// Is the job with this dedupe key still unfinished (queued, or running somewhere)?
    pub async fn job_unfinished(&self, dedupe_key: &str) -> anyhow::Result<bool> {
        Ok(job::Entity::find()
            .select_only()
            .column(job::Column::Id)
            .filter(job::Column::DedupeKey.eq(dedupe_key))
            .filter(job::Column::DoneAt.is_null())
            .into_tuple::<i32>()
            .one(&self.read)
            .await?
            .is_some())
    }

    /// Free due jobs per lane, and the run time of the oldest (for `/metrics`; jobs a worker holds
    /// are in its own gauges).
    pub async fn lane_stats(&self, now: i64) -> anyhow::Result<Vec<LaneStats>> {
        let rows: Vec<(String, i64, Option<i64>)> = job::Entity::find()
            .select_only()
            .column(job::Column::Lane)
            .column_as(Expr::col(job::Column::Id).count(), "due")
            .column_as(Expr::col(job::Column::RunAt).min(), "oldest")
            .filter(job::Column::DoneAt.is_null())
            .filter(job::Column::LockedUntil.is_null())
            .filter(job::Column::RunAt.lte(now))
            .group_by(job::Column::Lane)
            .into_tuple()
            .all(&self.read)
            .await?;
        Ok(Lane::ALL
            .into_iter()
            .map(|lane| {
                let row = rows.iter().find(|(l, _, _)| l == lane.as_str());
                LaneStats {
                    lane,
                    due: row.map(|r| Ord::max(r.1, 0) as u64).unwrap_or(0),
                    oldest_due_run_at: row.and_then(|r| r.2),
                }
            })
            .collect())
    }

    /// Deletes jobs finished before `finished_before`, a chunk per statement so no statement holds
    /// the store long; returns how many. (The audit trail is what is kept for ever; a finished job
    /// is only how the work was done.)
    pub async fn prune_jobs(&self, finished_before: i64) -> anyhow::Result<u64> {
        let mut pruned = 0;
        loop {
            // Two index-served steps: the oldest finished ids (by `done_at`), then those ids (by
            // primary key). One `DELETE … WHERE id IN (SELECT …)` would hash-join against a scan
            // of the whole table.
            let ids: Vec<i32> = job::Entity::find()
                .select_only()
                .column(job::Column::Id)
                .filter(job::Column::DoneAt.is_not_null())
                .filter(job::Column::DoneAt.lt(finished_before))
                .order_by_asc(job::Column::DoneAt)
                .limit(PRUNE_CHUNK)
                .into_tuple()
                .all(&self.read)
                .await?;
            if ids.is_empty() {
                return Ok(pruned);
            }
            let result = job::Entity::delete_many()
                .filter(job::Column::Id.is_in(padded_from(ids.iter().copied())))
                .filter(job::Column::DoneAt.is_not_null())
                .exec(&self.db)
                .await?;
            pruned += result.rows_affected;
            if (ids.len() as u64) < PRUNE_CHUNK {
                return Ok(pruned);
            }
        }
    }

    /// Every unfinished job, oldest first (tests and the demo look at the queue).
    pub async fn pending_jobs(&self) -> anyhow::Result<Vec<JobRow>> {
        Ok(job::Entity::find()
            .filter(job::Column::DoneAt.is_null())
            .order_by_asc(job::Column::Id)
            .all(&self.read)
            .await?)
    }

    /// Every job of a request, finished or not, oldest first.
    pub async fn jobs_of(&self, request_id: i32) -> anyhow::Result<Vec<JobRow>> {
        Ok(job::Entity::find()
            .filter(job::Column::RequestId.eq(request_id))
            .order_by_asc(job::Column::Id)
            .all(&self.read)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Job;

    fn dm(user: &str, at: i64) -> Scheduled {
        Job::Dm {
            user: user.into(),
            text: "hi".into(),
            done: None,
        }
        .at(at)
    }

    /// A skipped key's long queue is not walked: only free jobs due by `until` count, and a
    /// later one is found once the window reaches it.
    #[tokio::test]
    async fn the_next_wake_up_looks_only_as_far_as_asked() {
        let (store, dir) = crate::store::fixtures::sqlite_store("queue").await;
        let busy: Vec<Scheduled> = (0..50).map(|i| dm("U0BUSY", 1_000 + i)).collect();
        store.enqueue(&busy, 0).await.expect("enqueue");
        store
            .enqueue(&[dm("U0LATER", 5_000)], 0)
            .await
            .expect("enqueue");
        let skip = vec!["U0BUSY".to_string()];
        let claim = Claim {
            lane: Lane::Messages,
            now: 0,
            limit: 16,
            worker: "w",
            lease_end: 60_000,
            skip_keys: &skip,
            skip_kinds: &[],
            skip_posts_to: &[],
        };
        assert_eq!(
            store.next_due(&claim, 4_999).await.expect("next due"),
            (None, None),
            "the busy key's jobs are skipped and the later one is past the window"
        );
        assert_eq!(
            store.next_due(&claim, 5_000).await.expect("next due"),
            (Some(5_000), None)
        );
        let all = Claim {
            skip_keys: &[],
            ..claim
        };
        assert_eq!(
            store.next_due(&all, 5_000).await.expect("next due"),
            (Some(1_000), None)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
