//! What the store answers without changing anything: one request, a person's requests, what
//! waits for a decision. Reads go to the read pool; none of them holds a lock.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{grant, request};
use super::requests::open_key;
use super::{BundleSpec, Grant, Request, Store};
use crate::domain::State;

/// A pending request as `/jit pending` and the Home tab show it: only the columns they read.
/// They read thousands per answer, and each column of each row is a copy (measured on SQLite
/// with a million stored: the whole model, 19 columns, cost ~10 us a row, most of it copying).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub id: i32,
    pub resource: String,
    pub requester: String,
    pub duration_secs: i64,
    pub reason: String,
    /// The lead of a bundle: its `bundle` column (see [`BundleSpec`]).
    pub bundle: Option<String>,
}

type WaitingRow = (i32, String, String, i64, String, Option<String>);

impl Waiting {
    /// The requests table, selecting exactly the columns [`Waiting::read`] reads.
    pub(super) fn select() -> sea_orm::Select<request::Entity> {
        request::Entity::find().select_only().columns([
            request::Column::Id,
            request::Column::Resource,
            request::Column::Requester,
            request::Column::DurationSecs,
            request::Column::Reason,
            request::Column::Bundle,
        ])
    }

    /// The rows `query` (built on [`Waiting::select`]) finds.
    pub(super) async fn read(
        query: sea_orm::Select<request::Entity>,
        db: &sea_orm::DatabaseConnection,
    ) -> anyhow::Result<Vec<Waiting>> {
        let rows: Vec<WaitingRow> = query.into_tuple().all(db).await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, resource, requester, duration_secs, reason, bundle)| Waiting {
                    id,
                    resource,
                    requester,
                    duration_secs,
                    reason,
                    bundle,
                },
            )
            .collect())
    }

    /// One page of pending requests after request `after`, oldest first.
    fn pending_page(after: i32, limit: u64) -> sea_orm::Select<request::Entity> {
        Self::select()
            .filter(request::Column::State.eq(State::Pending.as_str()))
            .filter(request::Column::Id.gt(after))
            .order_by_asc(request::Column::Id)
            .limit(limit)
    }

    /// The resources it stands for: a bundle's every one, else its own.
    pub fn resources(&self) -> Vec<String> {
        BundleSpec::parse(self.bundle.as_deref())
            .map(|b| b.resources)
            .unwrap_or_else(|| vec![self.resource.clone()])
    }

    /// What it is for, as people read it: the bundle's label, else the resource.
    pub fn what(&self) -> String {
        BundleSpec::parse(self.bundle.as_deref())
            .map(|b| b.label())
            .unwrap_or_else(|| self.resource.clone())
    }
}

impl Store {
    pub async fn find_open(
        &self,
        requester: &str,
        resource: &str,
    ) -> anyhow::Result<Option<Request>> {
        Ok(request::Entity::find()
            .filter(request::Column::OpenKey.eq(open_key(requester, resource)))
            .one(&self.read)
            .await?)
    }

    pub async fn request(&self, id: i32) -> anyhow::Result<Option<Request>> {
        Ok(request::Entity::find_by_id(id).one(&self.read).await?)
    }

    /// A request and its grant record (if it was approved), in one query.
    pub async fn request_with_grant(
        &self,
        id: i32,
    ) -> anyhow::Result<Option<(Request, Option<Grant>)>> {
        Ok(request::Entity::find_by_id(id)
            .find_also_related(grant::Entity)
            .one(&self.read)
            .await?)
    }

    /// A person's most recent requests, newest first.
    pub async fn requests_of(&self, requester: &str, limit: u64) -> anyhow::Result<Vec<Request>> {
        Ok(request::Entity::find()
            .filter(request::Column::Requester.eq(requester))
            .order_by_desc(request::Column::Id)
            .limit(limit)
            .all(&self.read)
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
            .all(&self.read)
            .await?)
    }

    /// Pending requests for any of `resources`, oldest first, after request `after`: one page of
    /// a walk that lists every one however many there are (a partial index serves it).
    pub async fn waiting_for(
        &self,
        resources: &[String],
        after: i32,
        limit: u64,
    ) -> anyhow::Result<Vec<Waiting>> {
        if resources.is_empty() {
            return Ok(Vec::new());
        }
        let query = Waiting::pending_page(after, limit).filter(
            request::Column::Resource.is_in(super::shapes::padded_from(resources.iter().cloned())),
        );
        Waiting::read(query, &self.read).await
    }

    /// Every pending request, oldest first, after request `after` (one page): the whole row.
    pub async fn pending_after(&self, after: i32, limit: u64) -> anyhow::Result<Vec<Request>> {
        Ok(request::Entity::find()
            .filter(request::Column::State.eq(State::Pending.as_str()))
            .filter(request::Column::Id.gt(after))
            .order_by_asc(request::Column::Id)
            .limit(limit)
            .all(&self.read)
            .await?)
    }

    /// Every pending request, oldest first, after request `after` (one page), as a list shows it.
    pub async fn waiting_after(&self, after: i32, limit: u64) -> anyhow::Result<Vec<Waiting>> {
        Waiting::read(Waiting::pending_page(after, limit), &self.read).await
    }

    /// A person's requests that are not over yet (pending, approved, active, being revoked),
    /// oldest first: all of them.
    pub async fn open_of(&self, requester: &str) -> anyhow::Result<Vec<(Request, Option<Grant>)>> {
        Ok(request::Entity::find()
            .filter(request::Column::Requester.eq(requester))
            .filter(request::Column::State.is_in(State::OPEN.map(State::as_str)))
            .find_also_related(grant::Entity)
            .order_by_asc(request::Column::Id)
            .all(&self.read)
            .await?)
    }

    /// The requests created in `[from, to)` (epoch ms), with their grants: a digest's period.
    pub async fn requests_created_between(
        &self,
        from: i64,
        to: i64,
    ) -> anyhow::Result<Vec<(Request, Option<Grant>)>> {
        Ok(request::Entity::find()
            .filter(request::Column::CreatedAt.gte(from))
            .filter(request::Column::CreatedAt.lt(to))
            .find_also_related(grant::Entity)
            .order_by_asc(request::Column::Id)
            .all(&self.read)
            .await?)
    }

    /// The requests in `state` now, with their grants (at most `limit`).
    pub async fn in_state_with_grants(
        &self,
        state: State,
        limit: u64,
    ) -> anyhow::Result<Vec<(Request, Option<Grant>)>> {
        Ok(request::Entity::find()
            .filter(request::Column::State.eq(state.as_str()))
            .find_also_related(grant::Entity)
            .order_by_asc(request::Column::Id)
            .limit(limit)
            .all(&self.read)
            .await?)
    }

    /// How many requests are in `state` now.
    pub async fn count_in_state(&self, state: State) -> anyhow::Result<u64> {
        use sea_orm::PaginatorTrait;
        Ok(request::Entity::find()
            .filter(request::Column::State.eq(state.as_str()))
            .count(&self.read)
            .await?)
    }

    /// Audit events of `action` in `[from, to)`.
    pub async fn audit_between(
        &self,
        action: &str,
        from: i64,
        to: i64,
    ) -> anyhow::Result<Vec<super::AuditEvent>> {
        use super::entities::audit;
        Ok(audit::Entity::find()
            .filter(audit::Column::Action.eq(action))
            .filter(audit::Column::At.gte(from))
            .filter(audit::Column::At.lt(to))
            .order_by_asc(audit::Column::Id)
            .all(&self.read)
            .await?)
    }
}
