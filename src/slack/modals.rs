//! The forms jitbot opens (`views.open`): the reason for a denial, and the request form of
//! `/jit request` with no arguments. Within Slack's limits: a title of 24 characters, at most 100
//! options in a select, labels of 2,000.

use serde_json::{Value, json};

use super::blocks::{cut, escape, mention};

/// `callback_id` of the denial form; its `private_metadata` is the request id.
pub const DENY_FORM: &str = "jit_deny_form";
/// `callback_id` of the request form.
pub const REQUEST_FORM: &str = "jit_request_form";
/// Block ids of the forms' inputs (a submission's errors name these).
pub const REASON: &str = "reason";
pub const RESOURCE: &str = "resource";
pub const DURATION: &str = "duration";
/// Most options a `static_select` takes; past it the form asks for the name as text.
pub const MAX_OPTIONS: usize = 100;
/// Longest denial reason the form takes (the card and the DM show this much).
pub const MAX_DENY_REASON: usize = 500;

fn plain(text: &str, max: usize) -> Value {
    json!({"type": "plain_text", "text": cut(text, max)})
}

/// The form an approver fills in to deny request `id`.
pub fn deny_form(id: i32, requester: &str, resource: &str, duration: &str, reason: &str) -> Value {
    let asked = format!(
        "{} asked for *{}* for {}{}",
        mention(requester),
        escape(resource),
        duration,
        if reason.is_empty() {
            String::new()
        } else {
            format!(": {}", cut(&escape(reason), 1_000))
        }
    );
    json!({
        "type": "modal",
        "callback_id": DENY_FORM,
        "private_metadata": id.to_string(),
        "title": plain(&format!("Deny request #{id}"), 24),
        "submit": plain("Deny", 24),
        "close": plain("Cancel", 24),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": asked}},
            {
                "type": "input",
                "block_id": REASON,
                "optional": true,
                "label": plain("Why? The requester sees this.", 2_000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "text",
                    "multiline": true,
                    "max_length": MAX_DENY_REASON
                }
            }
        ]
    })
}

/// The request form: what the person may ask for (resources, then bundles), how long, why.
/// `choices` are (value, label) pairs; more than [`MAX_OPTIONS`] become a text field.
pub fn request_form(choices: &[(String, String)], reason_max: usize) -> Value {
    let resource = if choices.len() <= MAX_OPTIONS && !choices.is_empty() {
        let options: Vec<Value> = choices
            .iter()
            .map(|(value, label)| json!({"text": plain(label, 75), "value": value}))
            .collect();
        json!({
            "type": "input",
            "block_id": RESOURCE,
            "label": plain("Resource", 2_000),
            "element": {
                "type": "static_select",
                "action_id": "pick",
                "placeholder": plain("What do you need?", 150),
                "options": options
            }
        })
    } else {
        json!({
            "type": "input",
            "block_id": RESOURCE,
            "label": plain("Resource", 2_000),
            "hint": plain("Its name, as `/jit resources` lists it; several joined by commas", 2_000),
            "element": {"type": "plain_text_input", "action_id": "text", "max_length": 500}
        })
    };
    json!({
        "type": "modal",
        "callback_id": REQUEST_FORM,
        "title": plain("Request access", 24),
        "submit": plain("Request", 24),
        "close": plain("Cancel", 24),
        "blocks": [
            resource,
            {
                "type": "input",
                "block_id": DURATION,
                "optional": true,
                "label": plain("For how long", 2_000),
                "hint": plain("Such as 30m or 1h30m; empty: the resource's default", 2_000),
                "element": {"type": "plain_text_input", "action_id": "text", "max_length": 20}
            },
            {
                "type": "input",
                "block_id": REASON,
                "optional": true,
                "label": plain("Why", 2_000),
                "hint": plain("A ticket id helps the approvers (some resources require one)", 2_000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": "text",
                    "multiline": true,
                    "max_length": reason_max
                }
            }
        ]
    })
}

/// A form's answer that shows `errors` (block id → message) on the fields, keeping it open.
pub fn field_errors(errors: &[(&str, String)]) -> Value {
    let map: serde_json::Map<String, Value> = errors
        .iter()
        .map(|(block, text)| (block.to_string(), Value::String(cut(text, 150))))
        .collect();
    json!({"response_action": "errors", "errors": map})
}
