//! Ending a request early: the requester cancels, or the requester or an approver revokes. An
//! approved request whose grant is still under way ends too, and whatever of it took is removed.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Service, label, ms};
use crate::domain::{EndReason, Job, Lane, RequestId, Scheduled, State};
use crate::slack::blocks;
use crate::store::{self, BundleSpec, GrantChange, Transition};

impl Service {
    pub(super) async fn cancel(
        &self,
        user: &str,
        id: RequestId,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<String, String>> {
        let Some(request) = self.own_request(id).await? else {
            return Ok(Err(format!("There is no request {id}.")));
        };
        if request.requester != user {
            return Ok(Err(format!(
                "Request {id} is not yours; only its requester can cancel it."
            )));
        }
        let now_ms = ms(now);
        let card = card_of(&request, now_ms);
        let mut t = Transition::new(request.id, &[State::Pending], State::Cancelled, now_ms);
        t.decided_by = Some(user.to_string());
        t.jobs = vec![
            card.clone(),
            Job::Dm {
                user: user.to_string(),
                text: blocks::dm_cancelled(request.id, &request.resource),
                done: None,
            }
            .at(now_ms),
        ];
        t.audit = vec![store::audit(user, "cancelled", json!({}))];
        if self.store.transition(t).await? {
            self.woke(&[Lane::Access, Lane::Messages]);
            return Ok(Ok(format!("Request {id} is cancelled.")));
        }
        let lead = self
            .stop_grant(&request, user, EndReason::Cancelled, card, now_ms)
            .await?;
        let members = self.end_members(&request, user, now_ms).await?;
        if lead || members > 0 {
            self.woke(&[Lane::Access, Lane::Messages]);
            return Ok(Ok(format!(
                "Request {id} is cancelled. Its grant was under way: jitbot is stopping it and removing anything that took."
            )));
        }
        let state = self.state_label(request.id).await?;
        Ok(Err(format!(
            "Request {id} is {state}; only a pending or approved request can be cancelled. Use `/jit revoke {}` to end access early.",
            request.id
        )))
    }

    /// An approved request whose grant is still under way ends (cancelled, or revoked early):
    /// the grant job stops if it is not running, and the end-access job takes back whatever
    /// took, once the grant job is done.
    pub(super) async fn stop_grant(
        &self,
        request: &store::Request,
        user: &str,
        reason: EndReason,
        card: Scheduled,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let provider = self
            .store
            .grant(request.id)
            .await?
            .map(|g| g.provider_name)
            .unwrap_or_default();
        let mut t = Transition::new(request.id, &[State::Approved], State::Revoking, now_ms);
        t.decided_by = Some(user.to_string());
        t.grant = Some(GrantChange::End(reason));
        t.settles = vec![Job::grant_key(request.id)];
        t.jobs = vec![
            Job::EndAccess {
                request_id: request.id,
                provider,
            }
            .at(now_ms),
            card,
        ];
        t.audit = vec![store::audit(
            user,
            if reason == EndReason::Cancelled {
                "cancelled"
            } else {
                "revoke_requested"
            },
            json!({"while": "granting"}),
        )];
        self.store.transition(t).await
    }

    pub(super) async fn revoke(
        &self,
        user: &str,
        id: RequestId,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<String, String>> {
        let Some(request) = self.own_request(id).await? else {
            return Ok(Err(format!("There is no request {id}.")));
        };
        // A grant of a resource that left the policy has no approvers any more: its requester
        // and the admins can still end it.
        let policy = self.policy.now();
        let resources = BundleSpec::resources_of(&request);
        let may = request.requester == user
            || policy.is_admin(user)
            || resources.iter().any(|name| {
                policy
                    .resources
                    .get(name)
                    .is_some_and(|r| policy.is_approver(r, user))
            });
        if !may {
            return Ok(Err(format!(
                "Only the requester, an approver of *{}* or a jitbot admin can revoke {id}.",
                request.resource
            )));
        }
        let now_ms = ms(now);
        let card = card_of(&request, now_ms);
        let lead_active = self
            .start_revoke(&request, user, json!({}), card.clone(), now_ms)
            .await?;
        // A bundle's other resources end with it.
        let members = self.end_members(&request, user, now_ms).await?;
        if lead_active || members > 0 {
            self.woke(&[Lane::Access, Lane::Messages]);
            return Ok(Ok(format!(
                "Access for {id} (*{}*) is being revoked.",
                resources.join(", ")
            )));
        }
        if self
            .stop_grant(&request, user, EndReason::Revoked, card, now_ms)
            .await?
        {
            self.woke(&[Lane::Access, Lane::Messages]);
            return Ok(Ok(format!(
                "Request {id} (*{}*) was approved but not active yet: jitbot is stopping its grant and removing anything that took.",
                request.resource
            )));
        }
        let state = self.state_label(request.id).await?;
        let hint = if state == State::Pending.as_str() {
            format!(" Use `/jit cancel {}` for a pending request.", request.id)
        } else {
            String::new()
        };
        Ok(Err(format!(
            "Request {id} is {state}, not active; there is nothing to revoke.{hint}"
        )))
    }

    /// The request's current state as people read it (after a guarded change lost).
    pub(super) async fn state_label(&self, id: i32) -> anyhow::Result<String> {
        Ok(self
            .store
            .request(id)
            .await?
            .map(|r| label(&r.state))
            .unwrap_or_default())
    }

    pub(super) async fn own_request(
        &self,
        id: RequestId,
    ) -> anyhow::Result<Option<store::Request>> {
        match i32::try_from(id.0) {
            Ok(id) => self.store.request(id).await,
            Err(_) => Ok(None),
        }
    }
}

/// The update of `request`'s card, now.
fn card_of(request: &store::Request, now_ms: i64) -> Scheduled {
    Job::UpdateCard {
        request_id: request.id,
        channel: request.channel.clone(),
    }
    .at(now_ms)
}

impl Service {
    /// An active grant starts ending early (`revoking`), with its end-access job and the card's
    /// update; `false` when it was not active.
    async fn start_revoke(
        &self,
        request: &store::Request,
        user: &str,
        detail: serde_json::Value,
        card: Scheduled,
        now_ms: i64,
    ) -> anyhow::Result<bool> {
        let provider = self
            .store
            .grant(request.id)
            .await?
            .map(|g| g.provider_name)
            .unwrap_or_default();
        let mut t = Transition::new(request.id, &[State::Active], State::Revoking, now_ms);
        t.decided_by = Some(user.to_string());
        t.grant = Some(GrantChange::End(EndReason::Revoked));
        t.jobs = vec![
            Job::EndAccess {
                request_id: request.id,
                provider,
            }
            .at(now_ms),
            card,
        ];
        t.audit = vec![store::audit(user, "revoke_requested", detail)];
        self.store.transition(t).await
    }

    /// Ends the other resources of the bundle `lead` leads that are still granted or being
    /// granted (each its own guarded change: one that ended meanwhile is left alone); how many.
    async fn end_members(
        &self,
        lead: &store::Request,
        user: &str,
        now_ms: i64,
    ) -> anyhow::Result<usize> {
        if lead.bundle.is_none() {
            return Ok(0);
        }
        let mut ended = 0;
        for member in self.store.bundle_members(lead.id).await? {
            let card = card_of(&member, now_ms);
            if self
                .start_revoke(
                    &member,
                    user,
                    json!({"with": lead.id}),
                    card.clone(),
                    now_ms,
                )
                .await?
                || self
                    .stop_grant(&member, user, EndReason::Revoked, card, now_ms)
                    .await?
            {
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Ends a request early, whatever stage it is at: a pending one is cancelled, an approved or
    /// active one revoked (the API's `DELETE`).
    pub async fn end_early(
        &self,
        user: &str,
        request: &store::Request,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<String, String>> {
        let id = RequestId(i64::from(request.id));
        if request.state == State::Pending.as_str() {
            self.cancel(user, id, now).await
        } else {
            self.revoke(user, id, now).await
        }
    }
}
