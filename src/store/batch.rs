//! The set-based statements of one group-commit batch (see [`super::writer`]): new requests
//! with their grants, jobs and audit events in one multi-row insert per table, and state
//! changes as one guarded `UPDATE … RETURNING` per kind of change.

use std::collections::{BTreeMap, HashMap, HashSet};

use sea_orm::sea_query::{Expr, Func};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};

use super::Request;
use super::entities::{grant, job, request};
use super::queue::{insert_jobs, insert_new_jobs};
use super::requests::{
    Created, GrantChange, Transition, audit_rows, grant_row, key_of, open_counts, request_row,
};
use super::shapes::{padded, padded_from, runs};
use super::writer::Intake;
use crate::domain::State;

/// The people of `intakes` whose policy caps their open requests: the ones to count.
pub(super) fn capped(intakes: &[Intake]) -> Vec<&str> {
    intakes
        .iter()
        .filter(|i| i.new.max_open.is_some())
        .map(|i| i.new.requester.as_str())
        .collect()
}

/// For each intake, `Some((open, max_open))` if its person already holds their most open
/// requests; earlier requests of the batch count against later ones of the same person.
pub(super) fn over_caps(
    intakes: &[Intake],
    mut open: HashMap<String, u64>,
) -> Vec<Option<(u64, u32)>> {
    intakes
        .iter()
        .map(|i| {
            let max_open = i.new.max_open?;
            let held = open.entry(i.new.requester.clone()).or_insert(0);
            if *held >= u64::from(max_open) {
                Some((*held, max_open))
            } else {
                *held += 1;
                None
            }
        })
        .collect()
}

/// What follows the requests' insert: what each intake got, and the rows of the stored ones'
/// grants, jobs and audit events (the insert answered `inserted`, by open key).
pub(super) struct Followers {
    pub created: Vec<Created>,
    pub grants: Vec<grant::ActiveModel>,
    pub jobs: Vec<crate::domain::Scheduled>,
    pub audits: Vec<super::entities::audit::ActiveModel>,
    /// Stored bundles' leads whose other resources are still to insert: (intake, request id).
    pub bundles: Vec<(usize, i32)>,
}

pub(super) fn followers(
    intakes: &[Intake],
    over: &[Option<(u64, u32)>],
    mut inserted: HashMap<String, Request>,
) -> Followers {
    let mut f = Followers {
        created: Vec::with_capacity(intakes.len()),
        grants: Vec::new(),
        jobs: Vec::new(),
        audits: Vec::new(),
        bundles: Vec::new(),
    };
    for (n, (intake, over)) in intakes.iter().zip(over).enumerate() {
        if let Some((open, max_open)) = *over {
            f.created.push(Created::TooMany { open, max_open });
            continue;
        }
        let Some(request) = inserted.remove(&key_of(&intake.new)) else {
            f.created.push(Created::AlreadyOpen);
            continue;
        };
        if let Some(g) = &intake.grant {
            f.grants.push(grant_row(request.id, g.clone()));
        }
        f.jobs.extend((intake.jobs)(request.id));
        f.audits.extend(audit_rows(
            Some(request.id),
            std::slice::from_ref(&intake.event),
            intake.now,
        ));
        if !intake.members.is_empty() {
            f.bundles.push((n, request.id));
        }
        f.created.push(Created::Stored(Box::new(request)));
    }
    f
}

/// Inserts new requests (each for a different person and resource) with their grants, jobs and
/// audit events; says for each whether it was stored, or why not: its person already has an open
/// request for the resource, or holds `max_open` open requests (counted in this transaction, one
/// query for the whole batch).
pub(super) async fn create_batch<C: ConnectionTrait>(
    db: &C,
    intakes: &[Intake],
) -> Result<Vec<Created>, DbErr> {
    if intakes.is_empty() {
        return Ok(Vec::new());
    }
    let open = open_counts(db, &capped(intakes)).await?;
    let over = over_caps(intakes, open);
    let rows: Vec<_> = intakes
        .iter()
        .zip(&over)
        .filter(|(_, over)| over.is_none())
        .map(|(i, _)| request_row(&i.new, i.state, i.now))
        .collect();
    let mut inserted: HashMap<String, Request> = HashMap::new();
    for run in runs(rows) {
        if let sea_orm::TryInsertResult::Inserted(models) = request::Entity::insert_many(run)
            .on_conflict_do_nothing_on([request::Column::OpenKey])
            .exec_with_returning_many(db)
            .await?
        {
            inserted.extend(
                models
                    .into_iter()
                    .filter_map(|m| m.open_key.clone().map(|k| (k, m))),
            );
        }
    }
    let mut f = followers(intakes, &over, inserted);
    for (n, id) in std::mem::take(&mut f.bundles) {
        let intake = &intakes[n];
        let left_out =
            super::bundles::insert_members(db, id, intake.state, &intake.members, intake.now)
                .await?;
        f.audits.extend(audit_rows(
            Some(id),
            &super::requests::left_out_events(&left_out),
            intake.now,
        ));
    }
    for run in runs(f.grants) {
        grant::Entity::insert_many(run)
            .exec_without_returning(db)
            .await?;
    }
    let now = intakes.iter().map(|i| i.now).max().unwrap_or_default();
    insert_new_jobs(db, &f.jobs, now).await?;
    insert_audits(db, f.audits).await?;
    Ok(f.created)
}

/// Applies transitions (each on a different request) inside the caller's transaction; says for
/// each whether its guard held.
pub(super) async fn apply_batch<C: ConnectionTrait>(
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
        let ids = padded_from(members.iter().map(|i| batch[*i].id));
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
    for run in runs(creates) {
        grant::Entity::insert_many(run)
            .exec_without_returning(db)
            .await?;
    }
    for (reason, ids) in ending {
        grant::Entity::update_many()
            .col_expr(grant::Column::EndReason, Expr::value(reason))
            .filter(grant::Column::RequestId.is_in(padded(ids)))
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
            .filter(grant::Column::RequestId.is_in(padded(ids)))
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
            .filter(job::Column::DedupeKey.is_in(padded(settles)))
            .filter(job::Column::DoneAt.is_null())
            .filter(job::Column::LockedUntil.is_null())
            .exec(db)
            .await?;
    }
    let audits: Vec<_> = applied
        .iter()
        .flat_map(|t| audit_rows(Some(t.id), &t.audit, t.now))
        .collect();
    insert_audits(db, audits).await?;
    Ok(changed)
}

/// Inserts audit events, in runs of the few statement shapes.
async fn insert_audits<C: ConnectionTrait>(
    db: &C,
    audits: Vec<super::entities::audit::ActiveModel>,
) -> Result<(), DbErr> {
    for run in runs(audits) {
        super::entities::audit::Entity::insert_many(run)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}
