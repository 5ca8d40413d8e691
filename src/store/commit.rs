//! How a batch of writes commits (see [`super::writer`], which gathers them): the general way, one
//! transaction for the whole batch with set-based statements ([`super::batch`]), or write by write
//! if that fails; new requests on SQLite straight through the library on the writer's thread
//! ([`super::inline`]); new requests on PostgreSQL in two round trips ([`super::chained`]).

use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};

use super::batch::{apply_batch, create_batch};
use super::requests::{Transition, apply, create_alone};
use super::writer::{Op, TOO_SLOW, WRITE_DEADLINE};
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

/// Commits `batch` the shortest way that takes all of it, and answers each of its writes.
pub(super) async fn commit(db: &DatabaseConnection, batch: Vec<Op>) {
    if db.get_database_backend() == sea_orm::DbBackend::Sqlite
        && batch
            .iter()
            .all(|op| matches!(op, Op::Create(intake, _) if inline::takes(intake)))
    {
        return commit_inline(db, batch).await;
    }
    if db.get_database_backend() == sea_orm::DbBackend::Postgres
        && batch
            .iter()
            .all(|op| matches!(op, Op::Create(intake, _) if chained::takes(intake)))
    {
        return commit_chained(db, batch).await;
    }
    commit_general(db, batch).await
}

/// A batch the general way: one transaction for all of it, or one per write if that fails.
async fn commit_general(db: &DatabaseConnection, batch: Vec<Op>) {
    if batch.len() == 1 {
        return one_by_one(db, batch).await;
    }
    let (creates, changes): (Vec<Op>, Vec<Op>) = batch
        .into_iter()
        .partition(|op| matches!(op, Op::Create(..)));
    let mut intakes = Vec::new();
    let mut create_replies = Vec::new();
    for op in creates {
        if let Op::Create(intake, reply) = op {
            intakes.push(intake);
            create_replies.push(reply);
        }
    }
    let mut transitions = Vec::new();
    let mut change_replies = Vec::new();
    for op in changes {
        if let Op::Change(t, reply) = op {
            transitions.push(t);
            change_replies.push(reply);
        }
    }
    let together = tokio::time::timeout(WRITE_DEADLINE, async {
        let txn = db.begin().await?;
        let created = create_batch(&txn, &intakes).await?;
        let refs: Vec<&Transition> = transitions.iter().collect();
        let changed = apply_batch(&txn, &refs).await?;
        txn.commit().await?;
        Ok::<_, DbErr>((created, changed))
    })
    .await;
    let together = match together {
        Ok(result) => result,
        Err(_) => {
            // The store is too slow or unreachable: every write of the batch fails (the
            // transaction is rolled back as it is dropped); one by one would only fail slower.
            tracing::error!(
                writes = intakes.len() + transitions.len(),
                "a batch of writes did not commit in time; none of it was written"
            );
            for reply in create_replies {
                let _ = reply.send(Err(TOO_SLOW.to_string()));
            }
            for reply in change_replies {
                let _ = reply.send(Err(TOO_SLOW.to_string()));
            }
            return;
        }
    };
    match together {
        Ok((created, changed)) => {
            for (reply, created) in create_replies.into_iter().zip(created) {
                let _ = reply.send(Ok(created));
            }
            for (reply, changed) in change_replies.into_iter().zip(changed) {
                let _ = reply.send(Ok(changed));
            }
        }
        Err(e) => {
            tracing::warn!(writes = intakes.len() + transitions.len(), error = %e, "a batch of writes failed; applying them one by one");
            let mut ops: Vec<Op> = intakes
                .into_iter()
                .zip(create_replies)
                .map(|(i, r)| Op::Create(i, r))
                .collect();
            ops.extend(
                transitions
                    .into_iter()
                    .zip(change_replies)
                    .map(|(t, r)| Op::Change(t, r)),
            );
            one_by_one(db, ops).await;
        }
    }
}

/// New requests on PostgreSQL, in runs of up to [`shapes::SMALL`] two round trips each (see
/// [`chained`]); a run that fails goes the general way. All of them answered within one
/// [`WRITE_DEADLINE`].
async fn commit_chained(db: &DatabaseConnection, batch: Vec<Op>) {
    let deadline = tokio::time::Instant::now() + WRITE_DEADLINE;
    let mut batch = batch.into_iter().peekable();
    while batch.peek().is_some() {
        let mut intakes = Vec::with_capacity(shapes::SMALL);
        let mut replies = Vec::with_capacity(shapes::SMALL);
        for op in batch.by_ref().take(shapes::SMALL) {
            if let Op::Create(intake, reply) = op {
                intakes.push(intake);
                replies.push(reply);
            }
        }
        let done = tokio::time::timeout_at(
            deadline,
            chained::create(db.get_postgres_connection_pool(), &intakes),
        )
        .await;
        match done {
            Ok(Ok(created)) => {
                for (reply, created) in replies.into_iter().zip(created) {
                    let _ = reply.send(Ok(created));
                }
            }
            Ok(Err(e)) => {
                if matches!(e, chained::NotChained::AlreadyOpen) {
                    tracing::debug!(
                        writes = intakes.len(),
                        "a new request is already open; the batch goes the general way, which says which"
                    );
                } else {
                    tracing::warn!(writes = intakes.len(), error = %e, "a batch of new requests failed; retrying it the general way");
                }
                let ops = intakes
                    .into_iter()
                    .zip(replies)
                    .map(|(i, r)| Op::Create(i, r))
                    .collect();
                commit_general(db, ops).await;
            }
            Err(_) => {
                tracing::error!(
                    writes = intakes.len(),
                    "a batch of new requests did not commit in time"
                );
                for reply in replies {
                    let _ = reply.send(Err(TOO_SLOW.to_string()));
                }
            }
        }
    }
}

/// New requests on SQLite, committed on this thread (see [`inline`]); the general way if that
/// fails.
async fn commit_inline(db: &DatabaseConnection, batch: Vec<Op>) {
    let mut intakes = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for op in batch {
        if let Op::Create(intake, reply) = op {
            intakes.push(intake);
            replies.push(reply);
        }
    }
    match inline::create(db.get_sqlite_connection_pool(), &intakes).await {
        Ok(created) => {
            for (reply, created) in replies.into_iter().zip(created) {
                let _ = reply.send(Ok(created));
            }
        }
        Err(inline::NotCommitted::TooSlow) => {
            tracing::error!(
                writes = intakes.len(),
                "a batch of new requests did not reach the store in time; none of it was written"
            );
            for reply in replies {
                let _ = reply.send(Err(TOO_SLOW.to_string()));
            }
        }
        Err(inline::NotCommitted::Failed(e)) => {
            tracing::warn!(writes = intakes.len(), error = %e, "a batch of new requests failed; applying them one by one");
            let ops = intakes
                .into_iter()
                .zip(replies)
                .map(|(i, r)| Op::Create(i, r))
                .collect();
            one_by_one(db, ops).await;
        }
    }
}
