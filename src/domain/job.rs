//! Slow work, stored as a row in the durable job queue and run by the scheduler after the user
//! has had their answer. Every job is safe to run again after a crash.
//!
//! Each job waits in a [`Lane`], and within its lane it is limited by its [`Job::queue_key`]: the
//! provider it calls, or the Slack channel it posts to. Lanes never wait for one another, so a
//! revoke never queues behind a grant or a Slack message, and a slow provider or channel holds
//! back only its own jobs.

use serde::{Deserialize, Serialize};

/// The lines jobs wait in, most urgent first. Each lane has its own runner and its own limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Ending access: expiries, early revokes, clean-up after a failed grant.
    Access,
    /// Giving access.
    Grants,
    /// Slack: cards, card updates, DMs, notes, ephemeral answers.
    Messages,
    /// Bookkeeping: timeouts of undecided requests (later: escalation, digest, pruning).
    Housekeeping,
}

impl Lane {
    pub const ALL: [Lane; 4] = [
        Lane::Access,
        Lane::Grants,
        Lane::Messages,
        Lane::Housekeeping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Access => "access",
            Lane::Grants => "grants",
            Lane::Messages => "messages",
            Lane::Housekeeping => "housekeeping",
        }
    }

    pub fn parse(s: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// A job. Fields added after the first release carry `#[serde(default)]`, so rows written by an
/// older jitbot still load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Post the approval card to the resource's channel (skipped if it is already posted).
    PostCard {
        request_id: i32,
        #[serde(default)]
        channel: String,
    },
    /// Redraw the card from the request's current state.
    UpdateCard {
        request_id: i32,
        #[serde(default)]
        channel: String,
    },
    /// A direct message to a person; with `done`, an "I'm done" button that ends that
    /// request's access now.
    Dm {
        user: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        done: Option<i32>,
    },
    /// A note in a channel, threaded under the request's card when there is one.
    ChannelNote {
        request_id: i32,
        #[serde(default)]
        channel: String,
        text: String,
    },
    /// A message only `user` sees, in `channel`.
    Ephemeral {
        channel: String,
        user: String,
        text: String,
    },
    /// An ephemeral message through a command's or a click's `response_url` (a long list's later
    /// parts, or the answer to a refused click that came from outside a channel).
    Respond { url: String, text: String },
    /// Ask the provider for the access of an approved request.
    Grant {
        request_id: i32,
        #[serde(default)]
        provider: String,
    },
    /// End the access of a request (at `expires_at`, after `/jit revoke`, or after a cancel while
    /// the grant was under way), and retry the provider's revoke until it succeeds.
    EndAccess {
        request_id: i32,
        #[serde(default)]
        provider: String,
    },
    /// A pending request that nobody decided within `request_ttl`.
    Timeout { request_id: i32 },
    /// After `grant_failed`, revoke whatever part of the grant may have taken.
    Cleanup {
        request_id: i32,
        #[serde(default)]
        provider: String,
    },
    /// A step of the escalation ladder of a request still pending (`step` -1: the reminder to
    /// its approvers): queues one page per person it names now.
    Escalate { request_id: i32, step: i32 },
    /// A DM to `user` with the request's card and working buttons (an escalation step or the
    /// reminder); updated like the card when the request is decided.
    Page {
        request_id: i32,
        step: i32,
        user: String,
        text: String,
    },
    /// Post the weekly digest of the period that ends at `period_end` (epoch ms), then queue the
    /// next one. Its key makes each period's digest posted once, however many replicas queue it.
    Digest { period_end: i64, channel: String },
    /// Tell the requester their access ends soon, with Extend and "I'm done" buttons (waits for
    /// the end an extension moved).
    EndingSoon { request_id: i32, user: String },
    /// Store upkeep for one round of [`MAINTENANCE_EVERY`]: prune finished jobs, refresh the
    /// planner's statistics, and queue the next round. Its key makes each round run once, however
    /// many replicas queue it.
    Maintain { round: i64 },
}

/// How often the store is looked after (finished jobs pruned, statistics refreshed).
pub const MAINTENANCE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Job kinds that call `chat.postMessage` (limited per channel by Slack).
pub const POSTING_KINDS: [&str; 6] = [
    "post_card",
    "channel_note",
    "dm",
    "ending_soon",
    "digest",
    "page",
];

