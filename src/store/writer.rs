//! Group commit for state changes. Every [`Transition`] goes to one writer task, which takes
//! whatever transitions are waiting (up to [`BATCH`]) and applies them in one transaction with
//! set-based statements: one guarded `UPDATE … WHERE id IN (…) AND state IN (…) RETURNING id` per
//! kind of change, one insert for all their jobs, one for all their audit events. A storm of
//! 10,000 expiries costs a few statements per batch instead of six per request, which matters
//! most on SQLite, where every statement is a round trip to the connection's own thread.
//!
//! Each transition is still all-or-nothing and still guarded: one whose request was not in a
//! `from` state changes nothing and answers `false`. A batch carries at most one transition per
//! request. If a batch fails as a whole, each of its transitions is retried alone, so one bad
//! change never takes the others down with it.

use std::collections::{BTreeMap, HashSet, VecDeque};

use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

use super::entities::{grant, job, request};
use super::queue::insert_jobs;
use super::requests::{GrantChange, Transition, apply, audit_rows, grant_row};
use crate::domain::State;

/// Most transitions committed together.
const BATCH: usize = 256;
/// Transitions waiting for the writer before submitters wait too.
const QUEUE: usize = 8_192;

struct Submitted {
    t: Transition,
    reply: oneshot::Sender<Result<bool, String>>,
}

/// The submitting side; cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Submitted>,
}

impl Writer {
    /// Starts the writer task on `db`; it ends when the last [`Writer`] is dropped.
    pub(super) fn start(db: DatabaseConnection) -> Writer {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, rx));
        Writer { tx }
    }

    pub(super) async fn submit(&self, t: Transition) -> anyhow::Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Submitted { t, reply })
            .await
            .map_err(|_| anyhow::anyhow!("the store's writer has stopped"))?;
        match answer.await {
            Ok(Ok(changed)) => Ok(changed),
            Ok(Err(e)) => Err(anyhow::anyhow!("{e}")),
            Err(_) => Err(anyhow::anyhow!(
                "the store's writer stopped before answering"
            )),
        }
    }
}

async fn run(db: DatabaseConnection, mut rx: mpsc::Receiver<Submitted>) {
    let mut queue: VecDeque<Submitted> = VecDeque::new();
    let mut incoming = Vec::with_capacity(BATCH);
    loop {
        if queue.is_empty() {
            if rx.recv_many(&mut incoming, BATCH).await == 0 {
                return;
            }
        } else {
            while incoming.len() < BATCH {
                match rx.try_recv() {
                    Ok(s) => incoming.push(s),
                    Err(_) => break,
                }
            }
        }
        queue.extend(incoming.drain(..));
        let mut seen = HashSet::new();
        let mut batch = Vec::new();
        let mut later = VecDeque::new();
        while let Some(s) = queue.pop_front() {
            if batch.len() < BATCH && seen.insert(s.t.id) {
                batch.push(s);
            } else {
                later.push_back(s);
            }
        }
        queue = later;
        commit(&db, batch).await;
    }
}

async fn alone(db: &DatabaseConnection, t: Transition) -> Result<bool, DbErr> {
    let txn = db.begin().await?;
    if apply(&txn, t).await? {
        txn.commit().await?;
        Ok(true)
    } else {
        txn.rollback().await?;
        Ok(false)
    }
}

async fn commit(db: &DatabaseConnection, batch: Vec<Submitted>) {
    if batch.len() == 1 {
        for s in batch {
            let result = alone(db, s.t).await.map_err(|e| e.to_string());
            let _ = s.reply.send(result);
        }
        return;
    }
    let together = async {
        let txn = db.begin().await?;
        let transitions: Vec<&Transition> = batch.iter().map(|s| &s.t).collect();
        let changed = apply_batch(&txn, &transitions).await?;
        txn.commit().await?;
        Ok::<_, DbErr>(changed)
    }
    .await;
    match together {
        Ok(changed) => {
            for (s, changed) in batch.into_iter().zip(changed) {
                let _ = s.reply.send(Ok(changed));
            }
        }
        Err(e) => {
            tracing::warn!(transitions = batch.len(), error = %e, "a batch of state changes failed; applying them one by one");
            for s in batch {
                let result = alone(db, s.t).await.map_err(|e| e.to_string());
                let _ = s.reply.send(result);
            }
        }
    }
}

