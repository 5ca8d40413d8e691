//! `/jit extend`: an extension is a request of its own, pointing at the request whose grant it
//! lengthens (`extends`). Approved, or auto-approved, it is `extended`, and in the same
//! transaction the grant's `expires_at` moves later (never past its cap: the grant's start plus
//! the resource's `max_duration`). The revoke job already queued for the old end finds the new
//! one and waits for it.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    TransactionTrait,
};

use super::entities::{grant, request};
use super::queue::insert_new_jobs;
use super::requests::{NewAudit, NewRequest, audit_rows, request_row};
use super::{Request, Store};
use crate::domain::{Scheduled, State};

/// Lengthen the grant of request `of` by `by_ms`, up to `cap_ms` (epoch ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extension {
    pub of: i32,
    pub by_ms: i64,
    pub cap_ms: i64,
}

/// Moves the end of an active grant; `false` (nothing changed) when the grant is not active any
/// more (ended, being ended, or never granted).
pub(super) async fn apply_extension<C: ConnectionTrait>(
    db: &C,
    ext: Extension,
    now: i64,
) -> Result<bool, DbErr> {
    let active = request::Entity::find_by_id(ext.of)
        .filter(request::Column::State.eq(State::Active.as_str()))
        .one(db)
        .await?
        .is_some();
    if !active {
        return Ok(false);
    }
    let Some(grant) = grant::Entity::find()
        .filter(grant::Column::RequestId.eq(ext.of))
        .one(db)
        .await?
    else {
        return Ok(false);
    };
    let Some(old_end) = grant.expires_at.filter(|end| *end > now) else {
        return Ok(false);
    };
    if grant.end_reason.is_some() || grant.ended_at.is_some() {
        return Ok(false);
    }
    let new_end = old_end.saturating_add(ext.by_ms).min(ext.cap_ms);
    if new_end <= old_end {
        return Ok(false);
    }
    // Guarded on the end read above, so two extensions at once cannot lose one.
    let changed = grant::Entity::update_many()
        .col_expr(grant::Column::ExpiresAt, Expr::value(new_end))
        .filter(grant::Column::RequestId.eq(ext.of))
        .filter(grant::Column::ExpiresAt.eq(old_end))
        .filter(grant::Column::EndReason.is_null())
        .exec(db)
        .await?;
    Ok(changed.rows_affected == 1)
}

impl Store {
    /// An auto-approved extension: stored `extended` with its jobs and audit event, and the grant
    /// lengthened, in one transaction; `None` (nothing stored) when the grant is not active.
    pub async fn record_extension(
        &self,
        new: NewRequest,
        ext: Extension,
        jobs: impl Fn(i32) -> Vec<Scheduled>,
        event: NewAudit,
        now: i64,
    ) -> anyhow::Result<Option<Request>> {
        let txn = self.db.begin().await?;
        if !apply_extension(&txn, ext, now).await? {
            txn.rollback().await?;
            return Ok(None);
        }
        let row = request_row(&new, State::Extended, now).insert(&txn).await?;
        insert_new_jobs(&txn, &jobs(row.id), now).await?;
        super::entities::audit::Entity::insert_many(audit_rows(
            Some(row.id),
            std::slice::from_ref(&event),
            now,
        ))
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(Some(row))
    }

    /// The extensions of request `of` that were granted, oldest first.
    pub async fn extensions_of(&self, of: i32) -> anyhow::Result<Vec<Request>> {
        Ok(request::Entity::find()
            .filter(request::Column::Extends.eq(of))
            .filter(request::Column::State.eq(State::Extended.as_str()))
            .order_by_asc(request::Column::Id)
            .all(&self.read)
            .await?)
    }

    /// Records a DM that paged `user` about request `request_id` (to update it later).
    pub async fn add_page(
        &self,
        request_id: i32,
        user: &str,
        channel: &str,
        ts: &str,
        now: i64,
    ) -> anyhow::Result<()> {
        use super::entities::page;
        use sea_orm::Set;
        page::Entity::insert(page::ActiveModel {
            request_id: Set(request_id),
            user_id: Set(user.to_string()),
            channel: Set(channel.to_string()),
            ts: Set(ts.to_string()),
            created_at: Set(now),
            ..Default::default()
        })
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    /// The DMs that paged people about request `request_id`.
    pub async fn pages_of(
        &self,
        request_id: i32,
    ) -> anyhow::Result<Vec<super::entities::page::Model>> {
        use super::entities::page;
        Ok(page::Entity::find()
            .filter(page::Column::RequestId.eq(request_id))
            .order_by_asc(page::Column::Id)
            .all(&self.read)
            .await?)
    }

    /// The pending extension of `requester` for `resource`, if there is one.
    pub async fn pending_extension(
        &self,
        requester: &str,
        resource: &str,
    ) -> anyhow::Result<Option<Request>> {
        Ok(request::Entity::find()
            .filter(
                request::Column::OpenKey.eq(super::requests::extension_key(requester, resource)),
            )
            .one(&self.read)
            .await?)
    }
}
