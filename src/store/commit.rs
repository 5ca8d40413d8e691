//! How a batch of writes commits (see [`super::writer`], which gathers them): the general way, one
//! transaction for the whole batch with set-based statements ([`super::batch`]), or write by write
//! if that fails; new requests on SQLite straight through the library on the writer's thread
//! ([`super::inline`]); new requests on PostgreSQL in one or two round trips ([`super::chained`]).

use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};
use tokio::sync::oneshot;

use super::batch::{apply_batch, create_batch};
use super::requests::{Created, Transition, apply, create_alone};
use super::writer::{Intake, Op, TOO_SLOW, WRITE_DEADLINE};
use super::{chained, inline, shapes};

async fn change_alone(db: &DatabaseConnection, t: Transition) -> Result<bool, DbErr> {
    let txn = db.begin().await?;
    if apply(&txn, t).await? {
        txn.commit().await?;
        Ok(true)
    } else {
        txn.rollback().await?;
        Ok(false)
    }
}

/// Each write in a transaction of its own, each answered with its own outcome.
async fn one_by_one(db: &DatabaseConnection, batch: Vec<Op>) {
    for op in batch {
        match op {
            Op::Create(intake, reply) => {
                let result = tokio::time::timeout(WRITE_DEADLINE, create_alone(db, intake)).await;
                let _ = reply.send(match result {
                    Ok(done) => done.map_err(|e| e.to_string()),
                    Err(_) => Err(TOO_SLOW.to_string()),
                });
            }
            Op::Change(t, reply) => {
                let result = tokio::time::timeout(WRITE_DEADLINE, change_alone(db, t)).await;
                let _ = reply.send(match result {
                    Ok(done) => done.map_err(|e| e.to_string()),
                    Err(_) => Err(TOO_SLOW.to_string()),
                });
            }
        }
    }
}

/// What the writer keeps from batch to batch.
#[derive(Default)]
pub(super) struct Kept {
    /// The request ids PostgreSQL's batches take ahead.
    pub spare: chained::SpareIds,
    /// SQLite: the writer's own connection, with its prepared statements.
    pub own: inline::Own,
}

/// Commits `batch` the shortest way that takes all of it, and answers each of its writes.
pub(super) async fn commit(db: &DatabaseConnection, batch: Vec<Op>, kept: &Kept) {
    if db.get_database_backend() == sea_orm::DbBackend::Sqlite
        && batch
            .iter()
            .all(|op| matches!(op, Op::Create(intake, _) if inline::takes(intake)))
    {
        return commit_inline(db, batch, &kept.own).await;
    }
    if db.get_database_backend() == sea_orm::DbBackend::Postgres
        && batch
            .iter()
            .all(|op| matches!(op, Op::Create(intake, _) if chained::takes(intake)))
    {
        return commit_chained(db, batch, &kept.spare).await;
    }
    commit_general(db, batch).await
}

/// A batch the general way: one transaction for all of it, or one per write if that fails.
async fn commit_general(db: &DatabaseConnection, batch: Vec<Op>) {
    if batch.len() == 1 {
        return one_by_one(db, batch).await;
    }
    let parts = Parts::of(batch);
    let together = tokio::time::timeout(WRITE_DEADLINE, async {
        let txn = db.begin().await?;
        let created = create_batch(&txn, &parts.intakes).await?;
        let refs: Vec<&Transition> = parts.transitions.iter().collect();
        let changed = apply_batch(&txn, &refs).await?;
        txn.commit().await?;
        Ok::<_, DbErr>((created, changed))
    })
    .await;
    match together {
        Ok(Ok((created, changed))) => parts.answer(created, changed),
        Ok(Err(e)) => {
            tracing::warn!(writes = parts.len(), error = %e, "a batch of writes failed; applying them one by one");
            one_by_one(db, parts.into_ops()).await;
        }
        Err(_) => {
            // The store is too slow or unreachable: every write of the batch fails (the
            // transaction is rolled back as it is dropped); one by one would only fail slower.
            tracing::error!(
                writes = parts.len(),
                "a batch of writes did not commit in time; none of it was written"
            );
            parts.too_slow();
        }
    }
}

