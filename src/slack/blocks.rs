//! What people read in Slack: the approval card (Block Kit) and the direct messages.
//! Pinned with insta snapshots in `tests/`.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::payload::{APPROVE_ACTION, DENY_ACTION};
pub use super::texts::*;
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
    /// A bundle: each resource and how it stands (empty for a request of one resource).
    pub parts: Vec<Part>,
    /// An extension (`/jit extend`): the request whose grant it lengthens.
    pub extends: Option<i32>,
    /// A grant's extensions so far, as the card lists them.
    pub extensions: Vec<String>,
    /// How the ended grant stands at its target (shown once it has ended).
    pub at_target: super::texts::AtTarget,
}

/// One resource of a bundle, as its card shows it.
#[derive(Clone, Debug)]
pub struct Part {
    /// Its request (the lead's, or the one created for it at the approval); `None` before.
    pub id: Option<i32>,
    pub resource: String,
    /// `None`: the bundle was approved but this resource was left out (already open elsewhere).
    pub state: Option<State>,
    pub expires_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// A bundle's resource after the approval: what became of its grant.
fn part_line(v: &CardView, p: &Part) -> String {
    let id = p.id.map(|id| format!(" (#{id})")).unwrap_or_default();
    let error = p
        .error
        .as_deref()
        .map(|e| format!(": {}", cut(&escape(e), NOTE_CHARS)))
        .unwrap_or_default();
    let state = match (v.state, p.state) {
        // Before the approval every resource stands as the request does.
        (State::Pending | State::Denied | State::Cancelled | State::TimedOut, _) => {
            return format!("• *{}*", p.resource);
        }
        (_, None) => "not granted: already open in another request".to_string(),
        (_, Some(State::Active)) => format!(
            "✅ active until {}",
            p.expires_at.map(when).unwrap_or_else(|| "?".into())
        ),
        (_, Some(State::Approved)) if p.error.is_some() => format!("⏳ granting, retrying{error}"),
        (_, Some(State::Approved)) => "⏳ granting…".to_string(),
        (_, Some(State::Revoking)) => "⏳ removing access…".to_string(),
        (_, Some(State::RevokeFailed)) => {
            format!("⚠️ removing access failed and is being retried{error}")
        }
        (_, Some(State::Expired)) => "⌛ expired".to_string(),
        (_, Some(State::Revoked)) => "🔒 revoked early".to_string(),
        (_, Some(State::GrantFailed)) => format!("⚠️ grant failed, no access{error}"),
        (_, Some(State::Cancelled)) => "🚫 cancelled".to_string(),
        (_, Some(other)) => other.label(),
    };
    format!("• *{}*{id} — {state}", p.resource)
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

/// Slack's limit on a section's text (longer: `invalid_blocks`).
pub const MAX_SECTION_TEXT: usize = 3_000;
/// Slack's limit on one field of a section.
pub const MAX_FIELD_TEXT: usize = 2_000;
/// How much of a reason the card shows (the rest of the field is its label).
const CARD_REASON_CHARS: usize = 1_500;
/// How much of a denial note or provider error a card, DM or note shows.
pub(super) const NOTE_CHARS: usize = 500;
/// How much of a resource description the card shows.
const DESCRIPTION_CHARS: usize = 500;

/// `text` cut to at most `max` characters, with `…` where it was cut, never through the middle of
/// an escape (`&amp;`) or a piece of markup (`<@U1>`), so what is left still renders.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut kept: String = text.chars().take(max.saturating_sub(1)).collect();
    if let Some(amp) = kept.rfind('&')
        && !kept[amp..].contains(';')
    {
        kept.truncate(amp);
    }
    if let Some(open) = kept.rfind('<')
        && !kept[open..].contains('>')
    {
        kept.truncate(open);
    }
    kept.push('…');
    kept
}

/// `: <note>` when the card has a note (a denial reason, a provider error).
fn note_suffix(v: &CardView) -> String {
    v.note
        .as_deref()
        .map(|n| format!(": {}", cut(&escape(n), NOTE_CHARS)))
        .unwrap_or_default()
}

/// A Slack user as a mention; an API client (a requester that is not a Slack user) by name.
pub fn mention(user: &str) -> String {
    if crate::domain::policy::is_slack_user(user) {
        format!("<@{user}>")
    } else {
        format!("`{user}` (API client)")
    }
}

pub(super) fn mentions(users: &[String]) -> String {
    users
        .iter()
        .map(|u| mention(u))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One mrkdwn section: the body of a DM or a channel note.
pub fn text_section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(text, MAX_SECTION_TEXT)}})
}

