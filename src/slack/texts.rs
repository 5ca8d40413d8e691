//! The words of direct messages and channel notes: one function per message, each pinned by a
//! snapshot test. Text from people or providers is escaped and cut to Slack's limits.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::blocks::{NOTE_CHARS, cut, escape, mention, mentions, text_section, when};

pub fn dm_approved(
    id: i32,
    resource: &str,
    approvers: &[String],
    auto: bool,
    expires_at: DateTime<Utc>,
) -> String {
    let by = if auto {
        "automatically by policy".to_string()
    } else {
        format!("by {}", mentions(approvers))
    };
    format!(
        "✅ Your request #{id} for *{resource}* was approved {by}. Access is active until {}.",
        when(expires_at)
    )
}

pub fn dm_denied(id: i32, resource: &str, by: &str, reason: Option<&str>) -> String {
    format!(
        "❌ Your request #{id} for *{resource}* was denied by {}{}",
        mention(by),
        reason
            .map(|r| format!(": {}", cut(&escape(r), NOTE_CHARS)))
            .unwrap_or_else(|| ".".into())
    )
}

pub fn dm_cancelled(id: i32, resource: &str) -> String {
    format!("🚫 You cancelled request #{id} for *{resource}*.")
}

/// Ended by jitbot because the policy in force no longer allows it.
pub fn dm_policy_cancelled(id: i32, resource: &str, why: &str) -> String {
    format!(
        "🚫 Request #{id} for *{resource}* was cancelled because the policy changed: {}. See `/jit explain {resource}`, and ask again if you still need it.",
        cut(&escape(why), NOTE_CHARS)
    )
}

/// Cancelled after approval: the grant under way was stopped and anything that took removed.
pub fn dm_cancelled_after_approval(id: i32, resource: &str) -> String {
    format!(
        "🚫 You cancelled request #{id} for *{resource}*. The grant under way was stopped, and anything of it that took has been removed."
    )
}

/// A card could not be posted: the requester hears why, and what still works.
pub fn dm_card_failed(id: i32, resource: &str, channel: &str, code: &str) -> String {
    format!(
        "⚠️ The approval card for your request #{id} (*{resource}*) could not be posted in <#{channel}>: Slack said `{}`. Approvers can still decide it with `/jit approve {id}`; tell the jitbot admins so they can fix the channel.",
        cut(&escape(code), 100)
    )
}

/// A card could not be posted, told in its channel where that still works.
pub fn note_card_failed(id: i32, resource: &str, requester: &str, code: &str) -> String {
    format!(
        "⚠️ The approval card for request #{id} ({} wants *{resource}*) could not be posted: Slack said `{}`. Decide it with `/jit approve {id}` or `/jit deny {id}`.",
        mention(requester),
        cut(&escape(code), 100)
    )
}

pub fn dm_timed_out(id: i32, resource: &str, ttl: &str) -> String {
    format!(
        "⌛ Your request #{id} for *{resource}* timed out: nobody decided within {ttl}. Ask again with `/jit request {resource}` if you still need it."
    )
}

/// How an ended grant stands at its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtTarget {
    /// jitbot removed it and read it back gone.
    Confirmed,
    /// The person held it before jitbot: left as it was.
    HeldBefore,
    /// Another grant (request `.0`) gives the same access and still runs: it stays until that
    /// one ends.
    StillHeldBy(i32),
}

impl AtTarget {
    /// From a grant's record: whether jitbot gave the access, and to whom it handed it.
    pub fn of(already_held: Option<bool>, handed_to: Option<i32>) -> AtTarget {
        match (handed_to, already_held) {
            (Some(other), _) => AtTarget::StillHeldBy(other),
            (None, Some(false)) => AtTarget::Confirmed,
            (None, _) => AtTarget::HeldBefore,
        }
    }
}

pub fn ended_at_target(at: AtTarget) -> String {
    match at {
        AtTarget::Confirmed => "ended, confirmed at the target".into(),
        AtTarget::HeldBefore => "ended; you held it before jitbot, so it was left as it was".into(),
        AtTarget::StillHeldBy(other) => format!(
            "ended here; request #{other} gives the same access and still runs, so it stays until that one ends"
        ),
    }
}

