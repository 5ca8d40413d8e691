//! Slow work, stored as a row in the durable job queue and run by the scheduler after the user
//! has had their answer. Every job is safe to run again after a crash.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Post the approval card to the resource's channel (skipped if it is already posted).
    PostCard { request_id: i32 },
    /// Redraw the card from the request's current state.
    UpdateCard { request_id: i32 },
    /// A direct message to a person.
    Dm { user: String, text: String },
    /// A note in a channel, threaded under the request's card when there is one.
    ChannelNote { request_id: i32, text: String },
    /// A message only `user` sees, in `channel`.
    Ephemeral {
        channel: String,
        user: String,
        text: String,
    },
    /// Ask the provider for the access of an approved request.
    Grant { request_id: i32 },
    /// End the access of an active request (at `expires_at`, or early after `/jit revoke`), and
    /// retry the provider's revoke until it succeeds.
    EndAccess { request_id: i32 },
    /// A pending request that nobody decided within `request_ttl`.
    Timeout { request_id: i32 },
    /// After `grant_failed`, revoke whatever part of the grant may have taken.
    Cleanup { request_id: i32 },
}

impl Job {
    pub fn kind(&self) -> &'static str {
        match self {
            Job::PostCard { .. } => "post_card",
            Job::UpdateCard { .. } => "update_card",
            Job::Dm { .. } => "dm",
            Job::ChannelNote { .. } => "channel_note",
            Job::Ephemeral { .. } => "ephemeral",
            Job::Grant { .. } => "grant",
            Job::EndAccess { .. } => "end_access",
            Job::Timeout { .. } => "timeout",
            Job::Cleanup { .. } => "cleanup",
        }
    }

    pub fn request_id(&self) -> Option<i32> {
        match self {
            Job::PostCard { request_id }
            | Job::UpdateCard { request_id }
            | Job::ChannelNote { request_id, .. }
            | Job::Grant { request_id }
            | Job::EndAccess { request_id }
            | Job::Timeout { request_id }
            | Job::Cleanup { request_id } => Some(*request_id),
            Job::Dm { .. } | Job::Ephemeral { .. } => None,
        }
    }

    /// Jobs that must exist at most once per request carry a key; the queue's unique index on it
    /// makes a second enqueue a no-op.
    pub fn dedupe_key(&self) -> Option<String> {
        match self {
            Job::PostCard { request_id }
            | Job::Grant { request_id }
            | Job::EndAccess { request_id }
            | Job::Timeout { request_id }
            | Job::Cleanup { request_id } => Some(format!("{}:{request_id}", self.kind())),
            _ => None,
        }
    }
}

/// A job and when it should run (epoch milliseconds).
#[derive(Clone, Debug)]
pub struct Scheduled {
    pub job: Job,
    pub run_at: i64,
}

impl Job {
    pub fn at(self, run_at: i64) -> Scheduled {
        Scheduled { job: self, run_at }
    }
}