/// New requests on PostgreSQL, in runs of up to [`shapes::SMALL`], one or two round trips each
/// (see [`chained`]); a run that fails goes the general way. All of them answered within one
/// [`WRITE_DEADLINE`].
async fn commit_chained(db: &DatabaseConnection, batch: Vec<Op>, spare: &chained::SpareIds) {
    let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
    let mut batch = batch.into_iter().peekable();
    while batch.peek().is_some() {
        let parts = Parts::of(batch.by_ref().take(shapes::SMALL));
        let done = tokio::time::timeout_at(
            deadline,
            chained::create(db.get_postgres_connection_pool(), spare, &parts.intakes),
        )
        .await;
        match done {
            Ok(Ok(created)) => parts.answer(created, Vec::new()),
            Ok(Err(e)) => {
                if matches!(e, chained::NotChained::AlreadyOpen) {
                    tracing::debug!(
                        writes = parts.len(),
                        "a new request is already open; the batch goes the general way, which says which"
                    );
                } else {
                    tracing::warn!(writes = parts.len(), error = %e, "a batch of new requests failed; retrying it the general way");
                }
                commit_general(db, parts.into_ops()).await;
            }
            Err(_) => {
                tracing::error!(
                    writes = parts.len(),
                    "a batch of new requests did not commit in time"
                );
                parts.too_slow();
            }
        }
    }
}

/// New requests on SQLite, committed on this thread (see [`inline`]); the general way if that
/// fails.
async fn commit_inline(db: &DatabaseConnection, batch: Vec<Op>, own: &inline::Own) {
    let parts = Parts::of(batch);
    match inline::create(db.get_sqlite_connection_pool(), own, &parts.intakes).await {
        Ok(created) => parts.answer(created, Vec::new()),
        Err(inline::NotCommitted::TooSlow) => {
            tracing::error!(
                writes = parts.len(),
                "a batch of new requests did not reach the store in time; none of it was written"
            );
            parts.too_slow();
        }
        Err(inline::NotCommitted::Failed(e)) => {
            tracing::warn!(writes = parts.len(), error = %e, "a batch of new requests failed; applying them one by one");
            one_by_one(db, parts.into_ops()).await;
        }
    }
}

/// A batch's writes, apart from the ones waiting for their answers (in the same order).
#[derive(Default)]
struct Parts {
    intakes: Vec<Intake>,
    create_replies: Vec<oneshot::Sender<Result<Created, String>>>,
    transitions: Vec<Transition>,
    change_replies: Vec<oneshot::Sender<Result<bool, String>>>,
}

impl Parts {
    fn of(ops: impl IntoIterator<Item = Op>) -> Self {
        let mut parts = Parts::default();
        for op in ops {
            match op {
                Op::Create(intake, reply) => {
                    parts.intakes.push(intake);
                    parts.create_replies.push(reply);
                }
                Op::Change(t, reply) => {
                    parts.transitions.push(t);
                    parts.change_replies.push(reply);
                }
            }
        }
        parts
    }

    fn len(&self) -> usize {
        self.intakes.len() + self.transitions.len()
    }

    /// The writes again, to commit another way.
    fn into_ops(self) -> Vec<Op> {
        let creates =
            (self.intakes.into_iter().zip(self.create_replies)).map(|(i, r)| Op::Create(i, r));
        let changes =
            (self.transitions.into_iter().zip(self.change_replies)).map(|(t, r)| Op::Change(t, r));
        creates.chain(changes).collect()
    }

    /// Each write's outcome, in order, to whoever waits for it.
    fn answer(self, created: Vec<Created>, changed: Vec<bool>) {
        for (reply, created) in self.create_replies.into_iter().zip(created) {
            let _ = reply.send(Ok(created));
        }
        for (reply, changed) in self.change_replies.into_iter().zip(changed) {
            let _ = reply.send(Ok(changed));
        }
    }

    /// Every write: "too slow".
    fn too_slow(self) {
        for reply in self.create_replies {
            let _ = reply.send(Err(TOO_SLOW.to_string()));
        }
        for reply in self.change_replies {
            let _ = reply.send(Err(TOO_SLOW.to_string()));
        }
    }
}
