//! The only module that knows sea-orm. One method per operation; every state change is one
//! guarded statement (`… WHERE state IN (…)`) inside a transaction with its side effects (jobs,
//! audit events), so two clicks or two replicas cannot both win and a crash loses nothing.

pub mod entities;

use std::time::Duration;

use anyhow::Context;
use migration::MigratorTrait;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, SqlErr, TransactionTrait,
};

use crate::domain::{EndReason, Job, Scheduled, State};
use entities::{approval, audit, grant, job, request};
pub use entities::{
    approval::Model as Approval, audit::Model as AuditEvent, grant::Model as Grant,
    job::Model as JobRow, request::Model as Request,
};

/// How long a claimed job stays reserved for the worker that claimed it; past that another
/// worker may take it (the first one is presumed dead).
pub const JOB_LEASE: Duration = Duration::from_secs(60);
/// SQLite waits this long for a lock before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

/// What a new request looks like before it has an id.
#[derive(Clone, Debug)]
pub struct NewRequest {
    pub resource: String,
    pub requester: String,
    pub duration_secs: i64,
    pub reason: String,
    pub approvals_needed: i32,
    pub auto_approved: bool,
    pub channel: String,
}

/// The provider snapshot a grant keeps.
#[derive(Clone, Debug)]
pub struct NewGrant {
    pub provider_name: String,
    pub provider: serde_json::Value,
    pub grant_shape: serde_json::Value,
    pub identity: serde_json::Value,
}

#[derive(Clone, Debug)]
pub struct NewAudit {
    pub actor: String,
    pub action: String,
    pub detail: serde_json::Value,
}

pub fn audit(actor: &str, action: &str, detail: serde_json::Value) -> NewAudit {
    NewAudit {
        actor: actor.to_string(),
        action: action.to_string(),
        detail,
    }
}

/// A guarded state change and what goes with it.
#[derive(Debug)]
pub struct Transition<'a> {
    pub id: i32,
    pub from: &'a [State],
    pub to: State,
    pub now: i64,
    /// Who decided, for approve/deny.
    pub decided_by: Option<String>,
    pub note: Option<String>,
    pub grant: Option<GrantChange>,
    pub jobs: Vec<Scheduled>,
    /// Queued jobs this change makes pointless; they are marked done with it.
    pub settles: Vec<Job>,
    pub audit: Vec<NewAudit>,
}

