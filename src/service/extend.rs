//! `/jit extend <id> <duration>`: more time on an active grant. Never past the resource's
//! `max_duration` counted from the grant's start. An `auto_approve` rule that covers the whole
//! new length applies it at once; otherwise the extension is a request of its own, with a card
//! and a decision like any other, and its approval moves the grant's end (see
//! [`crate::store::Extension`]).

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Service, label, ms};
use crate::domain::{GrantDuration, Job, Lane, RequestId, State};
use crate::metrics::Metrics;
use crate::slack::blocks;
use crate::store::{self, Extension, NewRequest};

impl Service {
    pub(super) async fn extend(
        &self,
        user: &str,
        id: RequestId,
        by: GrantDuration,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<String, String>> {
        let Some(request) = self.own_request(id).await? else {
            return Ok(Err(format!("There is no request {id}.")));
        };
        if request.requester != user {
            return Ok(Err(format!(
                "Request {id} is not yours; only its requester can extend it."
            )));
        }
        if let Some(of) = request.extends {
            return Ok(Err(format!(
                "Request {id} is an extension of #{of}; extend #{of} itself: `/jit extend {of} {by}`."
            )));
        }
        if request.state != State::Active.as_str() {
            return Ok(Err(format!(
                "Request {id} is {}; only active access can be extended. Ask again with `/jit request {}`.",
                label(&request.state),
                request.resource
            )));
        }
        let policy = self.policy.now();
        let name = request.resource.clone();
        let Some(resource) = policy.resources.get(&name) else {
            return Ok(Err(format!(
                "*{name}* is no longer in the policy; its access cannot be extended."
            )));
        };
        if let Some(why) = policy.no_longer_allows(resource, user, request.duration_secs) {
            return Ok(Err(format!(
                "The policy no longer allows this access ({why}); it cannot be extended."
            )));
        }
        let grant = self.store.grant(request.id).await?;
        let (Some(start), Some(end)) = (
            grant.as_ref().and_then(|g| g.granted_at),
            grant.as_ref().and_then(|g| g.expires_at),
        ) else {
            return Ok(Err(format!("Request {id} has no running grant to extend.")));
        };
        let cap = start.saturating_add(resource.max_duration.secs() as i64 * 1000);
        let by_ms = by.secs() as i64 * 1000;
        if end.saturating_add(by_ms) > cap {
            let left = GrantDuration::from_secs(((cap - end).max(0) / 1000) as u64);
            return Ok(Err(match left {
                Some(left) => format!(
                    "*{name}* may be held at most {} from the start of the grant: you can extend #{} by up to {left}.",
                    resource.max_duration, request.id
                ),
                None => format!(
                    "*{name}* may be held at most {} from the start of the grant, and #{} already runs that long. Ask again with `/jit request {name}` when it ends.",
                    resource.max_duration, request.id
                ),
            }));
        }
        let whole = GrantDuration::from_secs(((end + by_ms - start).max(1000) / 1000) as u64)
            .unwrap_or(resource.max_duration);
        let auto = policy.auto_approves(resource, user, whole);
        let now_ms = ms(now);
        let new = NewRequest {
            resource: name.clone(),
            requester: user.to_string(),
            duration_secs: by.secs() as i64,
            reason: format!("extend #{}", request.id),
            approvals_needed: resource.approvals as i32,
            auto_approved: auto,
            channel: request.channel.clone(),
            max_open: None,
            bundle: None,
            bundle_of: None,
            extends: Some(request.id),
        };
        let of = request.id;
        if auto {
            let channel = request.channel.clone();
            let (who, what) = (user.to_string(), name.clone());
            let recorded = self
                .store
                .record_extension(
                    new,
                    Extension {
                        of,
                        by_ms,
                        cap_ms: cap,
                    },
                    move |ext| {
                        vec![
                            Job::UpdateCard {
                                request_id: of,
                                channel: channel.clone(),
                            }
                            .at(now_ms),
                            Job::Dm {
                                user: who.clone(),
                                text: blocks::dm_extended(of, &what, &by.to_string(), ext),
                                done: None,
                            }
                            .at(now_ms),
                        ]
                    },
                    store::audit(
                        user,
                        "extended",
                        json!({"of": of, "by": by.to_string(), "auto_approved": true}),
                    ),
                    now_ms,
                )
                .await?;
            return Ok(match recorded {
                Some(ext) => {
                    self.woke(&[Lane::Messages, Lane::Access]);
                    let until = DateTime::from_timestamp_millis((end + by_ms).min(cap))
                        .map(|t| format!(" now ends {}", blocks::when(t)))
                        .unwrap_or_default();
                    Ok(format!(
                        "Extended by {by} (#{}, auto-approved by policy): *{name}* (#{of}){until}.",
                        ext.id
                    ))
                }
                None => Err(format!(
                    "Request {id} ended before it could be extended; ask again with `/jit request {name}`."
                )),
            });
        }
        let ttl_end = now_ms + policy.settings.request_ttl.secs() as i64 * 1000;
        let channel = request.channel.clone();
        let created = self
            .store
            .create_request(
                new,
                None,
                move |ext| {
                    vec![
                        Job::PostCard {
                            request_id: ext,
                            channel: channel.clone(),
                        }
                        .at(now_ms),
                        Job::Timeout { request_id: ext }.at(ttl_end),
                    ]
                },
                store::audit(
                    user,
                    "extension_requested",
                    json!({"of": of, "by": by.to_string()}),
                ),
                now_ms,
            )
            .await?;
        match created {
            Ok(ext) => {
                Metrics::inc(&self.metrics.requests_created);
                self.woke(&[Lane::Messages]);
                Ok(Ok(format!(
                    "Extension #{} of #{of} (*{name}*, {by} more) is waiting for approval in <#{}>.",
                    ext.id, request.channel
                )))
            }
            Err(_) => {
                let waiting = self.store.pending_extension(user, &name).await?;
                Ok(Err(match waiting {
                    Some(ext) => format!(
                        "You already asked to extend *{name}*: #{} is waiting for approval (`/jit cancel {}` to withdraw it).",
                        ext.id, ext.id
                    ),
                    None => format!("You already asked to extend *{name}*."),
                }))
            }
        }
    }
}