impl Job {
    pub fn kind(&self) -> &'static str {
        match self {
            Job::PostCard { .. } => "post_card",
            Job::UpdateCard { .. } => "update_card",
            Job::Dm { .. } => "dm",
            Job::ChannelNote { .. } => "channel_note",
            Job::Ephemeral { .. } => "ephemeral",
            Job::Respond { .. } => "respond",
            Job::Grant { .. } => "grant",
            Job::EndAccess { .. } => "end_access",
            Job::Timeout { .. } => "timeout",
            Job::Cleanup { .. } => "cleanup",
            Job::Maintain { .. } => "maintain",
            Job::EndingSoon { .. } => "ending_soon",
            Job::Digest { .. } => "digest",
            Job::Escalate { .. } => "escalate",
            Job::Page { .. } => "page",
        }
    }

    pub fn lane(&self) -> Lane {
        match self {
            Job::EndAccess { .. } | Job::Cleanup { .. } => Lane::Access,
            Job::Grant { .. } => Lane::Grants,
            Job::PostCard { .. }
            | Job::UpdateCard { .. }
            | Job::Dm { .. }
            | Job::ChannelNote { .. }
            | Job::Ephemeral { .. }
            | Job::Respond { .. }
            | Job::EndingSoon { .. }
            | Job::Digest { .. }
            | Job::Page { .. } => Lane::Messages,
            Job::Timeout { .. } | Job::Maintain { .. } | Job::Escalate { .. } => Lane::Housekeeping,
        }
    }

    /// What the job is limited by within its lane: the provider's name for grants and revokes,
    /// the channel (or the person, for a DM) for Slack messages.
    pub fn queue_key(&self) -> &str {
        match self {
            Job::Grant { provider, .. }
            | Job::EndAccess { provider, .. }
            | Job::Cleanup { provider, .. } => provider,
            Job::PostCard { channel, .. }
            | Job::UpdateCard { channel, .. }
            | Job::ChannelNote { channel, .. }
            | Job::Ephemeral { channel, .. }
            | Job::Digest { channel, .. } => channel,
            Job::Dm { user, .. } | Job::EndingSoon { user, .. } | Job::Page { user, .. } => user,
            // Not the URL itself: it is a credential of sorts, and keys reach logs and metrics.
            // One key for all keeps a long list's parts in order.
            Job::Respond { .. } => "response_url",
            Job::Timeout { .. } | Job::Maintain { .. } | Job::Escalate { .. } => "",
        }
    }

    /// The Slack Web API method the job calls, for jobs of the messages lane.
    pub fn slack_method(&self) -> Option<&'static str> {
        match self {
            Job::PostCard { .. }
            | Job::Dm { .. }
            | Job::ChannelNote { .. }
            | Job::EndingSoon { .. }
            | Job::Digest { .. }
            | Job::Page { .. } => Some("chat.postMessage"),
            Job::UpdateCard { .. } => Some("chat.update"),
            Job::Ephemeral { .. } => Some("chat.postEphemeral"),
            Job::Respond { .. } => Some("response_url"),
            _ => None,
        }
    }

    pub fn request_id(&self) -> Option<i32> {
        match self {
            Job::PostCard { request_id, .. }
            | Job::UpdateCard { request_id, .. }
            | Job::ChannelNote { request_id, .. }
            | Job::Grant { request_id, .. }
            | Job::EndAccess { request_id, .. }
            | Job::Timeout { request_id }
            | Job::EndingSoon { request_id, .. }
            | Job::Escalate { request_id, .. }
            | Job::Page { request_id, .. }
            | Job::Cleanup { request_id, .. } => Some(*request_id),
            Job::Dm { .. }
            | Job::Ephemeral { .. }
            | Job::Respond { .. }
            | Job::Maintain { .. }
            | Job::Digest { .. } => None,
        }
    }

    /// Jobs that must exist at most once per request carry a key; the queue's unique index on it
    /// makes a second enqueue a no-op.
    pub fn dedupe_key(&self) -> Option<String> {
        match self {
            Job::PostCard { request_id, .. }
            | Job::Grant { request_id, .. }
            | Job::EndAccess { request_id, .. }
            | Job::Timeout { request_id }
            | Job::EndingSoon { request_id, .. }
            | Job::Cleanup { request_id, .. } => Some(format!("{}:{request_id}", self.kind())),
            Job::Maintain { round } => Some(format!("maintain:{round}")),
            Job::Digest { period_end, .. } => Some(format!("digest:{period_end}")),
            Job::Escalate { request_id, step } => Some(format!("escalate:{request_id}:{step}")),
            Job::Page {
                request_id,
                step,
                user,
                ..
            } => Some(format!("page:{request_id}:{step}:{user}")),
            _ => None,
        }
    }

    /// The dedupe key of a request's grant job.
    pub fn grant_key(request_id: i32) -> String {
        format!("grant:{request_id}")
    }
}

/// A job and when it should run (epoch milliseconds).
#[derive(Clone, Debug)]
pub struct Scheduled {
    pub job: Job,
    pub run_at: i64,
    /// A Slack post whose turn in its channel's pace is already booked (`run_at` is that turn),
    /// so the scheduler does not book it again.
    pub paced: bool,
}

impl Job {
    pub fn at(self, run_at: i64) -> Scheduled {
        Scheduled {
            job: self,
            run_at,
            paced: false,
        }
    }

    /// A Slack post due at the turn booked for it in its channel's pace.
    pub fn in_turn(self, turn: i64) -> Scheduled {
        Scheduled {
            job: self,
            run_at: turn,
            paced: true,
        }
    }

    /// The maintenance job of the round after `now` (epoch ms), due when that round starts.
    pub fn next_maintenance(now: i64) -> Scheduled {
        let every = MAINTENANCE_EVERY.as_millis() as i64;
        let round = now.div_euclid(every) + 1;
        Job::Maintain { round }.at(round * every)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lane_round_trips_through_its_name() {
        for lane in Lane::ALL {
            assert_eq!(Lane::parse(lane.as_str()), Some(lane));
        }
    }

    #[test]
    fn a_job_written_before_lanes_still_loads() {
        let old: Job = serde_json::from_str(r#"{"kind":"end_access","request_id":7}"#).unwrap();
        assert_eq!(old.lane(), Lane::Access);
        assert_eq!(old.queue_key(), "");
        assert_eq!(old.dedupe_key().as_deref(), Some("end_access:7"));
    }

    #[test]
    fn revokes_grants_and_messages_wait_in_different_lanes() {
        let revoke = Job::EndAccess {
            request_id: 1,
            provider: "pg".into(),
        };
        let grant = Job::Grant {
            request_id: 1,
            provider: "pg".into(),
        };
        let card = Job::PostCard {
            request_id: 1,
            channel: "C1".into(),
        };
        assert_eq!(revoke.lane(), Lane::Access);
        assert_eq!(grant.lane(), Lane::Grants);
        assert_eq!(card.lane(), Lane::Messages);
        assert_eq!(revoke.queue_key(), "pg");
        assert_eq!(card.queue_key(), "C1");
        assert_eq!(card.slack_method(), Some("chat.postMessage"));
        assert!(POSTING_KINDS.contains(&card.kind()));
    }
}
