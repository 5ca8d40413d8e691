//! `/jit request` and `POST /api/v1/requests`: a new request held to the policy in force,
//! stored with its card and its grant or time-out job, or refused with a code and a reason.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{MAX_REASON_CHARS, Service, already_open, ms};
use std::sync::Arc;

use crate::domain::{GrantDuration, Job, Lane, Policy, Resource};
use crate::metrics::Metrics;
use crate::scheduler::pace::Turn;
use crate::store::{self, BundleSpec, NewGrant, NewMember, NewRequest};

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

    /// A provider that names people by their email when `identities` does not (Identity
    /// Center, GCP, Kubernetes) needs one now: it is read from the requester's Slack profile, and
    /// a requester whose profile shows none is refused before anything is stored. Slack not
    /// answering in time lets the request through: the grant asks again.
    async fn complete_identities(
        &self,
        policy: &Policy,
        resources: &[&Resource],
        snapshots: &mut [NewGrant],
        user: &str,
    ) -> Result<(), Refusal> {
        for (resource, snapshot) in resources.iter().zip(snapshots.iter_mut()) {
            let Some(kind) = policy.providers.get(&resource.provider).map(|p| p.kind()) else {
                continue;
            };
            let key = match kind {
                "aws_sso" => "aws_sso_user",
                "gcp_iam" => "gcp_member",
                "kubernetes" => "k8s_user",
                _ => continue,
            };
            // Group access binds the group the resource names, whoever asks.
            if matches!(kind, "aws_sso" | "kubernetes") && resource.grant.contains_key("group") {
                continue;
            }
            let Some(identity) = snapshot.identity.as_object_mut() else {
                continue;
            };
            if identity.contains_key(key) || identity.contains_key("email") {
                continue;
            }
            let refusal = || {
                Refusal::new(
                    "no_identity",
                    format!(
                        "You have no {kind} identity for *{}*, and your Slack profile shows no email. Ask an admin to add your `{key}` (or `email`) under `identities` in the policy.",
                        resource.name
                    ),
                )
            };
            if !crate::domain::policy::is_slack_user(user) {
                return Err(refusal());
            }
            let asked = self.directory.profile_email(user);
            match tokio::time::timeout(crate::directory::PROFILE_DEADLINE, asked).await {
                Ok(Ok(Some(email))) => {
                    identity.insert("email".into(), json!(email));
                }
                Ok(Ok(None)) => return Err(refusal()),
                Ok(Err(e)) => {
                    tracing::warn!(
                        user,
                        error = format!("{e:#}"),
                        "cannot read the requester's Slack profile email; the grant asks again"
                    )
                }
                Err(_) => {
                    tracing::warn!(
                        user,
                        "Slack did not say the requester's profile email in time; the grant asks again"
                    )
                }
            }
        }
        Ok(())
    }

    /// A new request from a person or an API client, held to the policy in force: stored with
    /// its card and its grant or time-out job, or refused with a code and a reason. `asked` is a
    /// resource, a bundle of the policy, or resources joined by commas: one request, one card,
    /// one decision, and one grant per resource.
    pub async fn create_request(
        &self,
        user: &str,
        asked: &str,
        duration: Option<GrantDuration>,
        reason: Option<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<Created, Refusal>> {
        let policy = self.policy.now();
        let (bundle_name, resources) = match policy.resolve(asked) {
            Ok(found) => found,
            Err(refusal) => return Ok(Err(Refusal::new("unknown_resource", refusal))),
        };
        let duration = duration.unwrap_or_else(|| {
            resources
                .iter()
                .map(|r| r.default_duration)
                .min()
                .unwrap_or(resources[0].default_duration)
        });
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
        let mut snapshots = Vec::with_capacity(resources.len());
        for resource in &resources {
            match check_one(&policy, resource, user, duration, &reason)? {
                Ok(snapshot) => snapshots.push(snapshot),
                Err(refusal) => return Ok(Err(refusal)),
            }
        }
        if let Err(refusal) = self
            .complete_identities(&policy, &resources, &mut snapshots, user)
            .await
        {
            return Ok(Err(refusal));
        }
        let lead = resources[0];
        let bundle = (resources.len() > 1).then(|| BundleSpec {
            name: bundle_name,
            resources: resources.iter().map(|r| r.name.clone()).collect(),
        });
        let label = bundle
            .as_ref()
            .map(BundleSpec::label)
            .unwrap_or_else(|| lead.name.clone());
        // One open request per person and resource: the store's unique index answers for the
        // lead; the others are looked up now (and left out at the approval if one opened since).
        for resource in resources.iter().skip(1) {
            if let Some(open) = self.store.find_open(user, &resource.name).await? {
                return Ok(Err(Refusal {
                    request_id: Some(open.id),
                    ..Refusal::new("already_open", already_open(&open))
                }));
            }
        }
        let auto = resources
            .iter()
            .all(|r| policy.auto_approves(r, user, duration));
        let now_ms = ms(now);
        let mut snapshots = snapshots.into_iter();
        let lead_snapshot = snapshots.next().expect("one snapshot per resource");
        let members: Vec<NewMember> = if auto {
            let shared = Shared {
                user,
                channel: &lead.channel,
                duration,
                reason: &reason,
                auto: true,
                now_ms,
            };
            resources
                .iter()
                .skip(1)
                .zip(snapshots)
                .map(|(r, grant)| member(&shared, r, grant))
                .collect()
        } else {
            Vec::new()
        };
        let new = NewRequest {
            resource: lead.name.clone(),
            requester: user.to_string(),
            duration_secs: duration.secs() as i64,
            reason: reason.clone(),
            approvals_needed: resources.iter().map(|r| r.approvals).max().unwrap_or(1) as i32,
            auto_approved: auto,
            channel: lead.channel.clone(),
            max_open: Some(policy.settings.max_open_per_user),
            bundle: bundle.as_ref().map(serde_json::to_string).transpose()?,
            bundle_of: None,
            extends: None,
        };
        let ttl_end = now_ms + policy.settings.request_ttl.secs() as i64 * 1000;
        let mut detail = json!({"resource": lead.name, "duration": duration.to_string(), "reason": reason, "auto_approved": auto});
        if let Some(bundle) = &bundle {
            detail["bundle"] = json!(bundle);
        }
        let event = store::audit(user, "requested", detail);
        let (channel, provider_name) = (lead.channel.clone(), lead.provider.clone());
        // The ladder of the first resource: when each step pages, and the reminder (step -1).
        let ladder: Vec<(i32, i64)> = lead
            .remind
            .iter()
            .map(|r| (-1, r.secs() as i64 * 1000))
            .chain(
                lead.escalation
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i as i32, s.after.secs() as i64 * 1000)),
            )
            .collect();
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
                auto.then_some((lead_snapshot, members)),
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
                        jobs.extend(ladder.iter().map(|(step, after)| {
                            Job::Escalate {
                                request_id: id,
                                step: *step,
                            }
                            .at(now_ms + after)
                        }));
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
                    format!(
                        "You already have an open request for *{}*. See `/jit list`.",
                        lead.name
                    ),
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
            resource: label,
            duration,
            auto_approved: auto,
            channel: lead.channel.clone(),
        }))
    }
}

