//! What a command or a click does. Everything here answers at once: it reads and writes the store
//! and queues jobs; provider and Slack calls happen later in the scheduler.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::domain::command::HELP;
use crate::domain::{Command, EndReason, GrantDuration, Job, Policy, RequestId, Resource, State};
use crate::metrics::Metrics;
use crate::scheduler::Wake;
use crate::slack::blocks::{self, mention};
use crate::slack::payload::{Click, ClickAction};
use crate::store::{self, GrantChange, NewGrant, NewRequest, Store, Transition, Verdict};

/// Longest reason `/jit request` takes: the card shows it whole, well within Slack's limits.
pub const MAX_REASON_CHARS: usize = 1_000;

#[derive(Clone)]
pub struct Service {
    pub store: Store,
    pub policy: Arc<Policy>,
    /// Wakes the scheduler when a job is queued.
    pub wake: Arc<Wake>,
    pub metrics: Arc<Metrics>,
}

/// A decision from a button or from `/jit approve|deny`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

impl Decision {
    /// As stored: `approve` or `deny`.
    pub fn verb(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        }
    }
}

/// The answer to a decision: accepted (with a note for the decider) or refused (with why).
#[derive(Debug, PartialEq, Eq)]
pub enum Decided {
    Accepted(String),
    Refused(String),
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn refuse(text: impl Into<String>) -> Decided {
    Decided::Refused(text.into())
}

impl Service {
    fn woke(&self) {
        self.wake.all();
    }

