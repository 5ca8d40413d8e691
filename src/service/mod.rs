//! What a command or a click does. Everything here answers at once: it reads and writes the store
//! and queues jobs; provider and Slack calls happen later in the scheduler.
//!
//! - this file: the command dispatcher and `/jit request`;
//! - [`decide`]: approve and deny, by button or command;
//! - [`ends`]: cancel and early revoke, including a grant still under way;
//! - [`views`]: list, pending, resources, explain;
//! - [`policy_change`]: pending requests held to the policy in force after it changes.

mod decide;
mod ends;
pub mod policy_change;
mod views;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::domain::command::HELP;
use crate::domain::{Command, GrantDuration, Job, Lane, LivePolicy, Policy, Resource, State};
use crate::metrics::Metrics;
use crate::scheduler::Wake;
use crate::scheduler::pace::{Pacer, Turn};
use crate::store::{self, NewGrant, NewRequest, Store};

/// Longest reason `/jit request` takes: the card shows it whole, well within Slack's limits.
pub const MAX_REASON_CHARS: usize = 1_000;

#[derive(Clone)]
pub struct Service {
    pub store: Store,
    /// The policy in force now: read once per command or click, so a reload applies at once.
    pub policy: Arc<LivePolicy>,
    /// Wakes the scheduler when a job is queued.
    pub wake: Arc<Wake>,
    pub metrics: Arc<Metrics>,
    /// Slack's pace per channel, shared with the scheduler: a new request's card books its turn
    /// as the request is stored, so the card's job is written once, due at that turn, instead
    /// of being claimed only to be booked and put back.
    pub pacer: Arc<Pacer>,
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
    /// Jobs were queued in these lanes: their runners look now rather than at their next round.
    fn woke(&self, lanes: &[Lane]) {
        for lane in lanes {
            self.wake.lane(*lane).notify_one();
        }
    }

    /// Handles `/jit …`; the result is the ephemeral answer: one message, or several when a list
    /// is long (the first answers the command, the rest follow through its `response_url`).
    pub async fn command(
        &self,
        user: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<String>> {
        let command = match Command::parse(text) {
            Ok(c) => c,
            Err(e) => {
                Metrics::inc(&self.metrics.commands_refused);
                return Ok(vec![e.to_string()]);
            }
        };

        let answer = match command {
            Command::Help => Ok(HELP.to_string()),
            Command::Request { resource, duration, reason } => self.request(user, &resource, duration, reason, now).await?,
            Command::List => return self.list(user).await,
            Command::Pending => return self.pending(user).await,
            Command::Resources => Ok(self.resources(user)),
            Command::Explain { resource } => self.explain(user, &resource),
            Command::Approve { id } => self.decide_by_command(user, id, Decision::Approve, None, now).await?,
            Command::Deny { id, reason } => self.decide_by_command(user, id, Decision::Deny, reason, now).await?,
            Command::Cancel { id } => self.cancel(user, id, now).await?,
            Command::Revoke { id } => self.revoke(user, id, now).await?,
            Command::Extend { .. } => Err("`/jit extend` is not available in this version of jitbot yet. Ask again with `/jit request` when your access ends.".to_string()),
        };
        Ok(vec![answer.unwrap_or_else(|refusal| {
            Metrics::inc(&self.metrics.commands_refused);
            refusal
        })])
    }

    /// The later parts of a long answer: through the command's `response_url` when it has one,
    /// else as ephemeral messages in its channel. Queued in order, sent one at a time.
    pub async fn follow_up(
        &self,
        user: &str,
        channel: &str,
        response_url: &str,
        messages: Vec<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let now_ms = ms(now);
        let jobs: Vec<_> = messages
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                let job = if response_url.is_empty() {
                    Job::Ephemeral {
                        channel: channel.to_string(),
                        user: user.to_string(),
                        text,
                    }
                } else {
                    Job::Respond {
                        url: response_url.to_string(),
                        text,
                    }
                };
                // A millisecond apart, so the queue hands them out in order.
                job.at(now_ms + i as i64)
            })
            .collect();
        self.store.enqueue(&jobs, now_ms).await?;
        self.woke(&[Lane::Messages]);
        Ok(())
    }

    pub(super) fn resource<'p>(policy: &'p Policy, name: &str) -> Result<&'p Resource, String> {
        policy
            .resources
            .get(name)
            .ok_or_else(|| match policy.suggest(name) {
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
        let policy = self.policy.now();
        let resource = match Self::resource(&policy, name) {
            Ok(r) => r,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let name = resource.name.as_str();
        if !policy.may_request(resource, user) {
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
        if let Some(pattern) = &resource.reason_pattern
            && !pattern.is_match(&reason)
        {
            return Ok(Err(format!(
                "The reason for *{name}* must match `{}` (a ticket id, usually). Try `/jit request {name} {duration} INC-4312 debugging`.",
                pattern.as_str()
            )));
        }
        let Some(provider) = policy.providers.get(&resource.provider) else {
            return Ok(Err(format!(
                "*{name}* has no provider configured. Tell the jitbot admins."
            )));
        };
        let Some(identity) = policy.identity(user, provider.kind()) else {
            return Ok(Err(format!(
                "You have no {} identity for *{name}*. Ask an admin to add your login under `identities` in the policy.",
                provider.kind()
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
                return Ok(Err(format!(
                    "You already have {open} open requests, the most one person may hold at once ({max_open}). See `/jit list`, and `/jit cancel` what you no longer need."
                )));
            }
            Err(store::NotCreated::AlreadyOpen(Some(open))) => return Ok(Err(already_open(&open))),
            Err(store::NotCreated::AlreadyOpen(None)) => {
                return Ok(Err(format!(
                    "You already have an open request for *{name}*. See `/jit list`."
                )));
            }
        };
        Metrics::inc(&self.metrics.requests_created);
        if auto {
            self.woke(&[Lane::Messages, Lane::Grants]);
        } else {
            self.woke(&[Lane::Messages]);
        }
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