/// The plain-text fallback of a mrkdwn text (notifications, screen readers), within limits.
pub fn plain_fallback(mrkdwn: &str) -> String {
    cut(&strip_mrkdwn(mrkdwn), MAX_SECTION_TEXT)
}

/// The card: plain fallback text and blocks. Buttons only while the request is pending.
pub fn card(v: &CardView) -> (String, Vec<Value>) {
    let headline = match v.extends {
        Some(of) => format!(
            "{} asks for *{}* more of *{}* (#{}, extending #{of})",
            mention(&v.requester),
            v.duration,
            v.resource,
            v.id
        ),
        None => format!(
            "{} requests access to *{}* for *{}* (#{})",
            mention(&v.requester),
            v.resource,
            v.duration,
            v.id
        ),
    };
    let mut blocks = vec![text_section(&headline)];
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Requester*\n{}", mention(&v.requester))}),
        json!({"type": "mrkdwn", "text": format!("*Resource*\n{}", v.resource)}),
        json!({"type": "mrkdwn", "text": format!("*Duration*\n{}", v.duration)}),
        json!({"type": "mrkdwn", "text": format!("*Reason*\n{}", if v.reason.is_empty() { "—".to_string() } else { cut(&escape(&v.reason), CARD_REASON_CHARS) })}),
    ];
    if !v.description.is_empty() {
        fields.push(json!({"type": "mrkdwn", "text": format!("*About*\n{}", cut(&v.description, DESCRIPTION_CHARS))}));
    }
    blocks.push(json!({"type": "section", "fields": fields}));
    let status = if v.parts.is_empty()
        || matches!(
            v.state,
            State::Pending | State::Denied | State::Cancelled | State::TimedOut
        ) {
        status_line(v)
    } else {
        // Approved: each resource's grant has a line of its own below.
        format!("✅ {}", approved_line(v))
    };
    if !v.parts.is_empty() {
        let lines: Vec<String> = v.parts.iter().map(|p| part_line(v, p)).collect();
        blocks.push(text_section(&lines.join("\n")));
    }
    if !v.extensions.is_empty() {
        blocks.push(text_section(&v.extensions.join("\n")));
    }
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
    let fallback = plain_fallback(&format!("{headline} · {status}"));
    (fallback, blocks)
}

fn approved_line(v: &CardView) -> String {
    let at = v
        .decided_at
        .map(|t| format!(" at {}", when(t)))
        .unwrap_or_default();
    if v.note.as_deref() == Some(BREAK_GLASS) {
        format!(
            "🚨 Break-glass: approved by the requester {}{at}",
            mention(&v.requester)
        )
    } else if v.auto_approved {
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
            "⌛ {} · access expired {} · {}",
            approved_line(v),
            v.ended_at.map(when).unwrap_or(ends),
            super::texts::ended_at_target(v.at_target)
        ),
        State::Revoked => format!(
            "🔒 {} · access revoked early by {}{}",
            approved_line(v),
            v.decided_by
                .as_deref()
                .map(mention)
                .unwrap_or_else(|| "jitbot".into()),
            v.ended_at
                .map(|t| format!(
                    " at {} · {}",
                    when(t),
                    super::texts::ended_at_target(v.at_target)
                ))
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
        // Ended by jitbot itself when the policy in force no longer allowed it.
        State::Cancelled if v.decided_by.is_none() && v.note.is_some() => format!(
            "🚫 Cancelled by jitbot{}{}",
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
        State::Extended => format!(
            "✅ {} · #{} now lasts {} longer",
            approved_line(v),
            v.extends.unwrap_or_default(),
            v.duration
        ),
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
    fn long_text_is_cut_without_breaking_escapes_or_markup() {
        let long = "a".repeat(5_000);
        let cut_text = cut(&long, 100);
        assert_eq!(cut_text.chars().count(), 100);
        assert!(cut_text.ends_with('…'));
        assert_eq!(cut("short", 100), "short");
        let escaped = format!("{}&amp;", "b".repeat(97));
        assert_eq!(cut(&escaped, 100), format!("{}…", "b".repeat(97)));
        let markup = format!("{}<@U123>", "c".repeat(95));
        assert_eq!(cut(&markup, 100), format!("{}…", "c".repeat(95)));
        let section = text_section(&"é".repeat(4_000));
        let text = section["text"]["text"].as_str().unwrap();
        assert_eq!(text.chars().count(), MAX_SECTION_TEXT);
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