    /// Handles `/jit …`; the result is the ephemeral answer.
    pub async fn command(
        &self,
        user: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<String> {
        let command = match Command::parse(text) {
            Ok(c) => c,
            Err(e) => {
                Metrics::inc(&self.metrics.commands_refused);
                return Ok(e.to_string());
            }
        };
        let answer = match command {
            Command::Help => Ok(HELP.to_string()),
            Command::Request { resource, duration, reason } => self.request(user, &resource, duration, reason, now).await?,
            Command::List => Ok(self.list(user).await?),
            Command::Pending => Ok(self.pending(user).await?),
            Command::Resources => Ok(self.resources(user)),
            Command::Explain { resource } => self.explain(&resource),
            Command::Approve { id } => self.decide_by_command(user, id, Decision::Approve, None, now).await?,
            Command::Deny { id, reason } => self.decide_by_command(user, id, Decision::Deny, reason, now).await?,
            Command::Cancel { id } => self.cancel(user, id, now).await?,
            Command::Revoke { id } => self.revoke(user, id, now).await?,
            Command::Extend { .. } => Err("`/jit extend` is not available in this version of jitbot yet. Ask again with `/jit request` when your access ends.".to_string()),
        };
        Ok(answer.unwrap_or_else(|refusal| {
            Metrics::inc(&self.metrics.commands_refused);
            refusal
        }))
    }

    fn resource(&self, name: &str) -> Result<&Resource, String> {
        self.policy
            .resources
            .get(name)
            .ok_or_else(|| match self.policy.suggest(name) {
                Some(s) => {
                    format!("Unknown resource `{name}`. Did you mean `{s}`? See `/jit resources`.")
                }
                None => format!(
                    "Unknown resource `{name}`. See `/jit resources` for what you can ask for."
                ),
            })
    }

    async fn request(
        &self,
        user: &str,
        name: &str,
        duration: Option<GrantDuration>,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<String, String>> {
        let resource = match self.resource(name) {
            Ok(r) => r,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let name = resource.name.as_str();
        if !self.policy.may_request(resource, user) {
            return Ok(Err(format!(
                "You may not request *{name}*. See `/jit explain {name}` for who may."
            )));
        }
        let duration = duration.unwrap_or(resource.default_duration);
        if duration < resource.min_duration {
            return Ok(Err(format!(
                "{duration} is shorter than the minimum of {} for *{name}*. Try `/jit request {name} {}`.",
                resource.min_duration, resource.min_duration
            )));
        }
        if duration > resource.max_duration {
            return Ok(Err(format!(
                "{duration} is longer than the maximum of {} for *{name}*. Try `/jit request {name} {}`.",
                resource.max_duration, resource.max_duration
            )));
        }
        let reason = reason.unwrap_or_default();
        let reason_chars = reason.chars().count();
        if reason_chars > MAX_REASON_CHARS {
            return Ok(Err(format!(
                "That reason is {reason_chars} characters; keep it under {MAX_REASON_CHARS} and link to the ticket for the details."
            )));
        }
        if resource.reason_required && reason.is_empty() {
            return Ok(Err(format!(
                "*{name}* needs a reason. Try `/jit request {name} {duration} INC-4312 debugging`."
            )));
        }
        let Some(provider) = self.policy.providers.get(&resource.provider) else {
            return Ok(Err(format!(
                "*{name}* has no provider configured. Tell the jitbot admins."
            )));
        };
        let Some(identity) = self.policy.identity(user, provider.kind()) else {
            return Ok(Err(format!(
                "You have no {} identity for *{name}*. Ask an admin to add your login under `identities` in the policy.",
                provider.kind()
            )));
        };
        // One open request per person and resource: the store's unique index answers, below.
        let auto = self.policy.auto_approves(resource, user, duration);
        let snapshot = NewGrant {
            provider_name: resource.provider.clone(),
            provider: serde_json::to_value(provider)?,
            grant_shape: serde_json::Value::Object(resource.grant.clone()),
            identity: serde_json::to_value(&identity)?,
        };
        let new = NewRequest {
            resource: name.to_string(),
            requester: user.to_string(),
            duration_secs: duration.secs() as i64,
            reason: reason.clone(),
            approvals_needed: resource.approvals as i32,
            auto_approved: auto,
            channel: resource.channel.clone(),
        };
        let now_ms = ms(now);
        let ttl_end = now_ms + self.policy.settings.request_ttl.secs() as i64 * 1000;
        let event = store::audit(
            user,
            "requested",
            json!({"resource": name, "duration": duration.to_string(), "reason": reason, "auto_approved": auto}),
        );
        let created = self
            .store
            .create_request(
                new,
                if auto {
                    State::Approved
                } else {
                    State::Pending
                },
                auto.then_some(snapshot),
                |id| {
                    let mut jobs = vec![
                        Job::PostCard {
                            request_id: id,
                            channel: resource.channel.clone(),
                        }
                        .at(now_ms),
                    ];
                    if auto {
                        jobs.push(
                            Job::Grant {
                                request_id: id,
                                provider: resource.provider.clone(),
                            }
                            .at(now_ms),
                        );
                    } else {
                        jobs.push(Job::Timeout { request_id: id }.at(ttl_end));
                    }
                    jobs
                },
                event,
                now_ms,
            )
            .await?;
        let request = match created {
            Ok(r) => r,
            Err(store::AlreadyOpen(Some(open))) => return Ok(Err(already_open(&open))),
            Err(store::AlreadyOpen(None)) => {
                return Ok(Err(format!(
                    "You already have an open request for *{name}*. See `/jit list`."
                )));
            }
        };
        Metrics::inc(&self.metrics.requests_created);
        self.woke();
        Ok(Ok(if auto {
            format!(
                "Request #{} for *{name}* ({duration}) is auto-approved by policy; access is being granted.",
                request.id
            )
        } else {
            format!(
                "Request #{} for *{name}* ({duration}) is waiting for approval in <#{}>.",
                request.id, resource.channel
            )
        }))
    }

    async fn list(&self, user: &str) -> anyhow::Result<String> {
        let requests = self.store.requests_of(user, 10).await?;
        if requests.is_empty() {
            return Ok("You have no requests yet. Try `/jit resources`.".into());
        }
        let mut lines = vec!["Your recent requests:".to_string()];
        for r in requests {
            let mut line = format!("• #{} *{}* · {}", r.id, r.resource, label(&r.state));
            if r.state == State::Active.as_str()
                && let Some(exp) = self.store.grant(r.id).await?.and_then(|g| g.expires_at)
                && let Some(t) = DateTime::from_timestamp_millis(exp)
            {
                line.push_str(&format!(" until {}", blocks::when(t)));
            }
            lines.push(line);
        }
        Ok(lines.join("\n"))
    }

    async fn pending(&self, user: &str) -> anyhow::Result<String> {
        let mut lines = Vec::new();
        for r in self.store.requests_in_state(State::Pending, 200).await? {
            let Some(resource) = self.policy.resources.get(&r.resource) else {
                continue;
            };
            if !self.policy.is_approver(resource, user)
                || (r.requester == user && !resource.self_approval)
            {
                continue;
            }
            if self
                .store
                .decisions(r.id)
                .await?
                .iter()
                .any(|d| d.approver == user)
            {
                continue;
            }
            lines.push(format!(
                "• #{} {} wants *{}* for {}: {}",
                r.id,
                mention(&r.requester),
                r.resource,
                secs(r.duration_secs),
                blocks::escape(&r.reason)
            ));
        }
        Ok(if lines.is_empty() {
            "Nothing is waiting for you.".into()
        } else {
            format!(
                "Waiting for you (`/jit approve <id>`):\n{}",
                lines.join("\n")
            )
        })
    }

    fn resources(&self, user: &str) -> String {
        let lines: Vec<String> = self
            .policy
            .resources
            .values()
            .filter(|r| self.policy.may_request(r, user))
            .map(|r| {
                format!(
                    "• *{}*{} · up to {} · {} approval{}",
                    r.name,
                    if r.description.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.description)
                    },
                    r.max_duration,
                    r.approvals,
                    if r.approvals == 1 { "" } else { "s" }
                )
            })
            .collect();
        if lines.is_empty() {
            "There is nothing you may request.".into()
        } else {
            format!("You may request:\n{}", lines.join("\n"))
        }
    }

    fn explain(&self, name: &str) -> Result<String, String> {
        let r = self.resource(name)?;
        let approvers: Vec<String> = self
            .policy
            .expand(&r.approvers)
            .iter()
            .map(|u| mention(u))
            .collect();
        let requesters = match &r.requesters {
            None => "anyone".to_string(),
            Some(list) => self
                .policy
                .expand(list)
                .iter()
                .map(|u| mention(u))
                .collect::<Vec<_>>()
                .join(", "),
        };
        Ok(format!(
            "*{}*{}\n• durations {} to {} (default {})\n• approvers: {} ({} needed{})\n• may request: {}\n• reason {}",
            r.name,
            if r.description.is_empty() {
                String::new()
            } else {
                format!(": {}", r.description)
            },
            r.min_duration,
            r.max_duration,
            r.default_duration,
            approvers.join(", "),
            r.approvals,
            if r.self_approval {
                ", self-approval allowed"
            } else {
                ""
            },
            requesters,
            if r.reason_required {
                "required"
            } else {
                "optional"
            }
        ))
    }

    async fn decide_by_command(
        &self,
        user: &str,
        id: RequestId,
        decision: Decision,
        note: Option<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<String, String>> {
        let Ok(id) = i32::try_from(id.0) else {
            return Ok(Err(format!("There is no request {id}.")));
        };
        Ok(match self.decide(user, id, decision, note, now).await? {
            Decided::Accepted(text) => Ok(text),
            Decided::Refused(text) => Err(text),
        })
    }

    /// A click on a card: refusals go back to the clicker as an ephemeral message.
    pub async fn click(&self, click: Click, now: DateTime<Utc>) -> anyhow::Result<()> {
        let decision = match click.action {
            ClickAction::Approve => Decision::Approve,
            ClickAction::Deny => Decision::Deny,
        };
        let outcome = match RequestId::parse(&click.value).and_then(|id| i32::try_from(id.0).ok()) {
            Some(id) => self.decide(&click.user, id, decision, None, now).await?,
            None => {
                self.store
                    .audit(
                        None,
                        store::audit(
                            &click.user,
                            "click_refused",
                            json!({"reason": "bad request id", "value": click.value}),
                        ),
                        ms(now),
                    )
                    .await?;
                refuse("That button does not name a request.")
            }
        };
        if let Decided::Refused(text) = outcome {
            Metrics::inc(&self.metrics.clicks_refused);
            if !click.channel.is_empty() {
                self.store
                    .enqueue(
                        &[Job::Ephemeral {
                            channel: click.channel,
                            user: click.user,
                            text,
                        }
                        .at(ms(now))],
                        ms(now),
                    )
                    .await?;
                self.woke();
            }
        }
        Ok(())
    }

    /// One approver's decision, counted once per person; `approvals` distinct approvals approve.
    /// The decision and everything it causes are one transaction: a crash keeps all or none,
    /// and a person who decided cannot decide again either way.
    pub async fn decide(
        &self,
        user: &str,
        id: i32,
        decision: Decision,
        note: Option<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Decided> {
        let now_ms = ms(now);
        let verb = decision.verb();
        let (request, resource) = match self.judge(user, id, decision).await? {
            Ok(pair) => pair,
            Err(reason) => {
                let known = !reason.starts_with("There is no request");
                return self
                    .refused(user, known.then_some(id), verb, reason, now_ms)
                    .await;
            }
        };
        let needed = request.approvals_needed;
        let snapshot = match decision {
            Decision::Deny => None,
            Decision::Approve => {
                let Some(provider) = self.policy.providers.get(&resource.provider) else {
                    return Ok(refuse(format!(
                        "*{}* has no provider configured. Tell the jitbot admins.",
                        resource.name
                    )));
                };
                let identity = self
                    .policy
                    .identity(&request.requester, provider.kind())
                    .unwrap_or_default();
                Some(NewGrant {
                    provider_name: resource.provider.clone(),
                    provider: serde_json::to_value(provider)?,
                    grant_shape: serde_json::Value::Object(resource.grant.clone()),
                    identity: serde_json::to_value(&identity)?,
                })
            }
        };
        let decider = user.to_string();
        let verdict = self
            .store
            .decide(id, user, verb, now_ms, move |req, approvers| {
                let card = Job::UpdateCard {
                    request_id: id,
                    channel: req.channel.clone(),
                }
                .at(now_ms);
                let t = match snapshot {
                    None => {
                        let mut t = Transition::new(id, &[State::Pending], State::Denied, now_ms);
                        t.decided_by = Some(decider.clone());
                        t.note = note.clone();
                        t.jobs = vec![
                            card,
                            Job::Dm {
                                user: req.requester.clone(),
                                text: blocks::dm_denied(
                                    id,
                                    &req.resource,
                                    &decider,
                                    note.as_deref(),
                                ),
                            }
                            .at(now_ms),
                        ];
                        t.audit = vec![store::audit(&decider, "denied", json!({"reason": note}))];
                        t
                    }
                    Some(_) if (approvers.len() as i32) < req.approvals_needed => {
                        let mut t = Transition::new(id, &[State::Pending], State::Pending, now_ms);
                        t.jobs = vec![card];
                        t.audit = vec![store::audit(
                            &decider,
                            "approval_recorded",
                            json!({"so_far": approvers.len(), "needed": req.approvals_needed}),
                        )];
                        t
                    }
                    Some(grant) => {
                        let provider = grant.provider_name.clone();
                        let mut t = Transition::new(id, &[State::Pending], State::Approved, now_ms);
                        t.decided_by = Some(approvers.join(","));
                        t.grant = Some(GrantChange::Create(grant));
                        t.jobs = vec![
                            card,
                            Job::Grant {
                                request_id: id,
                                provider,
                            }
                            .at(now_ms),
                        ];
                        t.audit = vec![store::audit(
                            &decider,
                            "approved",
                            json!({"approvers": approvers}),
                        )];
                        t
                    }
                };
                Ok(t)
            })
            .await?;
        match verdict {
            Verdict::Missing => {
                self.refused(
                    user,
                    None,
                    verb,
                    format!("There is no request #{id}."),
                    now_ms,
                )
                .await
            }
            Verdict::NotPending(state) => {
                let reason = format!("Request #{id} is already {}.", label(&state));
                self.refused(user, Some(id), verb, reason, now_ms).await
            }
            Verdict::AlreadyDecided(previous) => {
                let done = if previous == "approve" {
                    "approved"
                } else {
                    "denied"
                };
                let reason = if previous == verb {
                    format!("You already {done} request #{id}.")
                } else {
                    format!("You already {done} request #{id}; a decision cannot be changed.")
                };
                self.refused(user, Some(id), verb, reason, now_ms).await
            }
            Verdict::Counted { approvers } => {
                self.woke();
                Ok(Decided::Accepted(match decision {
                    Decision::Deny => format!("You denied request #{id}."),
                    Decision::Approve if (approvers.len() as i32) < needed => format!(
                        "Your approval of #{id} is recorded ({} of {needed}).",
                        approvers.len()
                    ),
                    Decision::Approve => {
                        format!("You approved request #{id}; access is being granted.")
                    }
                }))
            }
        }
    }

    /// A decision that changes nothing: audited, and answered with why.
    async fn refused(
        &self,
        user: &str,
        id: Option<i32>,
        verb: &str,
        reason: String,
        now_ms: i64,
    ) -> anyhow::Result<Decided> {
        self.store
            .audit(
                id,
                store::audit(
                    user,
                    "decision_refused",
                    json!({"decision": verb, "reason": reason}),
                ),
                now_ms,
            )
            .await?;
        Ok(refuse(reason))
    }

    /// May `user` decide request `id` now? The requester's own click is refused unless the
    /// resource allows self-approval.
    async fn judge(
        &self,
        user: &str,
        id: i32,
        decision: Decision,
    ) -> anyhow::Result<Result<(store::Request, &Resource), String>> {
        let Some(request) = self.store.request(id).await? else {
            return Ok(Err(format!("There is no request #{id}.")));
        };
        let Some(resource) = self.policy.resources.get(&request.resource) else {
            return Ok(Err(format!(
                "*{}* is no longer in the policy; request #{id} cannot be decided.",
                request.resource
            )));
        };
        if request.state != State::Pending.as_str() {
            return Ok(Err(format!(
                "Request #{id} is already {}.",
                label(&request.state)
            )));
        }
        if request.requester == user && !resource.self_approval {
            let verb = if decision == Decision::Approve {
                "approve"
            } else {
                "deny"
            };
            return Ok(Err(format!(
                "You cannot {verb} your own request #{id}; someone else must decide it. (Use `/jit cancel {id}` to withdraw it.)"
            )));
        }
        if !self.policy.is_approver(resource, user) {
            return Ok(Err(format!(
                "You are not an approver of *{}*. See `/jit explain {}`.",
                resource.name, resource.name
            )));
        }
        Ok(Ok((request, resource)))
    }

    async fn cancel(
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
        let card = Job::UpdateCard {
            request_id: request.id,
            channel: request.channel.clone(),
        }
        .at(now_ms);
        let mut t = Transition::new(request.id, &[State::Pending], State::Cancelled, now_ms);
        t.decided_by = Some(user.to_string());
        t.jobs = vec![
            card.clone(),
            Job::Dm {
                user: user.to_string(),
                text: blocks::dm_cancelled(request.id, &request.resource),
            }
            .at(now_ms),
        ];
        t.audit = vec![store::audit(user, "cancelled", json!({}))];
        if self.store.transition(t).await? {
            self.woke();
            return Ok(Ok(format!("Request {id} is cancelled.")));
        }
        if self
            .stop_grant(&request, user, EndReason::Cancelled, card, now_ms)
            .await?
        {
            self.woke();
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
    async fn stop_grant(
        &self,
        request: &store::Request,
        user: &str,
        reason: EndReason,
        card: crate::domain::Scheduled,
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

    async fn revoke(
        &self,
        user: &str,
        id: RequestId,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<String, String>> {
        let Some(request) = self.own_request(id).await? else {
            return Ok(Err(format!("There is no request {id}.")));
        };
        let may = request.requester == user
            || self
                .policy
                .resources
                .get(&request.resource)
                .is_some_and(|r| self.policy.is_approver(r, user));
        if !may {
            return Ok(Err(format!(
                "Only the requester or an approver of *{}* can revoke {id}.",
                request.resource
            )));
        }
        let now_ms = ms(now);
        let card = Job::UpdateCard {
            request_id: request.id,
            channel: request.channel.clone(),
        }
        .at(now_ms);
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
            card.clone(),
        ];
        t.audit = vec![store::audit(user, "revoke_requested", json!({}))];
        if self.store.transition(t).await? {
            self.woke();
            return Ok(Ok(format!(
                "Access for {id} (*{}*) is being revoked.",
                request.resource
            )));
        }
        if self
            .stop_grant(&request, user, EndReason::Revoked, card, now_ms)
            .await?
        {
            self.woke();
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
    async fn state_label(&self, id: i32) -> anyhow::Result<String> {
        Ok(self
            .store
            .request(id)
            .await?
            .map(|r| label(&r.state))
            .unwrap_or_default())
    }

    async fn own_request(&self, id: RequestId) -> anyhow::Result<Option<store::Request>> {
        match i32::try_from(id.0) {
            Ok(id) => self.store.request(id).await,
            Err(_) => Ok(None),
        }
    }
}

fn secs(duration_secs: i64) -> String {
    GrantDuration::from_secs(duration_secs.max(0) as u64)
        .map(|d| d.to_string())
        .unwrap_or_else(|| format!("{duration_secs}s"))
}

fn already_open(open: &store::Request) -> String {
    format!(
        "You already have request #{} for *{}* ({}). Use `/jit extend {} <duration>` to change its length, or `/jit cancel {}`.",
        open.id, open.resource, open.state, open.id, open.id
    )
}

/// A stored state as people read it.
fn label(state: &str) -> String {
    State::parse(state)
        .map(State::label)
        .unwrap_or_else(|| state.to_string())
}
