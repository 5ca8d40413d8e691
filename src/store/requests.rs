//! New requests, grants and the audit trail. Guarded state changes are in [`super::transition`].

use anyhow::Context;
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, Set, TransactionTrait,
};

use super::entities::{audit, grant, request};
use super::queue::insert_new_jobs;
pub use super::transition::{GrantChange, Transition};
pub(super) use super::transition::{apply, left_out_events};
use super::writer::Intake;
use super::{AuditEvent, Grant, Request, Store, is_unique_violation};
use crate::domain::{Scheduled, State};

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
    /// The most open requests the person may hold, this one included (not stored: checked in
    /// the transaction that stores it, so concurrent requests cannot slip past it).
    pub max_open: Option<u32>,
    /// A bundle's lead: its [`super::BundleSpec`] as JSON.
    pub bundle: Option<String>,
    /// A bundle's other request: the lead's id.
    pub bundle_of: Option<i32>,
    /// An extension: the request whose grant it lengthens.
    pub extends: Option<i32>,
}

/// The provider snapshot a grant keeps.
#[derive(Clone, Debug)]
pub struct NewGrant {
    pub provider_name: String,
    pub provider: serde_json::Value,
    pub grant_shape: serde_json::Value,
    pub identity: serde_json::Value,
    /// Whose approvals counted (none for an auto-approval).
    pub approved_by: Vec<String>,
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

/// Why `create_request` stored nothing.
#[derive(Debug)]
pub enum NotCreated {
    /// The person already has an open request for the resource (this one, when it was found).
    AlreadyOpen(Option<Box<Request>>),
    /// The person already holds `max_open` open requests.
    TooMany { open: u64, max_open: u32 },
}

/// What became of one new request inside its transaction.
#[derive(Debug)]
pub(super) enum Created {
    Stored(Box<Request>),
    AlreadyOpen,
    TooMany { open: u64, max_open: u32 },
}

/// The query behind [`open_counts`]: (requester, open requests), one row per person holding any.
pub(super) fn open_counts_query(requesters: &[&str]) -> sea_orm::Select<request::Entity> {
    use sea_orm::QuerySelect;
    request::Entity::find()
        .select_only()
        .column(request::Column::Requester)
        .column_as(request::Column::Id.count(), "open")
        .filter(
            request::Column::Requester
                .is_in(super::shapes::padded_from(requesters.iter().copied())),
        )
        .filter(request::Column::State.is_in(states(&State::OPEN)))
        .group_by(request::Column::Requester)
}

/// How many open requests each of `requesters` holds, in one query.
pub(super) async fn open_counts<C: ConnectionTrait>(
    db: &C,
    requesters: &[&str],
) -> Result<std::collections::HashMap<String, u64>, DbErr> {
    if requesters.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<(String, i64)> = open_counts_query(requesters).into_tuple().all(db).await?;
    Ok(rows
        .into_iter()
        .map(|(who, n)| (who, n.max(0) as u64))
        .collect())
}

/// A new request's row, before it has an id.
pub(super) fn request_row(new: &NewRequest, state: State, now: i64) -> request::ActiveModel {
    request::ActiveModel {
        resource: Set(new.resource.clone()),
        requester: Set(new.requester.clone()),
        duration_secs: Set(new.duration_secs),
        reason: Set(new.reason.clone()),
        state: Set(state.as_str().to_string()),
        // Ended at birth (an auto-approved extension) holds no key.
        open_key: Set(state.is_open().then(|| key_of(new))),
        approvals_needed: Set(new.approvals_needed),
        auto_approved: Set(new.auto_approved),
        channel: Set(new.channel.clone()),
        card_ts: Set(None),
        created_at: Set(now),
        decided_at: Set(new.auto_approved.then_some(now)),
        decided_by: Set(None),
        decision_note: Set(None),
        updated_at: Set(now),
        bundle: Set(new.bundle.clone()),
        bundle_of: Set(new.bundle_of),
        extends: Set(new.extends),
        ..Default::default()
    }
}

/// One new request in a transaction of its own; `None` if an open one stands in the way.
pub(super) async fn create_alone(
    db: &DatabaseConnection,
    intake: Intake,
) -> Result<Created, DbErr> {
    let txn = db.begin().await?;
    if let Some(max_open) = intake.new.max_open {
        let open = open_counts(&txn, &[intake.new.requester.as_str()])
            .await?
            .get(&intake.new.requester)
            .copied()
            .unwrap_or(0);
        if open >= u64::from(max_open) {
            txn.rollback().await?;
            return Ok(Created::TooMany { open, max_open });
        }
    }
    let inserted = match request_row(&intake.new, intake.state, intake.now)
        .insert(&txn)
        .await
    {
        Ok(r) => r,
        Err(e) if is_unique_violation(&e) => {
            txn.rollback().await?;
            return Ok(Created::AlreadyOpen);
        }
        Err(e) => return Err(e),
    };
    if let Some(g) = intake.grant {
        insert_grant(&txn, inserted.id, g).await?;
    }
    insert_new_jobs(&txn, &(intake.jobs)(inserted.id), intake.now).await?;
    insert_audit(&txn, Some(inserted.id), &[intake.event], intake.now).await?;
    if !intake.members.is_empty() {
        let left_out = super::bundles::insert_members(
            &txn,
            inserted.id,
            intake.state,
            &intake.members,
            intake.now,
        )
        .await?;
        insert_audit(
            &txn,
            Some(inserted.id),
            &left_out_events(&left_out),
            intake.now,
        )
        .await?;
    }
    txn.commit().await?;
    Ok(Created::Stored(Box::new(inserted)))
}

pub(super) fn open_key(requester: &str, resource: &str) -> String {
    format!("{requester}|{resource}")
}

/// The open key of a new request: one open request per person and resource, and, beside it,
/// one pending extension.
pub(super) fn key_of(new: &NewRequest) -> String {
    match new.extends {
        Some(_) => extension_key(&new.requester, &new.resource),
        None => open_key(&new.requester, &new.resource),
    }
}

pub(super) fn extension_key(requester: &str, resource: &str) -> String {
    format!("{requester}|{resource}|extend")
}

pub(super) fn states(list: &[State]) -> Vec<&'static str> {
    list.iter().map(|s| s.as_str()).collect()
}