/// Applies transitions (each on a different request) inside the caller's transaction; says for
/// each whether its guard held.
async fn apply_batch<C: ConnectionTrait>(
    db: &C,
    batch: &[&Transition],
) -> Result<Vec<bool>, DbErr> {
    let now = batch.iter().map(|t| t.now).max().unwrap_or_default();
    let mut changed = vec![false; batch.len()];

    // The requests: one guarded UPDATE per kind of change.
    type Kind<'t> = (
        Vec<&'static str>,
        &'static str,
        Option<&'t str>,
        Option<&'t str>,
    );
    let mut kinds: BTreeMap<Kind<'_>, Vec<usize>> = BTreeMap::new();
    for (i, t) in batch.iter().enumerate() {
        let from = t.from.iter().map(|s| s.as_str()).collect();
        kinds
            .entry((
                from,
                t.to.as_str(),
                t.decided_by.as_deref(),
                t.note.as_deref(),
            ))
            .or_default()
            .push(i);
    }
    for ((from, to, decided_by, note), members) in kinds {
        let mut update = request::Entity::update_many()
            .col_expr(request::Column::State, Expr::value(to))
            .col_expr(request::Column::UpdatedAt, Expr::value(now));
        if State::parse(to).is_some_and(|s| !s.is_open()) {
            update = update.col_expr(
                request::Column::OpenKey,
                Expr::value(Option::<String>::None),
            );
        }
        if let Some(by) = decided_by {
            update = update
                .col_expr(request::Column::DecidedBy, Expr::value(by))
                .col_expr(request::Column::DecidedAt, Expr::value(now));
        }
        if let Some(note) = note {
            update = update.col_expr(request::Column::DecisionNote, Expr::value(note));
        }
        let ids: Vec<i32> = members.iter().map(|i| batch[*i].id).collect();
        let rows = update
            .filter(request::Column::Id.is_in(ids))
            .filter(request::Column::State.is_in(from))
            .exec_with_returning(db)
            .await?;
        let done: HashSet<i32> = rows.iter().map(|r| r.id).collect();
        for i in members {
            changed[i] = done.contains(&batch[i].id);
        }
    }
    let applied: Vec<&Transition> = batch
        .iter()
        .zip(&changed)
        .filter(|(_, c)| **c)
        .map(|(t, _)| *t)
        .collect();
    if applied.is_empty() {
        return Ok(changed);
    }

    // Their grants.
    let mut creates = Vec::new();
    let mut ending: BTreeMap<&'static str, Vec<i32>> = BTreeMap::new();
    let mut ended: BTreeMap<&'static str, Vec<i32>> = BTreeMap::new();
    for t in &applied {
        match &t.grant {
            None => {}
            Some(GrantChange::Create(g)) => creates.push(grant_row(t.id, g.clone())),
            Some(GrantChange::Activate {
                granted_at,
                expires_at,
            }) => {
                grant::Entity::update_many()
                    .col_expr(grant::Column::GrantedAt, Expr::value(*granted_at))
                    .col_expr(grant::Column::ExpiresAt, Expr::value(*expires_at))
                    .col_expr(
                        grant::Column::LastError,
                        Expr::value(Option::<String>::None),
                    )
                    .filter(grant::Column::RequestId.eq(t.id))
                    .exec(db)
                    .await?;
            }
            Some(GrantChange::End(reason)) => ending.entry(reason.as_str()).or_default().push(t.id),
            Some(GrantChange::Ended(reason)) => {
                ended.entry(reason.as_str()).or_default().push(t.id)
            }
        }
    }
    if !creates.is_empty() {
        grant::Entity::insert_many(creates)
            .exec_without_returning(db)
            .await?;
    }
    for (reason, ids) in ending {
        grant::Entity::update_many()
            .col_expr(grant::Column::EndReason, Expr::value(reason))
            .filter(grant::Column::RequestId.is_in(ids))
            .filter(grant::Column::EndReason.is_null())
            .exec(db)
            .await?;
    }
    for (reason, ids) in ended {
        grant::Entity::update_many()
            .col_expr(grant::Column::EndedAt, Expr::value(now))
            .col_expr(
                grant::Column::LastError,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                grant::Column::EndReason,
                Func::coalesce([Expr::col(grant::Column::EndReason), Expr::value(reason)]).into(),
            )
            .filter(grant::Column::RequestId.is_in(ids))
            .exec(db)
            .await?;
    }

    // Their jobs, what they settle, and their audit events.
    let jobs: Vec<_> = applied
        .iter()
        .flat_map(|t| t.jobs.iter().cloned())
        .collect();
    insert_jobs(db, &jobs, now).await?;
    let settles: Vec<String> = applied
        .iter()
        .flat_map(|t| t.settles.iter().cloned())
        .collect();
    if !settles.is_empty() {
        job::Entity::update_many()
            .col_expr(job::Column::DoneAt, Expr::value(now))
            .col_expr(job::Column::Outcome, Expr::value("settled"))
            .filter(job::Column::DedupeKey.is_in(settles))
            .filter(job::Column::DoneAt.is_null())
            .filter(job::Column::LockedUntil.is_null())
            .exec(db)
            .await?;
    }
    let audits: Vec<_> = applied
        .iter()
        .flat_map(|t| audit_rows(Some(t.id), &t.audit, t.now))
        .collect();
    if !audits.is_empty() {
        super::entities::audit::Entity::insert_many(audits)
            .exec_without_returning(db)
            .await?;
    }
    Ok(changed)
}
