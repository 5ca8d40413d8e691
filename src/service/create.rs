//! `/jit request` and `POST /api/v1/requests`: a new request held to the policy in force,
//! stored with its card and its grant or time-out job, or refused with a code and a reason.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{MAX_REASON_CHARS, Service, already_open, ms};
use crate::domain::{GrantDuration, Job, Lane, State};
use crate::metrics::Metrics;
use crate::scheduler::pace::Turn;
use crate::store::{self, NewGrant, NewRequest};

/// Why a request was refused: a stable code for the API, and a sentence for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    /// The open request that stands in the way, for `already_open`.
    pub request_id: Option<i32>,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            request_id: None,
        }
    }
}

/// A request as it was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    pub id: i32,
    pub resource: String,
    pub duration: GrantDuration,
    pub auto_approved: bool,
    /// Where its card goes.
    pub channel: String,
}

impl Service {
    /// `/jit request`: the answer people read.
    pub(super) async fn request(
        &self,
        user: &str,
        name: &str,
        duration: Option<GrantDuration>,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<String, String>> {
        let created = match self
            .create_request(user, name, duration, reason, now)
            .await?
        {
            Ok(created) => created,
            Err(refusal) => return Ok(Err(refusal.message)),
        };
        let (id, name, duration) = (created.id, &created.resource, created.duration);
        Ok(Ok(if created.auto_approved {
            format!(
                "Request #{id} for *{name}* ({duration}) is auto-approved by policy; access is being granted."
            )
        } else {
            format!(
                "Request #{id} for *{name}* ({duration}) is waiting for approval in <#{}>.",
                created.channel
            )
        }))
    }

    /// A new request from a person or an API client, held to the policy in force: stored with
    /// its card and its grant or time-out job, or refused with a code and a reason.
    pub async fn create_request(
        &self,
        user: &str,
        name: &str,
        duration: Option<GrantDuration>,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<Created, Refusal>> {
        let policy = self.policy.now();
        let resource = match Self::resource(&policy, name) {
            Ok(r) => r,
            Err(refusal) => return Ok(Err(Refusal::new("unknown_resource", refusal))),
        };
        let name = resource.name.as_str();
        if !policy.may_request(resource, user) {
            return Ok(Err(Refusal::new(
                "not_allowed",
                format!("You may not request *{name}*. See `/jit explain {name}` for who may."),
            )));
        }
        let duration = duration.unwrap_or(resource.default_duration);
        if duration < resource.min_duration {
            return Ok(Err(Refusal::new(
                "duration_too_short",
                format!(
                    "{duration} is shorter than the minimum of {} for *{name}*. Try `/jit request {name} {}`.",
                    resource.min_duration, resource.min_duration
                ),
            )));
        }
        if duration > resource.max_duration {
            return Ok(Err(Refusal::new(
                "duration_too_long",
                format!(
                    "{duration} is longer than the maximum of {} for *{name}*. Try `/jit request {name} {}`.",
                    resource.max_duration, resource.max_duration
                ),
            )));
        }
        let reason = reason.unwrap_or_default();
        let reason_chars = reason.chars().count();
        if reason_chars > MAX_REASON_CHARS {
            return Ok(Err(Refusal::new(
                "reason_too_long",
                format!(
                    "That reason is {reason_chars} characters; keep it under {MAX_REASON_CHARS} and link to the ticket for the details."
                ),
            )));
        }
        if resource.reason_required && reason.is_empty() {
            return Ok(Err(Refusal::new(
                "reason_required",
                format!(
                    "*{name}* needs a reason. Try `/jit request {name} {duration} INC-4312 debugging`."
                ),
            )));
        }
        if let Some(pattern) = &resource.reason_pattern
            && !pattern.is_match(&reason)
        {
            return Ok(Err(Refusal::new(
                "reason_pattern",
                format!(
                    "The reason for *{name}* must match `{}` (a ticket id, usually). Try `/jit request {name} {duration} INC-4312 debugging`.",
                    pattern.as_str()
                ),
            )));
        }
        let Some(provider) = policy.providers.get(&resource.provider) else {
            return Ok(Err(Refusal::new(
                "no_provider",
                format!("*{name}* has no provider configured. Tell the jitbot admins."),
            )));
        };
        let Some(identity) = policy.identity(user, provider.kind()) else {
            return Ok(Err(Refusal::new(
                "no_identity",
                format!(
                    "You have no {} identity for *{name}*. Ask an admin to add your login under `identities` in the policy.",
                    provider.kind()
                ),
            )));
        };
        // One open request per person and resource: the store's unique index answers, below.
        let auto = policy.auto_approves(resource, user, duration);
        let snapshot = NewGrant {
            provider_name: resource.provider.clone(),
            provider: serde_json::to_value(provider)?,
            grant_shape: serde_json::Value::Object(resource.grant.clone()),
            identity: serde_json::to_value(&identity)?,
            approved_by: Vec::new(),
        };
        let new = NewRequest {
            resource: name.to_string(),
            requester: user.to_string(),
            duration_secs: duration.secs() as i64,
            reason: reason.clone(),
            approvals_needed: resource.approvals as i32,
            auto_approved: auto,
            channel: resource.channel.clone(),
            max_open: Some(policy.settings.max_open_per_user),
        };
        let now_ms = ms(now);
        let ttl_end = now_ms + policy.settings.request_ttl.secs() as i64 * 1000;
        let event = store::audit(
            user,
            "requested",
            json!({"resource": name, "duration": duration.to_string(), "reason": reason, "auto_approved": auto}),
        );
        let (channel, provider_name) = (resource.channel.clone(), resource.provider.clone());
        // A turn booked for a request that is then not stored (already open, store too slow) is
        // a gap in the channel's pace: the next card waits a second longer, nothing else.
        let card_turn = match self.pacer.book(&channel, now_ms) {
            Turn::Now => now_ms,
            Turn::At(slot) => slot,
        };
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
                move |id| {
                    let mut jobs = vec![
                        Job::PostCard {
                            request_id: id,
                            channel: channel.clone(),
                        }
                        .in_turn(card_turn),
                    ];
                    if auto {
                        jobs.push(
                            Job::Grant {
                                request_id: id,
                                provider: provider_name.clone(),
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
            Err(store::NotCreated::TooMany { open, max_open }) => {
                return Ok(Err(Refusal::new(
                    "too_many_open",
                    format!(
                        "You already have {open} open requests, the most one person may hold at once ({max_open}). See `/jit list`, and `/jit cancel` what you no longer need."
                    ),
                )));
            }
            Err(store::NotCreated::AlreadyOpen(Some(open))) => {
                return Ok(Err(Refusal {
                    request_id: Some(open.id),
                    ..Refusal::new("already_open", already_open(&open))
                }));
            }
            Err(store::NotCreated::AlreadyOpen(None)) => {
                return Ok(Err(Refusal::new(
                    "already_open",
                    format!("You already have an open request for *{name}*. See `/jit list`."),
                )));
            }
        };
        Metrics::inc(&self.metrics.requests_created);
        if auto {
            self.woke(&[Lane::Messages, Lane::Grants]);
        } else {
            self.woke(&[Lane::Messages]);
        }
        Ok(Ok(Created {
            id: request.id,
            resource: name.to_string(),
            duration,
            auto_approved: auto,
            channel: resource.channel.clone(),
        }))
    }
}