/// Audit rows for events of one request, ready to insert.
pub(super) fn audit_rows(
    request_id: Option<i32>,
    events: &[NewAudit],
    now: i64,
) -> Vec<audit::ActiveModel> {
    events
        .iter()
        .map(|event| audit::ActiveModel {
            at: Set(now),
            request_id: Set(request_id),
            actor: Set(event.actor.clone()),
            action: Set(event.action.clone()),
            detail: Set(event.detail.to_string()),
            ..Default::default()
        })
        .collect()
}

pub(super) async fn insert_audit<C: ConnectionTrait>(
    db: &C,
    request_id: Option<i32>,
    events: &[NewAudit],
    now: i64,
) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    audit::Entity::insert_many(audit_rows(request_id, events, now))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// A grant record as first stored: the provider snapshot, nothing granted yet.
pub(super) fn grant_row(request_id: i32, g: NewGrant) -> grant::ActiveModel {
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
        approved_by: Set((!g.approved_by.is_empty()).then(|| g.approved_by.join(","))),
        ..Default::default()
    }
}

pub(super) async fn insert_grant<C: ConnectionTrait>(
    db: &C,
    request_id: i32,
    g: NewGrant,
) -> Result<(), DbErr> {
    grant::Entity::insert(grant_row(request_id, g))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

impl Store {
    /// Stores a new request with its jobs and audit event, or says why not: an open request of
    /// the same person for the same resource stands in the way, or the person holds
    /// `max_open` open requests already. Committed with whatever else is being
    /// written at the moment (see [`super::writer`]); answered once durable. An auto-approved
    /// request is stored `approved` with its grant (and its bundle's other resources'
    /// requests); any other, `pending`.
    pub async fn create_request(
        &self,
        new: NewRequest,
        approved: Option<(NewGrant, Vec<super::NewMember>)>,
        jobs: impl Fn(i32) -> Vec<Scheduled> + Send + Sync + 'static,
        event: NewAudit,
        now: i64,
    ) -> anyhow::Result<Result<Request, NotCreated>> {
        let (requester, resource) = (new.requester.clone(), new.resource.clone());
        let (state, grant, members) = match approved {
            Some((grant, members)) => (State::Approved, Some(grant), members),
            None => (State::Pending, None, Vec::new()),
        };
        let intake = Intake {
            new,
            state,
            grant,
            jobs: Box::new(jobs),
            event,
            now,
            members,
        };
        match self
            .writer
            .create(intake)
            .await
            .context("storing the request")?
        {
            Created::Stored(request) => Ok(Ok(*request)),
            Created::AlreadyOpen => Ok(Err(NotCreated::AlreadyOpen(
                self.find_open(&requester, &resource).await?.map(Box::new),
            ))),
            Created::TooMany { open, max_open } => Ok(Err(NotCreated::TooMany { open, max_open })),
        }
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
    /// Concurrent transitions are committed together (see [`super::writer`]).
    pub async fn transition(&self, t: Transition) -> anyhow::Result<bool> {
        anyhow::ensure!(
            t.members.is_empty() && t.extend.is_none(),
            "a bundle's requests and an extension are applied only with their decision"
        );
        self.writer.submit(t).await
    }

    // ---- grants ---------------------------------------------------------------------------

    pub async fn grant(&self, request_id: i32) -> anyhow::Result<Option<Grant>> {
        Ok(grant::Entity::find()
            .filter(grant::Column::RequestId.eq(request_id))
            .one(&self.read)
            .await?)
    }

    /// Records, once, whether the identity held the access before jitbot granted it; returns
    /// what is recorded (the first answer wins).
    pub async fn set_already_held(&self, request_id: i32, held: bool) -> anyhow::Result<bool> {
        let rows = grant::Entity::update_many()
            .col_expr(
                grant::Column::AlreadyHeld,
                Func::coalesce([Expr::col(grant::Column::AlreadyHeld), Expr::value(held)]).into(),
            )
            .filter(grant::Column::RequestId.eq(request_id))
            .exec_with_returning(&self.db)
            .await?;
        Ok(rows.first().and_then(|g| g.already_held).unwrap_or(held))
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
        Ok(query.all(&self.read).await?)
    }

    pub async fn count_requests(&self) -> anyhow::Result<u64> {
        use sea_orm::PaginatorTrait;
        Ok(request::Entity::find().count(&self.read).await?)
    }
}