impl<'a> Transition<'a> {
    pub fn new(id: i32, from: &'a [State], to: State, now: i64) -> Self {
        Self {
            id,
            from,
            to,
            now,
            decided_by: None,
            note: None,
            grant: None,
            jobs: Vec::new(),
            // Leaving `pending` decides the request: its timeout has nothing left to do.
            settles: if from.contains(&State::Pending) && to != State::Pending {
                vec![Job::Timeout { request_id: id }]
            } else {
                Vec::new()
            },
            audit: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub enum GrantChange {
    Create(NewGrant),
    Activate { granted_at: i64, expires_at: i64 },
    End(EndReason),
    Ended,
}

/// `create_request` found an open request for the same person and resource.
#[derive(Debug)]
pub struct AlreadyOpen(pub Option<Request>);

fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

fn open_key(requester: &str, resource: &str) -> String {
    format!("{requester}|{resource}")
}

fn states(list: &[State]) -> Vec<&'static str> {
    list.iter().map(|s| s.as_str()).collect()
}

async fn insert_jobs<C: ConnectionTrait>(
    db: &C,
    jobs: &[Scheduled],
    now: i64,
) -> Result<(), DbErr> {
    for scheduled in jobs {
        let payload =
            serde_json::to_string(&scheduled.job).map_err(|e| DbErr::Custom(e.to_string()))?;
        let row = job::ActiveModel {
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
            ..Default::default()
        };
        let key = scheduled.job.dedupe_key();
        job::Entity::insert(row)
            .on_conflict_do_nothing_on([job::Column::DedupeKey])
            .exec(db)
            .await?;
        if let Some(key) = key {
            // The job already existed: the earlier of the two schedules wins (an early
            // `/jit revoke` brings the expiry job forward).
            job::Entity::update_many()
                .col_expr(job::Column::RunAt, Expr::value(scheduled.run_at))
                .filter(job::Column::DedupeKey.eq(key))
                .filter(job::Column::DoneAt.is_null())
                .filter(job::Column::RunAt.gt(scheduled.run_at))
                .exec(db)
                .await?;
        }
    }
    Ok(())
}

async fn insert_audit<C: ConnectionTrait>(
    db: &C,
    request_id: Option<i32>,
    events: &[NewAudit],
    now: i64,
) -> Result<(), DbErr> {
    for event in events {
        audit::ActiveModel {
            at: Set(now),
            request_id: Set(request_id),
            actor: Set(event.actor.clone()),
            action: Set(event.action.clone()),
            detail: Set(event.detail.to_string()),
            ..Default::default()
        }
        .insert(db)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Connects to `sqlite://…` or `postgres://…`. SQLite runs in WAL mode with a busy timeout.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        let mut options = ConnectOptions::new(url.to_string());
        options
            .sqlx_logging(false)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(15))
            .map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true)
            });
        if url.starts_with("sqlite:") {
            // One writer at a time in SQLite anyway; a small pool avoids lock churn.
            options.max_connections(4);
        } else {
            options.max_connections(16);
        }
        let db = Database::connect(options)
            .await
            .with_context(|| format!("cannot open the database at {}", redact_url(url)))?;
        Ok(Store { db })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        migration::Migrator::up(&self.db, None)
            .await
            .context("applying migrations")
    }

    pub async fn ping(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    // ---- requests -------------------------------------------------------------------------

    /// Stores a new request with its jobs and audit event, or says which open request of the same
    /// person for the same resource stands in the way.
    pub async fn create_request(
        &self,
        new: NewRequest,
        state: State,
        grant: Option<NewGrant>,
        jobs: impl FnOnce(i32) -> Vec<Scheduled>,
        event: NewAudit,
        now: i64,
    ) -> anyhow::Result<Result<Request, AlreadyOpen>> {
        let txn = self.db.begin().await?;
        let row = request::ActiveModel {
            resource: Set(new.resource.clone()),
            requester: Set(new.requester.clone()),
            duration_secs: Set(new.duration_secs),
            reason: Set(new.reason),
            state: Set(state.as_str().to_string()),
            open_key: Set(Some(open_key(&new.requester, &new.resource))),
            approvals_needed: Set(new.approvals_needed),
            auto_approved: Set(new.auto_approved),
            channel: Set(new.channel),
            card_ts: Set(None),
            created_at: Set(now),
            decided_at: Set(new.auto_approved.then_some(now)),
            decided_by: Set(None),
            decision_note: Set(None),
            updated_at: Set(now),
            ..Default::default()
        };
        let inserted = match row.insert(&txn).await {
            Ok(r) => r,
            Err(e) if is_unique_violation(&e) => {
                txn.rollback().await?;
                let existing = self.find_open(&new.requester, &new.resource).await?;
                return Ok(Err(AlreadyOpen(existing)));
            }
            Err(e) => return Err(e).context("storing the request"),
        };
        if let Some(g) = grant {
            insert_grant(&txn, inserted.id, g).await?;
        }
        insert_jobs(&txn, &jobs(inserted.id), now).await?;
        insert_audit(&txn, Some(inserted.id), &[event], now).await?;
        txn.commit().await?;
        Ok(Ok(inserted))
    }

    pub async fn find_open(
        &self,
        requester: &str,
        resource: &str,
    ) -> anyhow::Result<Option<Request>> {
        Ok(request::Entity::find()
            .filter(request::Column::OpenKey.eq(open_key(requester, resource)))
            .one(&self.db)
            .await?)
    }

    pub async fn request(&self, id: i32) -> anyhow::Result<Option<Request>> {
        Ok(request::Entity::find_by_id(id).one(&self.db).await?)
    }

    /// A person's most recent requests, newest first.
    pub async fn requests_of(&self, requester: &str, limit: u64) -> anyhow::Result<Vec<Request>> {
        Ok(request::Entity::find()
            .filter(request::Column::Requester.eq(requester))
            .order_by_desc(request::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    pub async fn requests_in_state(
        &self,
        state: State,
        limit: u64,
    ) -> anyhow::Result<Vec<Request>> {
        Ok(request::Entity::find()
            .filter(request::Column::State.eq(state.as_str()))
            .order_by_asc(request::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    pub async fn set_card(&self, id: i32, ts: &str) -> anyhow::Result<()> {
        request::Entity::update_many()
            .col_expr(request::Column::CardTs, Expr::value(ts.to_string()))
            .filter(request::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Applies a guarded transition with its effects; `false` when the request was not in one
    /// of `from` (someone else won, or it had already moved on), in which case nothing changed.
    pub async fn transition(&self, t: Transition<'_>) -> anyhow::Result<bool> {
        let txn = self.db.begin().await?;
        let mut update = request::Entity::update_many()
            .col_expr(request::Column::State, Expr::value(t.to.as_str()))
            .col_expr(request::Column::UpdatedAt, Expr::value(t.now));
        if !t.to.is_open() {
            update = update.col_expr(
                request::Column::OpenKey,
                Expr::value(Option::<String>::None),
            );
        }
        if let Some(by) = &t.decided_by {
            update = update
                .col_expr(request::Column::DecidedBy, Expr::value(by.clone()))
                .col_expr(request::Column::DecidedAt, Expr::value(t.now));
        }
        if let Some(note) = &t.note {
            update = update.col_expr(request::Column::DecisionNote, Expr::value(note.clone()));
        }
        let result = update
            .filter(request::Column::Id.eq(t.id))
            .filter(request::Column::State.is_in(states(t.from)))
            .exec(&txn)
            .await?;
        if result.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        match t.grant {
            None => {}
            Some(GrantChange::Create(g)) => insert_grant(&txn, t.id, g).await?,
            Some(GrantChange::Activate {
                granted_at,
                expires_at,
            }) => {
                grant::Entity::update_many()
                    .col_expr(grant::Column::GrantedAt, Expr::value(granted_at))
                    .col_expr(grant::Column::ExpiresAt, Expr::value(expires_at))
                    .filter(grant::Column::RequestId.eq(t.id))
                    .exec(&txn)
                    .await?;
            }
            Some(GrantChange::End(reason)) => {
                grant::Entity::update_many()
                    .col_expr(grant::Column::EndReason, Expr::value(reason.as_str()))
                    .filter(grant::Column::RequestId.eq(t.id))
                    .filter(grant::Column::EndReason.is_null())
                    .exec(&txn)
                    .await?;
            }
            Some(GrantChange::Ended) => {
                grant::Entity::update_many()
                    .col_expr(grant::Column::EndedAt, Expr::value(t.now))
                    .filter(grant::Column::RequestId.eq(t.id))
                    .exec(&txn)
                    .await?;
            }
        }
        insert_jobs(&txn, &t.jobs, t.now).await?;
        for key in t.settles.iter().filter_map(Job::dedupe_key) {
            job::Entity::update_many()
                .col_expr(job::Column::DoneAt, Expr::value(t.now))
                .filter(job::Column::DedupeKey.eq(key))
                .filter(job::Column::DoneAt.is_null())
                .filter(job::Column::LockedUntil.is_null())
                .exec(&txn)
                .await?;
        }
        insert_audit(&txn, Some(t.id), &t.audit, t.now).await?;
        txn.commit().await?;
        Ok(true)
    }

    // ---- approvals ------------------------------------------------------------------------

    /// Records one person's decision; `false` if they already decided this request.
    pub async fn record_decision(
        &self,
        request_id: i32,
        approver: &str,
        decision: &str,
        now: i64,
    ) -> anyhow::Result<bool> {
        let row = approval::ActiveModel {
            request_id: Set(request_id),
            approver: Set(approver.to_string()),
            decision: Set(decision.to_string()),
            created_at: Set(now),
            ..Default::default()
        };
        match row.insert(&self.db).await {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e).context("recording a decision"),
        }
    }

    /// Decisions on a request, oldest first.
    pub async fn decisions(&self, request_id: i32) -> anyhow::Result<Vec<Approval>> {
        Ok(approval::Entity::find()
            .filter(approval::Column::RequestId.eq(request_id))
            .order_by_asc(approval::Column::Id)
            .all(&self.db)
            .await?)
    }

    // ---- grants ---------------------------------------------------------------------------

    pub async fn grant(&self, request_id: i32) -> anyhow::Result<Option<Grant>> {
        Ok(grant::Entity::find()
            .filter(grant::Column::RequestId.eq(request_id))
            .one(&self.db)
            .await?)
    }

    /// Records, once, whether the identity held the access before jitbot granted it.
    pub async fn set_already_held(&self, request_id: i32, held: bool) -> anyhow::Result<()> {
        grant::Entity::update_many()
            .col_expr(grant::Column::AlreadyHeld, Expr::value(held))
            .filter(grant::Column::RequestId.eq(request_id))
            .filter(grant::Column::AlreadyHeld.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Completes the identity a grant sends (e.g. with the Slack profile email), before the grant.
    pub async fn set_grant_identity(
        &self,
        request_id: i32,
        identity: &serde_json::Value,
    ) -> anyhow::Result<()> {
        grant::Entity::update_many()
            .col_expr(grant::Column::Identity, Expr::value(identity.to_string()))
            .filter(grant::Column::RequestId.eq(request_id))
            .filter(grant::Column::GrantedAt.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn set_grant_error(
        &self,
        request_id: i32,
        error: Option<&str>,
        ended_at: Option<i64>,
    ) -> anyhow::Result<()> {
        let mut update = grant::Entity::update_many().col_expr(
            grant::Column::LastError,
            Expr::value(error.map(str::to_string)),
        );
        if let Some(at) = ended_at {
            update = update.col_expr(grant::Column::EndedAt, Expr::value(at));
        }
        update
            .filter(grant::Column::RequestId.eq(request_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    // ---- jobs -----------------------------------------------------------------------------

    pub async fn enqueue(&self, jobs: &[Scheduled], now: i64) -> anyhow::Result<()> {
        insert_jobs(&self.db, jobs, now).await?;
        Ok(())
    }

    /// Claims up to `limit` due jobs for this worker. Each claim is one guarded UPDATE, so two
    /// workers never run the same job at once; PostgreSQL also skips rows another worker holds.
    pub async fn claim_due(&self, now: i64, limit: u64) -> anyhow::Result<Vec<JobRow>> {
        let free = sea_orm::Condition::any()
            .add(job::Column::LockedUntil.is_null())
            .add(job::Column::LockedUntil.lte(now));
        let candidates = {
            let txn = self.db.begin().await?;
            let rows = job::Entity::find()
                .filter(job::Column::DoneAt.is_null())
                .filter(job::Column::RunAt.lte(now))
                .filter(free.clone())
                .order_by_asc(job::Column::RunAt)
                .limit(limit)
                .lock_with_behavior(
                    sea_orm::sea_query::LockType::Update,
                    sea_orm::sea_query::LockBehavior::SkipLocked,
                )
                .all(&txn)
                .await?;
            txn.commit().await?;
            rows
        };
        let lease_end = now + JOB_LEASE.as_millis() as i64;
        let mut claimed = Vec::new();
        for row in candidates {
            let result = job::Entity::update_many()
                .col_expr(job::Column::LockedUntil, Expr::value(lease_end))
                .col_expr(
                    job::Column::Attempts,
                    Expr::col(job::Column::Attempts).add(1),
                )
                .filter(job::Column::Id.eq(row.id))
                .filter(job::Column::DoneAt.is_null())
                .filter(free.clone())
                .exec(&self.db)
                .await?;
            if result.rows_affected == 1 {
                claimed.push(JobRow {
                    attempts: row.attempts + 1,
                    locked_until: Some(lease_end),
                    ..row
                });
            }
        }
        Ok(claimed)
    }

    pub async fn job_done(&self, id: i32, now: i64) -> anyhow::Result<()> {
        job::Entity::update_many()
            .col_expr(job::Column::DoneAt, Expr::value(now))
            .col_expr(job::Column::LockedUntil, Expr::value(Option::<i64>::None))
            .filter(job::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    pub async fn job_retry(&self, id: i32, run_at: i64, error: &str) -> anyhow::Result<()> {
        job::Entity::update_many()
            .col_expr(job::Column::RunAt, Expr::value(run_at))
            .col_expr(job::Column::LockedUntil, Expr::value(Option::<i64>::None))
            .col_expr(job::Column::LastError, Expr::value(error.to_string()))
            .filter(job::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// When the next unfinished job becomes runnable (its `run_at`, or the end of its lease).
    pub async fn next_job_at(&self) -> anyhow::Result<Option<i64>> {
        let next_free = job::Entity::find()
            .filter(job::Column::DoneAt.is_null())
            .filter(job::Column::LockedUntil.is_null())
            .order_by_asc(job::Column::RunAt)
            .one(&self.db)
            .await?
            .map(|j| j.run_at);
        let next_lease = job::Entity::find()
            .filter(job::Column::DoneAt.is_null())
            .filter(job::Column::LockedUntil.is_not_null())
            .order_by_asc(job::Column::LockedUntil)
            .one(&self.db)
            .await?
            .and_then(|j| j.locked_until.map(|l| Ord::max(l, j.run_at)));
        Ok([next_free, next_lease].into_iter().flatten().min())
    }

    pub async fn pending_jobs(&self) -> anyhow::Result<Vec<JobRow>> {
        Ok(job::Entity::find()
            .filter(job::Column::DoneAt.is_null())
            .order_by_asc(job::Column::Id)
            .all(&self.db)
            .await?)
    }

    // ---- audit ----------------------------------------------------------------------------

    pub async fn audit(
        &self,
        request_id: Option<i32>,
        event: NewAudit,
        now: i64,
    ) -> anyhow::Result<()> {
        insert_audit(&self.db, request_id, &[event], now).await?;
        Ok(())
    }

    /// Every audit event, oldest first (optionally of one request).
    pub async fn audit_events(&self, request_id: Option<i32>) -> anyhow::Result<Vec<AuditEvent>> {
        let mut query = audit::Entity::find().order_by_asc(audit::Column::Id);
        if let Some(id) = request_id {
            query = query.filter(audit::Column::RequestId.eq(id));
        }
        Ok(query.all(&self.db).await?)
    }

    pub async fn count_requests(&self) -> anyhow::Result<u64> {
        use sea_orm::PaginatorTrait;
        Ok(request::Entity::find().count(&self.db).await?)
    }
}

async fn insert_grant<C: ConnectionTrait>(
    db: &C,
    request_id: i32,
    g: NewGrant,
) -> Result<(), DbErr> {
    grant::ActiveModel {
        request_id: Set(request_id),
        provider_name: Set(g.provider_name),
        provider: Set(g.provider.to_string()),
        grant_shape: Set(g.grant_shape.to_string()),
        identity: Set(g.identity.to_string()),
        already_held: Set(None),
        granted_at: Set(None),
        expires_at: Set(None),
        end_reason: Set(None),
        ended_at: Set(None),
        last_error: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

/// A database URL with any password replaced, fit for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://jit:s3cret@db:5432/jit"),
            "postgres://jit:***@db:5432/jit"
        );
        assert_eq!(
            redact_url("sqlite://jitbot.db?mode=rwc"),
            "sqlite://jitbot.db?mode=rwc"
        );
    }
}
