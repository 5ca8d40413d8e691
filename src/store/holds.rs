//! Overlapping grants of the same access at a target are counted, so the first to end does not
//! take the access from the others, and the last one removes it.
//!
//! Each grant whose access is jitbot's holds it (`grants.hold`) under a key naming what it gives
//! (`grants.access_key`). A grant joins or leaves inside a transaction that first locks its key's
//! row in `access_locks`, so two replicas never both decide they are the last holder:
//!
//! - the first holder is `establishing` while it asks the target whether the person already had
//!   the access (no hold at all when they did: that access is not jitbot's), then `granting`
//!   until its grant is confirmed, then `held`; a grant that ends while `granting` revokes what
//!   it may have given, as the last holder does;
//! - a later grant of the same access joins as `held` and skips that question: the access there
//!   is jitbot's;
//! - a grant that ends while another still holds hands the access over (`handed_to`), and the
//!   target is not called; the last holder is `releasing` until its revoke is confirmed;
//! - a grant that arrives while the first is establishing or granting, or the last is
//!   releasing, waits: two grant calls for one access never race at the target.

use sea_orm::sea_query::{Alias, Expr, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter,
    TransactionTrait,
};

use super::Store;
use super::entities::grant;

const ESTABLISHING: &str = "establishing";
const GRANTING: &str = "granting";
const HELD: &str = "held";
const RELEASING: &str = "releasing";

/// Where a grant stands when it is about to give access that may already be jitbot's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// No other grant holds it: ask the target whether the person had it before.
    First,
    /// Request `.0`'s grant holds the same access: it is jitbot's; grant (idempotently) and
    /// count this one.
    Joined(i32),
    /// Request `.0`'s grant is establishing or releasing the same access: ask again shortly.
    Wait(i32),
}

/// What an ending grant may do at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// The grant was never counted (no key): decide as for any grant.
    Uncounted,
    /// It holds nothing now: it handed the access over (to `.0`'s grant), or it already released
    /// it, or it never got that far. The target is not called.
    Holds(Option<i32>),
    /// The last holder: revoke at the target, then [`Store::released`].
    Last,
}

/// Locks `key` until the transaction ends: a row per key, upserted, so the first grant of an
/// access creates it and every later one waits on it (PostgreSQL's row lock; SQLite's one writer).
async fn lock(txn: &DatabaseTransaction, key: &str) -> Result<(), DbErr> {
    let mut upsert = Query::insert();
    upsert
        .into_table(Alias::new("access_locks"))
        .columns([Alias::new("access_key")])
        .values([key.into()])
        .map_err(|e| DbErr::Custom(e.to_string()))?
        .on_conflict(
            OnConflict::column(Alias::new("access_key"))
                .update_column(Alias::new("access_key"))
                .to_owned(),
        );
    txn.execute(&upsert).await?;
    Ok(())
}

async fn own(txn: &DatabaseTransaction, request_id: i32) -> Result<Option<grant::Model>, DbErr> {
    grant::Entity::find()
        .filter(grant::Column::RequestId.eq(request_id))
        .one(txn)
        .await
}

/// The other grants holding `key` (served by the partial index on held keys).
async fn others(
    txn: &DatabaseTransaction,
    key: &str,
    request_id: i32,
) -> Result<Vec<grant::Model>, DbErr> {
    grant::Entity::find()
        .filter(grant::Column::AccessKey.eq(key))
        .filter(grant::Column::Hold.is_not_null())
        .filter(grant::Column::RequestId.ne(request_id))
        .all(txn)
        .await
}

async fn set_hold(
    txn: &DatabaseTransaction,
    request_id: i32,
    key: &str,
    hold: Option<&str>,
    handed_to: Option<i32>,
) -> Result<(), DbErr> {
    let mut update = grant::Entity::update_many()
        .col_expr(grant::Column::AccessKey, Expr::value(key))
        .col_expr(grant::Column::Hold, Expr::value(hold.map(str::to_string)));
    if let Some(to) = handed_to {
        update = update.col_expr(grant::Column::HandedTo, Expr::value(to));
    }
    update
        .filter(grant::Column::RequestId.eq(request_id))
        .exec(txn)
        .await?;
    Ok(())
}