pub fn dm_expired(id: i32, resource: &str, at: AtTarget) -> String {
    format!(
        "⌛ Your access to *{resource}* (#{id}) has expired: {}.",
        ended_at_target(at)
    )
}

pub fn dm_revoked(id: i32, resource: &str, by: Option<&str>, at: AtTarget) -> String {
    let by = by
        .map(|u| format!(" by {}", mention(u)))
        .unwrap_or_default();
    format!(
        "🔒 Your access to *{resource}* (#{id}) was revoked{by}: {}.",
        ended_at_target(at)
    )
}

pub fn dm_grant_failed(id: i32, resource: &str, error: &str) -> String {
    format!(
        "⚠️ jitbot could not grant *{resource}* (#{id}): {}. No access was given; the reviewers were told.",
        cut(&escape(error), NOTE_CHARS)
    )
}

pub fn note_grant_failed(id: i32, resource: &str, error: &str) -> String {
    format!(
        "⚠️ Granting *{resource}* for request #{id} failed: {}. No access was given.",
        cut(&escape(error), NOTE_CHARS)
    )
}

pub fn note_revoke_failed(id: i32, resource: &str, error: &str) -> String {
    format!(
        "⚠️ Removing access to *{resource}* for request #{id} failed: {}. jitbot keeps retrying until it succeeds.",
        cut(&escape(error), NOTE_CHARS)
    )
}

/// An extension was approved (or auto-approved): the grant lasts longer.
pub fn dm_extended(of: i32, resource: &str, by: &str, ext: i32) -> String {
    format!("⏩ Your access to *{resource}* (#{of}) is extended by {by} (#{ext}).")
}

/// A DM about active access, with an "I'm done" button that ends it now.
pub fn with_done_button(text: &str, id: i32) -> Vec<Value> {
    vec![
        text_section(text),
        json!({
            "type": "actions",
            "block_id": format!("jit_done_{id}"),
            "elements": [
                {"type": "button", "action_id": super::payload::DONE_ACTION,
                 "text": {"type": "plain_text", "text": "I'm done"}, "value": id.to_string(),
                 "confirm": {
                     "title": {"type": "plain_text", "text": "End your access now?"},
                     "text": {"type": "mrkdwn", "text": "jitbot revokes it at once."},
                     "confirm": {"type": "plain_text", "text": "End it"},
                     "deny": {"type": "plain_text", "text": "Keep it"}
                 }}
            ]
        }),
    ]
}

/// The decision note of a break-glass approval (the card says so).
pub const BREAK_GLASS: &str = "break-glass";

/// The alert of a break-glass approval, to the channel and every approver.
pub fn break_glass_alert(
    id: i32,
    requester: &str,
    what: &str,
    duration: &str,
    reason: &str,
) -> String {
    format!(
        "🚨 *Break-glass*: {} approved their own request #{id} for *{what}* ({duration}): {}. Review it now; `/jit revoke {id}` ends it.",
        mention(requester),
        cut(&escape(reason), NOTE_CHARS)
    )
}

/// Access ends soon: when, and how much more an extension may add.
pub fn dm_ending_soon(
    id: i32,
    resource: &str,
    end: DateTime<Utc>,
    more: Option<crate::domain::GrantDuration>,
) -> String {
    format!(
        "⏳ Your access to *{resource}* (#{id}) ends {}. {}",
        when(end),
        match more {
            Some(more) => format!(
                "Need more? Extend it by {more} (approved like a request unless policy auto-approves it), or end it now if you are done."
            ),
            None =>
                "It cannot be extended further; ask again with `/jit request` if you need more."
                    .to_string(),
        }
    )
}

/// The buttons of the ending-soon DM: Extend (by `more`, when there is room) and "I'm done".
pub fn ending_soon_blocks(
    text: &str,
    id: i32,
    more: Option<crate::domain::GrantDuration>,
) -> Vec<Value> {
    let mut blocks = with_done_button(text, id);
    if let (Some(more), Some(actions)) = (more, blocks.get_mut(1))
        && let Some(elements) = actions["elements"].as_array_mut()
    {
        elements.insert(
            0,
            json!({"type": "button", "action_id": super::payload::EXTEND_ACTION, "style": "primary",
                   "text": {"type": "plain_text", "text": format!("Extend by {more}")},
                   "value": format!("{id}:{}", more.secs())}),
        );
    }
    blocks
}
