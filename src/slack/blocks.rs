//! What people read in Slack: the approval card (Block Kit) and the direct messages.
//! Pinned with insta snapshots in `tests/`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::payload::{APPROVE_ACTION, DENY_ACTION};
use crate::domain::State;

/// Everything the card shows, gathered from the store by the caller.
#[derive(Clone, Debug)]
pub struct CardView {
    pub id: i32,
    pub requester: String,
    pub resource: String,
    pub description: String,
    pub duration: String,
    pub reason: String,
    pub state: State,
    pub approvals_needed: i32,
    /// Approvers so far, in order.
    pub approved_by: Vec<String>,
    /// Who took the last decision (denier, canceller, revoker).
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub auto_approved: bool,
    pub note: Option<String>,
}

/// A time as Slack shows it in each reader's own zone, with a UTC fallback.
pub fn when(t: DateTime<Utc>) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} at {{time}}|{}>",
        t.timestamp(),
        t.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

/// Text from people or providers, made inert: Slack reads `<…>` as mentions and links
/// (`<!channel>` would ping everyone), so `&`, `<` and `>` are escaped as Slack asks.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `: <note>` when the card has a note (a denial reason, a provider error).
fn note_suffix(v: &CardView) -> String {
    v.note
        .as_deref()
        .map(|n| format!(": {}", escape(n)))
        .unwrap_or_default()
}

pub fn mention(user: &str) -> String {
    format!("<@{user}>")
}

fn mentions(users: &[String]) -> String {
    users
        .iter()
        .map(|u| mention(u))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One mrkdwn section: the body of a DM or a channel note.
pub fn text_section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

/// The card: plain fallback text and blocks. Buttons only while the request is pending.
pub fn card(v: &CardView) -> (String, Vec<Value>) {
    let headline = format!(
        "{} requests access to *{}* for *{}* (#{})",
        mention(&v.requester),
        v.resource,
        v.duration,
        v.id
    );
    let mut blocks = vec![text_section(&headline)];
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Requester*\n{}", mention(&v.requester))}),
        json!({"type": "mrkdwn", "text": format!("*Resource*\n{}", v.resource)}),
        json!({"type": "mrkdwn", "text": format!("*Duration*\n{}", v.duration)}),
        json!({"type": "mrkdwn", "text": format!("*Reason*\n{}", if v.reason.is_empty() { "—".to_string() } else { escape(&v.reason) })}),
    ];
    if !v.description.is_empty() {
        fields.push(json!({"type": "mrkdwn", "text": format!("*About*\n{}", v.description)}));
    }
    blocks.push(json!({"type": "section", "fields": fields}));
    let status = status_line(v);
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": status}]}));
    if v.state == State::Pending {
        blocks.push(json!({
            "type": "actions",
            "block_id": format!("jit_request_{}", v.id),
            "elements": [
                {"type": "button", "action_id": APPROVE_ACTION, "style": "primary",
                 "text": {"type": "plain_text", "text": "Approve"}, "value": v.id.to_string()},
                {"type": "button", "action_id": DENY_ACTION, "style": "danger",
                 "text": {"type": "plain_text", "text": "Deny"}, "value": v.id.to_string()},
            ]
        }));
    }
    let fallback = format!("{} · {}", strip_mrkdwn(&headline), strip_mrkdwn(&status));
    (fallback, blocks)
}

fn approved_line(v: &CardView) -> String {
    let at = v
        .decided_at
        .map(|t| format!(" at {}", when(t)))
        .unwrap_or_default();
    if v.auto_approved {
        format!("Auto-approved by policy{at}")
    } else {
        format!("Approved by {}{at}", mentions(&v.approved_by))
    }
}

