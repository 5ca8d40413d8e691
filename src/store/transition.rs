//! Guarded state changes: a [`Transition`] moves one request from one of some states to another,
//! with what goes with it (grant changes, jobs, settled jobs, audit events, a bundle's other
//! requests, an extension), all or nothing inside the caller's transaction.

use sea_orm::sea_query::{Expr, Func};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use super::entities::{grant, job, request};
use super::queue::insert_jobs;
use super::requests::{NewAudit, NewGrant, audit, insert_audit, insert_grant, states};
use crate::domain::{EndReason, Job, Scheduled, State};

/// A guarded state change and what goes with it. `to == Pending` from `[Pending]` changes no
/// state: it only guards (the request is still pending) and carries effects.
#[derive(Debug)]
pub struct Transition {
    pub id: i32,
    pub from: &'static [State],
    pub to: State,
    pub now: i64,
    /// Who decided, for approve/deny.
    pub decided_by: Option<String>,
    pub note: Option<String>,
    pub grant: Option<GrantChange>,
    pub jobs: Vec<Scheduled>,
    /// Queued jobs this change makes pointless; those no worker holds are marked settled.
    pub settles: Vec<String>,
    pub audit: Vec<NewAudit>,
    /// A bundle's approval: the other resources' requests, created with it (only through
    /// [`Store::decide`], which applies one transition in a transaction of its own).
    pub members: Vec<super::NewMember>,
    /// An extension's approval: the grant it lengthens (only through [`Store::decide`]); the
    /// transition fails, and nothing is written, when that grant is no longer active.
    pub extend: Option<super::Extension>,
}

impl Transition {
    pub fn new(id: i32, from: &'static [State], to: State, now: i64) -> Self {
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
                Job::Timeout { request_id: id }
                    .dedupe_key()
                    .into_iter()
                    .collect()
            } else {
                Vec::new()
            },
            audit: Vec::new(),
            members: Vec::new(),
            extend: None,
        }
    }
}

#[derive(Debug)]
pub enum GrantChange {
    Create(NewGrant),
    Activate {
        granted_at: i64,
        expires_at: i64,
    },
    /// Access is to end, for this reason (unless a reason was recorded before).
    End(EndReason),
    /// Access has ended (the reason recorded unless one was before).
    Ended(EndReason),
}

/// The body of a transition, inside the caller's transaction; `false` (and nothing written)
/// when the request was not in one of `from`.
pub(super) async fn apply<C: ConnectionTrait>(db: &C, t: Transition) -> Result<bool, DbErr> {
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
        .exec(db)
        .await?;
    if result.rows_affected != 1 {
        return Ok(false);
    }
    if let Some(ext) = t.extend
        && !super::extensions::apply_extension(db, ext, t.now).await?
    {
        return Ok(false);
    }
    let grants = grant::Entity::update_many().filter(grant::Column::RequestId.eq(t.id));
    match t.grant {
        None => {}
        Some(GrantChange::Create(g)) => insert_grant(db, t.id, g).await?,
        Some(GrantChange::Activate {
            granted_at,
            expires_at,
        }) => {
            grants
                .col_expr(grant::Column::GrantedAt, Expr::value(granted_at))
                .col_expr(grant::Column::ExpiresAt, Expr::value(expires_at))
                .col_expr(
                    grant::Column::LastError,
                    Expr::value(Option::<String>::None),
                )
                .exec(db)
                .await?;
        }
        Some(GrantChange::End(reason)) => {
            grants
                .col_expr(grant::Column::EndReason, Expr::value(reason.as_str()))
                .filter(grant::Column::EndReason.is_null())
                .exec(db)
                .await?;
        }
        Some(GrantChange::Ended(reason)) => {
            grants
                .col_expr(grant::Column::EndedAt, Expr::value(t.now))
                .col_expr(
                    grant::Column::LastError,
                    Expr::value(Option::<String>::None),
                )
                .col_expr(
                    grant::Column::EndReason,
                    Func::coalesce([
                        Expr::col(grant::Column::EndReason),
                        Expr::value(reason.as_str()),
                    ])
                    .into(),
                )
                .exec(db)
                .await?;
        }
    }
    insert_jobs(db, &t.jobs, t.now).await?;
    if !t.settles.is_empty() {
        job::Entity::update_many()
            .col_expr(job::Column::DoneAt, Expr::value(t.now))
            .col_expr(job::Column::Outcome, Expr::value("settled"))
            .filter(job::Column::DedupeKey.is_in(t.settles.clone()))
            .filter(job::Column::DoneAt.is_null())
            .filter(job::Column::LockedUntil.is_null())
            .exec(db)
            .await?;
    }
    insert_audit(db, Some(t.id), &t.audit, t.now).await?;
    if !t.members.is_empty() {
        let left_out =
            super::bundles::insert_members(db, t.id, State::Approved, &t.members, t.now).await?;
        insert_audit(db, Some(t.id), &left_out_events(&left_out), t.now).await?;
    }
    Ok(true)
}

/// Audit events for the resources of a bundle left out because their request was open already.
pub(super) fn left_out_events(left_out: &[String]) -> Vec<NewAudit> {
    left_out
        .iter()
        .map(|resource| {
            audit(
                "jitbot",
                "bundle_resource_skipped",
                serde_json::json!({"resource": resource, "reason": "already open in another request"}),
            )
        })
        .collect()
}