/// Whether `user` may have `resource` for `duration` with `reason`: the grant's snapshot of its
/// provider, or the refusal.
fn check_one(
    policy: &Policy,
    resource: &Resource,
    user: &str,
    duration: GrantDuration,
    reason: &str,
) -> anyhow::Result<Result<NewGrant, Refusal>> {
    let name = resource.name.as_str();
    if !policy.may_request(resource, user) {
        return Ok(Err(Refusal::new(
            "not_allowed",
            format!("You may not request *{name}*. See `/jit explain {name}` for who may."),
        )));
    }
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
    if resource.reason_required && reason.is_empty() {
        return Ok(Err(Refusal::new(
            "reason_required",
            format!(
                "*{name}* needs a reason. Try `/jit request {name} {duration} INC-4312 debugging`."
            ),
        )));
    }
    if let Some(pattern) = &resource.reason_pattern
        && !pattern.is_match(reason)
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
    Ok(Ok(NewGrant {
        provider_name: resource.provider.clone(),
        provider: serde_json::to_value(provider)?,
        grant_shape: serde_json::Value::Object(resource.grant.clone()),
        identity: serde_json::to_value(&identity)?,
        approved_by: Vec::new(),
    }))
}

/// What every resource of a bundle shares: who asked, for how long and why, where the card is,
/// and whether it was auto-approved.
pub(super) struct Shared<'a> {
    pub user: &'a str,
    pub channel: &'a str,
    pub duration: GrantDuration,
    pub reason: &'a str,
    pub auto: bool,
    pub now_ms: i64,
}

/// The request of one more resource of a bundle, created approved with its lead: its grant
/// snapshot and its grant job.
pub(super) fn member(shared: &Shared<'_>, resource: &Resource, grant: NewGrant) -> NewMember {
    let provider = resource.provider.clone();
    let now_ms = shared.now_ms;
    NewMember {
        new: NewRequest {
            resource: resource.name.clone(),
            requester: shared.user.to_string(),
            duration_secs: shared.duration.secs() as i64,
            reason: shared.reason.to_string(),
            approvals_needed: resource.approvals as i32,
            auto_approved: shared.auto,
            channel: shared.channel.to_string(),
            max_open: None,
            bundle: None,
            bundle_of: None,
            extends: None,
        },
        grant,
        jobs: Arc::new(move |id| {
            vec![
                Job::Grant {
                    request_id: id,
                    provider: provider.clone(),
                }
                .at(now_ms),
            ]
        }),
        event: store::audit(
            shared.user,
            "bundle_resource",
            json!({"resource": resource.name, "duration": shared.duration.to_string(), "auto_approved": shared.auto}),
        ),
    }
}
