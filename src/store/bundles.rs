//! Bundles: one request (the lead) decided once for several resources. While it waits, only the
//! lead exists, so a denial, a cancellation or a time-out ends one row. When it is approved, in
//! the same transaction as the approval, each other resource gets a request of its own
//! (`bundle_of` = the lead) with its grant and its grant job: each is granted by its own
//! provider, retried, failed and revoked on its own, exactly like a request of one resource.

use std::sync::Arc;

use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};

use super::entities::{grant, request};
use super::queue::insert_new_jobs;
use super::requests::{NewAudit, NewGrant, NewRequest, audit_rows, grant_row, request_row};
use super::{Request, Store};
use crate::domain::{Scheduled, State};

/// The request of one more resource of a bundle, created with the lead's approval.
#[derive(Clone)]
pub struct NewMember {
    /// `bundle_of` is filled in with the lead's id.
    pub new: NewRequest,
    pub grant: NewGrant,
    /// Its first jobs (the grant), once its id is known.
    pub jobs: Arc<dyn Fn(i32) -> Vec<Scheduled> + Send + Sync>,
    pub event: NewAudit,
}

impl std::fmt::Debug for NewMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewMember")
            .field("resource", &self.new.resource)
            .finish_non_exhaustive()
    }
}

/// What the lead's `bundle` column holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BundleSpec {
    /// The policy's bundle name, or `None` for a list typed out (`prod-db,aws-prod-read`).
    pub name: Option<String>,
    /// Every resource, the lead's first.
    pub resources: Vec<String>,
}

impl BundleSpec {
    pub fn of(request: &Request) -> Option<BundleSpec> {
        Self::parse(request.bundle.as_deref())
    }

    /// What a `bundle` column holds, read (`None` on a request that leads no bundle).
    pub fn parse(bundle: Option<&str>) -> Option<BundleSpec> {
        serde_json::from_str(bundle?).ok()
    }

    /// The resources a request stands for: a bundle's every one, else its own.
    pub fn resources_of(request: &Request) -> Vec<String> {
        Self::of(request)
            .map(|b| b.resources)
            .unwrap_or_else(|| vec![request.resource.clone()])
    }

    /// What a request is for, as people read it: the bundle's label, else the resource.
    pub fn what(request: &Request) -> String {
        Self::of(request)
            .map(|b| b.label())
            .unwrap_or_else(|| request.resource.clone())
    }

    /// How people read it: the bundle's name, or the resources joined.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} ({})", self.resources.join(", ")),
            None => self.resources.join(", "),
        }
    }
}

/// Inserts the other resources' requests of the bundle led by `lead`, each with its grant, jobs
/// and audit event, inside the caller's transaction. A resource the person already holds an
/// open request for is left out (the one-open-request rule stands); its name is returned.
pub(super) async fn insert_members<C: ConnectionTrait>(
    db: &C,
    lead: i32,
    state: State,
    members: &[NewMember],
    now: i64,
) -> Result<Vec<String>, DbErr> {
    let mut left_out = Vec::new();
    for member in members {
        let mut new = member.new.clone();
        new.bundle_of = Some(lead);
        let inserted = match request::Entity::insert(request_row(&new, state, now))
            .on_conflict_do_nothing_on([request::Column::OpenKey])
            .exec_with_returning(db)
            .await?
        {
            sea_orm::TryInsertResult::Inserted(row) => row,
            _ => {
                left_out.push(new.resource.clone());
                continue;
            }
        };
        grant::Entity::insert(grant_row(inserted.id, member.grant.clone()))
            .exec_without_returning(db)
            .await?;
        insert_new_jobs(db, &(member.jobs)(inserted.id), now).await?;
        super::entities::audit::Entity::insert_many(audit_rows(
            Some(inserted.id),
            std::slice::from_ref(&member.event),
            now,
        ))
        .exec_without_returning(db)
        .await?;
    }
    Ok(left_out)
}

impl Store {
    /// The other requests of the bundle led by `lead`, in id order.
    pub async fn bundle_members(&self, lead: i32) -> anyhow::Result<Vec<Request>> {
        Ok(request::Entity::find()
            .filter(request::Column::BundleOf.eq(lead))
            .order_by_asc(request::Column::Id)
            .all(&self.read)
            .await?)
    }

    /// Every pending bundle, oldest first (a bundle's lead is listed under its first resource;
    /// `/jit pending` looks here for the ones an approver of another of its resources decides).
    pub async fn waiting_bundles(&self) -> anyhow::Result<Vec<super::Waiting>> {
        let query = super::Waiting::select()
            .filter(request::Column::State.eq(State::Pending.as_str()))
            .filter(request::Column::Bundle.is_not_null())
            .order_by_asc(request::Column::Id);
        super::Waiting::read(query, &self.read).await
    }

    /// The other requests of the bundle with their grants.
    pub async fn bundle_members_with_grants(
        &self,
        lead: i32,
    ) -> anyhow::Result<Vec<(Request, Option<super::Grant>)>> {
        Ok(request::Entity::find()
            .filter(request::Column::BundleOf.eq(lead))
            .order_by_asc(request::Column::Id)
            .find_also_related(grant::Entity)
            .all(&self.read)
            .await?)
    }
}