fn status_line(v: &CardView) -> String {
    let ends = v.expires_at.map(when).unwrap_or_else(|| "?".into());
    match v.state {
        State::Pending => {
            let mut line = format!(
                "Pending · needs {} approval{}",
                v.approvals_needed,
                if v.approvals_needed == 1 { "" } else { "s" }
            );
            if !v.approved_by.is_empty() {
                line.push_str(&format!(
                    " · approved by {} ({} of {})",
                    mentions(&v.approved_by),
                    v.approved_by.len(),
                    v.approvals_needed
                ));
            }
            line
        }
        State::Approved => format!("✅ {} · granting access…", approved_line(v)),
        State::Active => format!("✅ {} · access ends {ends}", approved_line(v)),
        State::Revoking => format!("✅ {} · ⏳ removing access…", approved_line(v)),
        State::RevokeFailed => format!(
            "⚠️ {} · removing access failed and is being retried{}",
            approved_line(v),
            note_suffix(v)
        ),
        State::Expired => format!(
            "⌛ {} · access expired {}",
            approved_line(v),
            v.ended_at.map(when).unwrap_or(ends)
        ),
        State::Revoked => format!(
            "🔒 {} · access revoked early by {}{}",
            approved_line(v),
            v.decided_by
                .as_deref()
                .map(mention)
                .unwrap_or_else(|| "jitbot".into()),
            v.ended_at
                .map(|t| format!(" at {}", when(t)))
                .unwrap_or_default()
        ),
        State::Denied => format!(
            "❌ Denied by {}{}{}",
            v.decided_by.as_deref().map(mention).unwrap_or_default(),
            v.decided_at
                .map(|t| format!(" at {}", when(t)))
                .unwrap_or_default(),
            note_suffix(v)
        ),
        State::Cancelled => format!(
            "🚫 Cancelled by the requester{}",
            v.decided_at
                .map(|t| format!(" at {}", when(t)))
                .unwrap_or_default()
        ),
        State::TimedOut => "⌛ Timed out: nobody decided in time".to_string(),
        State::GrantFailed => format!(
            "⚠️ {} · the grant failed, no access was given{}",
            approved_line(v),
            note_suffix(v)
        ),
    }
}

/// Slack markup (`<@U1>`, `<!date^…|fallback>`, `*bold*`) turned into plain text.
pub fn strip_mrkdwn(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let inner = &rest[start + 1..start + end];
        if let Some(user) = inner.strip_prefix('@') {
            out.push('@');
            out.push_str(user);
        } else if let Some((_, fallback)) = inner.split_once('|') {
            out.push_str(fallback);
        } else {
            out.push_str(inner);
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out.replace('*', "")
}

// ---- direct messages and notes ----------------------------------------------------------------

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
            .map(|r| format!(": {}", escape(r)))
            .unwrap_or_else(|| ".".into())
    )
}

pub fn dm_cancelled(id: i32, resource: &str) -> String {
    format!("🚫 You cancelled request #{id} for *{resource}*.")
}

pub fn dm_timed_out(id: i32, resource: &str, ttl: &str) -> String {
    format!(
        "⌛ Your request #{id} for *{resource}* timed out: nobody decided within {ttl}. Ask again with `/jit request {resource}` if you still need it."
    )
}

pub fn dm_expired(id: i32, resource: &str) -> String {
    format!("⌛ Your access to *{resource}* (#{id}) has expired and was removed.")
}

pub fn dm_revoked(id: i32, resource: &str, by: Option<&str>) -> String {
    let by = by
        .map(|u| format!(" by {}", mention(u)))
        .unwrap_or_default();
    format!("🔒 Your access to *{resource}* (#{id}) was revoked{by}.")
}

pub fn dm_grant_failed(id: i32, resource: &str, error: &str) -> String {
    format!(
        "⚠️ jitbot could not grant *{resource}* (#{id}): {}. No access was given; the reviewers were told.",
        escape(error)
    )
}

pub fn note_grant_failed(id: i32, resource: &str, error: &str) -> String {
    format!(
        "⚠️ Granting *{resource}* for request #{id} failed: {}. No access was given.",
        escape(error)
    )
}

pub fn note_revoke_failed(id: i32, resource: &str, error: &str) -> String {
    format!(
        "⚠️ Removing access to *{resource}* for request #{id} failed: {}. jitbot keeps retrying until it succeeds.",
        escape(error)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_people_cannot_ping_the_channel() {
        assert_eq!(
            escape("<!channel> & <@U1>"),
            "&lt;!channel&gt; &amp; &lt;@U1&gt;"
        );
    }

    #[test]
    fn markup_turns_into_plain_text() {
        assert_eq!(
            strip_mrkdwn("*<@U1>* at <!date^1^{time}|10:00 UTC>"),
            "@U1 at 10:00 UTC"
        );
        assert_eq!(strip_mrkdwn("a < b"), "a < b");
    }
}
