//! What a command or a click does. Everything here answers at once: it reads and writes the store
//! and queues jobs; provider and Slack calls happen later in the scheduler.
//!
//! - this file: the command dispatcher;
//! - [`create`]: a new request, from `/jit request` or the API;
//! - [`decide`]: approve and deny, by button or command;
//! - [`digest`]: the weekly digest's figures;
//! - [`judge`]: who may decide, and whose approvals count;
//! - [`ends`]: cancel and early revoke, including a grant still under way;
//! - [`extend`]: more time on an active grant;
//! - [`forms`]: the denial form and the request form;
//! - [`home`]: the App Home tab;
//! - [`views`]: list, pending, resources;
//! - [`explain`]: a resource's terms for the person who asks;
//! - [`policy_change`]: pending requests held to the policy in force after it changes.

mod create;
mod decide;
pub mod digest;
mod ends;
mod explain;
mod extend;
mod forms;
mod home;
mod judge;
pub mod policy_change;

pub use create::{Created, Refusal};
pub use views::PENDING_READ_AT_MOST;
mod views;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::command::HELP;
use crate::domain::{Command, GrantDuration, Job, Lane, LivePolicy, Policy, Resource, State};
use crate::metrics::Metrics;
use crate::scheduler::Wake;
use crate::scheduler::pace::Pacer;
use crate::store::{self, Store};

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
    /// Slack user groups and PagerDuty on-call, read again before a decision.
    pub directory: Arc<crate::directory::Directory>,
    /// Most pending requests `/jit pending` and the Home tab read for one answer.
    pub pending_read_at_most: usize,
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
            Command::Request {
                resource,
                duration,
                reason,
            } => self.request(user, &resource, duration, reason, now).await?,
            Command::List => return self.list(user).await,
            Command::Pending => return self.pending(user).await,
            Command::Resources => return Ok(self.resources(user)),
            Command::Explain { resource } => self.explain(user, &resource),
            Command::Approve { id } => {
                self.decide_by_command(user, id, Decision::Approve, None, now)
                    .await?
            }
            Command::Deny { id, reason } => {
                self.decide_by_command(user, id, Decision::Deny, reason, now)
                    .await?
            }
            Command::Cancel { id } => self.cancel(user, id, now).await?,
            Command::Revoke { id } => self.revoke(user, id, now).await?,
            Command::Extend { id, duration } => self.extend(user, id, duration, now).await?,
            Command::Digest => self.digest_for(user, now).await?,
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
