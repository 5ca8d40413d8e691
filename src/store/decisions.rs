//! Decisions: one per person per request, recorded in one transaction with what they cause.

use anyhow::Context;
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};

use super::entities::{approval, request};
use super::requests::{Transition, apply};
use super::{Approval, Request, Store};
use crate::domain::State;

/// What became of one person's decision on a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No such request.
    Missing,
    /// The request was no longer pending; nothing was recorded.
    NotPending(String),
    /// This person had already decided (`approve` or `deny`); nothing was recorded.
    AlreadyDecided(String),
    /// Recorded, with its effects, in one transaction. `approvers` includes this one.
    Counted { approvers: Vec<String> },
}

impl Store {
    /// One person's decision, in one transaction with everything it causes: the request row is
    /// locked (PostgreSQL) or the writer is ours alone (SQLite), the decision is recorded only if
    /// the request is still pending and the person has not decided, and `effects` (given who has
    /// approved so far, this person included) says what changes with it. A crash leaves all of it
    /// or none; concurrent deciders are answered in the order they committed.
    pub async fn decide<F>(
        &self,
        id: i32,
        approver: &str,
        decision: &str,
        now: i64,
        effects: F,
    ) -> anyhow::Result<Verdict>
    where
        F: FnOnce(&Request, &[String]) -> anyhow::Result<Transition>,
    {
        let txn = self.db.begin().await?;
        let Some(request) = request::Entity::find_by_id(id)
            .lock_exclusive()
            .one(&txn)
            .await?
        else {
            txn.rollback().await?;
            return Ok(Verdict::Missing);
        };
        if request.state != State::Pending.as_str() {
            txn.rollback().await?;
            return Ok(Verdict::NotPending(request.state));
        }
        let decisions = approval::Entity::find()
            .filter(approval::Column::RequestId.eq(id))
            .order_by_asc(approval::Column::Id)
            .all(&txn)
            .await?;
        if let Some(mine) = decisions.iter().find(|d| d.approver == approver) {
            let previous = mine.decision.clone();
            txn.rollback().await?;
            return Ok(Verdict::AlreadyDecided(previous));
        }
        approval::Entity::insert(approval::ActiveModel {
            request_id: Set(id),
            approver: Set(approver.to_string()),
            decision: Set(decision.to_string()),
            created_at: Set(now),
            ..Default::default()
        })
        .exec_without_returning(&txn)
        .await
        .context("recording a decision")?;
        let approvers: Vec<String> = decisions
            .into_iter()
            .filter(|d| d.decision == "approve")
            .map(|d| d.approver)
            .chain((decision == "approve").then(|| approver.to_string()))
            .collect();
        let t = effects(&request, &approvers)?;
        if !apply(&txn, t).await? {
            txn.rollback().await?;
            let state = self.request(id).await?.map(|r| r.state).unwrap_or_default();
            return Ok(Verdict::NotPending(state));
        }
        txn.commit().await?;
        Ok(Verdict::Counted { approvers })
    }

    /// Which of these requests `approver` has already decided, in one query.
    pub async fn decided_by(
        &self,
        approver: &str,
        request_ids: &[i32],
    ) -> anyhow::Result<std::collections::HashSet<i32>> {
        if request_ids.is_empty() {
            return Ok(Default::default());
        }
        let ids: Vec<i32> = approval::Entity::find()
            .select_only()
            .column(approval::Column::RequestId)
            .filter(approval::Column::Approver.eq(approver))
            .filter(
                approval::Column::RequestId
                    .is_in(super::shapes::padded_from(request_ids.iter().copied())),
            )
            .into_tuple()
            .all(&self.read)
            .await?;
        Ok(ids.into_iter().collect())
    }

    /// Decisions on a request, oldest first.
    pub async fn decisions(&self, request_id: i32) -> anyhow::Result<Vec<Approval>> {
        Ok(approval::Entity::find()
            .filter(approval::Column::RequestId.eq(request_id))
            .order_by_asc(approval::Column::Id)
            .all(&self.read)
            .await?)
    }
}
