//! The forms: the reason for a denial (the Deny button opens it), and the request form
//! (`/jit request` with no arguments). A submission is held to the same rules as the command it
//! stands for; what is wrong is shown on the field that is wrong, and nothing is stored.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Decided, Decision, MAX_REASON_CHARS, Service, ms, secs};
use crate::domain::{GrantDuration, Job, Lane};
use crate::slack::modals::{self, DURATION, REASON, RESOURCE};
use crate::slack::payload::Submission;
use crate::store::BundleSpec;

impl Service {
    /// The denial form of request `id` for `user`, or why they may not deny it (audited).
    pub(super) async fn deny_form(
        &self,
        user: &str,
        id: i32,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Result<Value, String>> {
        let policy = self.policy.now();
        match self.judge(&policy, user, id, Decision::Deny).await? {
            Ok(super::judge::Judged { request, .. }) => {
                let what = BundleSpec::what(&request);
                Ok(Ok(modals::deny_form(
                    id,
                    &request.requester,
                    &what,
                    &secs(request.duration_secs),
                    &request.reason,
                )))
            }
            Err(reason) => {
                self.refused(user, Some(id), "deny", reason.clone(), ms(now))
                    .await?;
                Ok(Err(reason))
            }
        }
    }

    /// The request form for `user`: what they may ask for, resources then bundles.
    pub fn request_form(&self, user: &str) -> Value {
        let policy = self.policy.now();
        let mut choices: Vec<(String, String)> = policy
            .resources
            .values()
            .filter(|r| policy.may_request(r, user))
            .map(|r| {
                let label = if r.description.is_empty() {
                    r.name.clone()
                } else {
                    format!("{}: {}", r.name, r.description)
                };
                (r.name.clone(), label)
            })
            .collect();
        choices.extend(
            policy
                .bundles
                .iter()
                .filter(|(_, names)| {
                    names.iter().all(|n| {
                        policy
                            .resources
                            .get(n)
                            .is_some_and(|r| policy.may_request(r, user))
                    })
                })
                .map(|(name, names)| (name.clone(), format!("{name} ({})", names.join(", ")))),
        );
        modals::request_form(&choices, MAX_REASON_CHARS)
    }

    /// A submitted form: `None` closes it, `Some` is the answer that keeps it open with errors.
    pub async fn submitted(
        &self,
        form: Submission,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<Value>> {
        let text = |block: &str| {
            form.values
                .get(block)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        match form.callback_id.as_str() {
            modals::DENY_FORM => {
                let Some(id) = form.private_metadata.trim().parse::<i32>().ok() else {
                    return Ok(Some(modals::field_errors(&[(
                        REASON,
                        "This form names no request; deny with `/jit deny <id> <reason>`.".into(),
                    )])));
                };
                let reason =
                    text(REASON).map(|r| r.chars().take(modals::MAX_DENY_REASON).collect());
                Ok(
                    match self
                        .decide(&form.user, id, Decision::Deny, reason, now)
                        .await?
                    {
                        Decided::Accepted(_) => None,
                        Decided::Refused(why) => Some(modals::field_errors(&[(REASON, why)])),
                    },
                )
            }
            modals::REQUEST_FORM => {
                let Some(resource) = text(RESOURCE) else {
                    return Ok(Some(modals::field_errors(&[(
                        RESOURCE,
                        "Pick what you need.".into(),
                    )])));
                };
                let duration = match text(DURATION).map(|d| GrantDuration::parse(&d)) {
                    None => None,
                    Some(Ok(d)) => Some(d),
                    Some(Err(e)) => {
                        return Ok(Some(modals::field_errors(&[(
                            DURATION,
                            format!("{e}: write it like 30m or 1h30m"),
                        )])));
                    }
                };
                let created = self
                    .create_request(&form.user, &resource, duration, text(REASON), now)
                    .await?;
                match created {
                    Ok(created) => {
                        // The form has no channel to answer in: the confirmation is a DM.
                        let note = if created.auto_approved {
                            format!(
                                "Request #{} for *{}* ({}) is auto-approved by policy; access is being granted.",
                                created.id, created.resource, created.duration
                            )
                        } else {
                            format!(
                                "Request #{} for *{}* ({}) is waiting for approval in <#{}>.",
                                created.id, created.resource, created.duration, created.channel
                            )
                        };
                        let now_ms = ms(now);
                        self.store
                            .enqueue(
                                &[Job::Dm {
                                    user: form.user.clone(),
                                    text: note,
                                    done: None,
                                }
                                .at(now_ms)],
                                now_ms,
                            )
                            .await?;
                        self.woke(&[Lane::Messages]);
                        Ok(None)
                    }
                    Err(refusal) => {
                        let block = match refusal.code {
                            "duration_too_short" | "duration_too_long" => DURATION,
                            "reason_required" | "reason_pattern" | "reason_too_long" => REASON,
                            _ => RESOURCE,
                        };
                        Ok(Some(modals::field_errors(&[(block, refusal.message)])))
                    }
                }
            }
            other => {
                tracing::debug!(callback_id = other, "ignored a form jitbot did not open");
                Ok(None)
            }
        }
    }
}