impl Store {
    /// Before the first grant call of request `request_id`'s grant, which gives the access named
    /// by `key`: join the grants already holding it, or be the first.
    pub async fn join_access(&self, request_id: i32, key: &str) -> anyhow::Result<Join> {
        let txn = self.db.begin().await?;
        lock(&txn, key).await?;
        let others = others(&txn, key, request_id).await?;
        if let Some(busy) = others
            .iter()
            .find(|g| matches!(g.hold.as_deref(), Some(ESTABLISHING | GRANTING | RELEASING)))
        {
            txn.rollback().await?;
            return Ok(Join::Wait(busy.request_id));
        }
        let joined = match others.iter().map(|g| g.request_id).min() {
            Some(holder) => {
                set_hold(&txn, request_id, key, Some(HELD), None).await?;
                // Recorded with the hold, so a retry never asks the target (which would answer
                // "held", the other grant's access) and takes the access for the person's own.
                grant::Entity::update_many()
                    .col_expr(grant::Column::AlreadyHeld, Expr::value(false))
                    .filter(grant::Column::RequestId.eq(request_id))
                    .exec(&txn)
                    .await?;
                Join::Joined(holder)
            }
            None => {
                set_hold(&txn, request_id, key, Some(ESTABLISHING), None).await?;
                Join::First
            }
        };
        txn.commit().await?;
        Ok(joined)
    }

    /// The first holder's answer from the target: access held before jitbot is not jitbot's (no
    /// hold), else the grant holds it. Returns what is recorded (the first answer wins).
    pub async fn settle_access(&self, request_id: i32, held_before: bool) -> anyhow::Result<bool> {
        // One transaction: a crash between the two would leave the key `establishing` for good,
        // and every later grant of the same access waiting.
        let txn = self.db.begin().await?;
        let Some(me) = own(&txn, request_id).await? else {
            txn.rollback().await?;
            return Ok(held_before);
        };
        let recorded = me.already_held.unwrap_or(held_before);
        let hold = match me.hold.as_deref() {
            Some(ESTABLISHING) => (!recorded).then(|| GRANTING.to_string()),
            other => other.map(str::to_string),
        };
        grant::Entity::update_many()
            .col_expr(grant::Column::AlreadyHeld, Expr::value(recorded))
            .col_expr(grant::Column::Hold, Expr::value(hold))
            .filter(grant::Column::RequestId.eq(request_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(recorded)
    }

    /// As request `request_id`'s grant ends (or is cleaned up after a failed grant): hand its
    /// access to a grant still holding it, or be the last and take it away.
    pub async fn leave_access(&self, request_id: i32) -> anyhow::Result<Leave> {
        let txn = self.db.begin().await?;
        let Some(key) = own(&txn, request_id).await?.and_then(|g| g.access_key) else {
            txn.rollback().await?;
            return Ok(Leave::Uncounted);
        };
        lock(&txn, &key).await?;
        // Read again under the lock: another replica may have moved it meanwhile.
        let Some(me) = own(&txn, request_id).await? else {
            txn.rollback().await?;
            return Ok(Leave::Uncounted);
        };
        let leave = match me.hold.as_deref() {
            None => Leave::Holds(me.handed_to),
            // Never got past asking the target: nothing of jitbot's was given.
            Some(ESTABLISHING) => {
                set_hold(&txn, request_id, &key, None, None).await?;
                Leave::Holds(None)
            }
            Some(_) => {
                let others = others(&txn, &key, request_id).await?;
                match others
                    .iter()
                    .filter(|g| g.hold.as_deref() == Some(HELD))
                    .map(|g| g.request_id)
                    .min()
                {
                    Some(holder) => {
                        set_hold(&txn, request_id, &key, None, Some(holder)).await?;
                        Leave::Holds(Some(holder))
                    }
                    None => {
                        set_hold(&txn, request_id, &key, Some(RELEASING), None).await?;
                        Leave::Last
                    }
                }
            }
        };
        txn.commit().await?;
        Ok(leave)
    }

    /// The first holder's grant is confirmed at the target: later grants of the access may join.
    pub async fn granted(&self, request_id: i32) -> anyhow::Result<()> {
        grant::Entity::update_many()
            .col_expr(grant::Column::Hold, Expr::value(HELD))
            .filter(grant::Column::RequestId.eq(request_id))
            .filter(grant::Column::Hold.eq(GRANTING))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// The last holder's revoke is confirmed: the access is gone, and new grants of it may start.
    pub async fn released(&self, request_id: i32) -> anyhow::Result<()> {
        grant::Entity::update_many()
            .col_expr(grant::Column::Hold, Expr::value(None::<String>))
            .filter(grant::Column::RequestId.eq(request_id))
            .filter(grant::Column::Hold.eq(RELEASING))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}
