//! The App Home tab: my active access (time left, "I'm done"), my requests that wait, and what
//! waits for my approval (Approve / Deny). Published with `views.publish` when the tab opens and
//! after a click on it. Within Slack's 100 blocks: each list shows its first entries and says how
//! many more there are.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::blocks::{cut, escape, mention, text_section, when};
use super::payload::{APPROVE_ACTION, DENY_ACTION, DONE_ACTION};

/// Entries shown per list (3 lists × 2 blocks each stays well under 100 blocks).
pub const SHOWN: usize = 20;

/// One of my grants.
pub struct MyGrant {
    pub id: i32,
    pub what: String,
    pub state: String,
    pub ends: Option<DateTime<Utc>>,
}

/// One of my requests that waits for approvers.
pub struct MyWait {
    pub id: i32,
    pub what: String,
    pub duration: String,
}

/// A request waiting for my decision.
pub struct ForMe {
    pub id: i32,
    pub requester: String,
    pub what: String,
    pub duration: String,
    pub reason: String,
    /// Mine to decide (an admin also sees the others).
    pub mine: bool,
}

fn header(text: &str) -> Value {
    json!({"type": "header", "text": {"type": "plain_text", "text": cut(text, 150)}})
}

/// `…and N more` under a list of `count` items of which [`SHOWN`] are shown; `…and over N
/// more` when `count` itself is only where counting stopped.
fn more(count: usize, counted_all: bool, hint: &str) -> Option<Value> {
    (count > SHOWN).then(|| {
        let over = if counted_all { "" } else { "over " };
        json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": format!("…and {over}{} more: {hint}", count - SHOWN)}]})
    })
}

/// The Home tab. `for_me_counted_all` is false when `for_me` stops short of every request
/// waiting for this person (there were too many to read for one view).
pub fn home_view(
    grants: &[MyGrant],
    waits: &[MyWait],
    for_me: &[ForMe],
    for_me_counted_all: bool,
) -> Value {
    let mut blocks = vec![header("Your access")];
    if grants.is_empty() {
        blocks.push(text_section(
            "Nothing right now. `/jit request` asks for access.",
        ));
    }
    for g in grants.iter().take(SHOWN) {
        let ends = match (g.state.as_str(), g.ends) {
            ("active", Some(t)) => format!("active until {}", when(t)),
            (state, _) => state.replace('_', " "),
        };
        let mut section = json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("*{}* (#{}) · {ends}", escape(&g.what), g.id)}});
        if g.state == "active" {
            section["accessory"] = json!({"type": "button", "action_id": DONE_ACTION,
                "text": {"type": "plain_text", "text": "I'm done"}, "value": g.id.to_string()});
        }
        blocks.push(section);
    }
    blocks.extend(more(grants.len(), true, "`/jit list`"));
    if !waits.is_empty() {
        blocks.push(header("Your requests waiting for approval"));
        let lines: Vec<String> = waits
            .iter()
            .take(SHOWN)
            .map(|w| format!("• #{} *{}* for {}", w.id, escape(&w.what), w.duration))
            .collect();
        blocks.push(text_section(&lines.join("\n")));
        blocks.extend(more(waits.len(), true, "`/jit list`"));
    }
    blocks.push(header("Waiting for your approval"));
    if for_me.is_empty() {
        blocks.push(text_section("Nothing is waiting for you."));
    }
    for r in for_me.iter().take(SHOWN) {
        let reason = if r.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", cut(&escape(&r.reason), 500))
        };
        blocks.push(text_section(&format!(
            "#{} {} wants *{}* for {}{reason}",
            r.id,
            mention(&r.requester),
            escape(&r.what),
            r.duration
        )));
        if r.mine {
            blocks.push(json!({
                "type": "actions",
                "block_id": format!("jit_home_{}", r.id),
                "elements": [
                    {"type": "button", "action_id": APPROVE_ACTION, "style": "primary",
                     "text": {"type": "plain_text", "text": "Approve"}, "value": r.id.to_string()},
                    {"type": "button", "action_id": DENY_ACTION, "style": "danger",
                     "text": {"type": "plain_text", "text": "Deny"}, "value": r.id.to_string()},
                ]
            }));
        }
    }
    blocks.extend(more(for_me.len(), for_me_counted_all, "`/jit pending`"));
    json!({"type": "home", "blocks": blocks})
}
