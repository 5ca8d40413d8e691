//! What Slack's `views.open` enforces, for the fake: a live `trigger_id`, and a modal within
//! Block Kit's limits (title, buttons and options short enough, at most 100 blocks and 100
//! options, a `private_metadata` of at most 3,000 characters).

use serde_json::Value;

fn text_len(v: &Value) -> usize {
    v.get("text")
        .and_then(Value::as_str)
        .map(|t| t.chars().count())
        .unwrap_or(0)
}

/// Slack's error code for this `views.open` body, or `None` when it would open.
pub fn view_error(body: &Value) -> Option<&'static str> {
    let trigger = body.get("trigger_id").and_then(Value::as_str).unwrap_or("");
    if trigger.is_empty() {
        return Some("invalid_arguments");
    }
    if trigger.starts_with("expired") {
        return Some("expired_trigger_id");
    }
    let view = match body.get("view") {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok()?,
        Some(v) => v.clone(),
        None => return Some("invalid_arguments"),
    };
    if view.get("type").and_then(Value::as_str) != Some("modal") {
        return Some("invalid_arguments");
    }
    let title = view.get("title").map(text_len).unwrap_or(0);
    if title == 0 || title > 24 {
        return Some("invalid_arguments");
    }
    for button in ["submit", "close"] {
        if view.get(button).is_some_and(|b| text_len(b) > 24) {
            return Some("invalid_arguments");
        }
    }
    if view
        .get("private_metadata")
        .and_then(Value::as_str)
        .is_some_and(|m| m.chars().count() > 3_000)
        || view
            .get("callback_id")
            .and_then(Value::as_str)
            .is_some_and(|c| c.len() > 255)
    {
        return Some("invalid_arguments");
    }
    let Some(blocks) = view.get("blocks").and_then(Value::as_array) else {
        return Some("invalid_arguments");
    };
    if blocks.is_empty() || blocks.len() > 100 {
        return Some("invalid_arguments");
    }
    let has_input = blocks
        .iter()
        .any(|b| b.get("type").and_then(Value::as_str) == Some("input"));
    // A modal with inputs needs a submit button.
    if has_input && view.get("submit").is_none() {
        return Some("invalid_arguments");
    }
    for block in blocks {
        if block.get("type").and_then(Value::as_str) != Some("input") {
            continue;
        }
        let label = block.get("label").map(text_len).unwrap_or(0);
        if label == 0 || label > 2_000 {
            return Some("invalid_arguments");
        }
        let Some(element) = block.get("element") else {
            return Some("invalid_arguments");
        };
        if let Some(options) = element.get("options").and_then(Value::as_array)
            && (options.is_empty()
                || options.len() > 100
                || options.iter().any(|o| {
                    o.get("text").map(text_len).unwrap_or(0) > 75
                        || o.get("value")
                            .and_then(Value::as_str)
                            .is_none_or(|v| v.is_empty() || v.len() > 150)
                }))
        {
            return Some("invalid_arguments");
        }
    }
    None
}

/// Slack's error code for this `views.publish` body (a Home tab), or `None`.
pub fn publish_error(body: &Value) -> Option<&'static str> {
    if body
        .get("user_id")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Some("invalid_arguments");
    }
    let view = match body.get("view") {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok()?,
        Some(v) => v.clone(),
        None => return Some("invalid_arguments"),
    };
    if view.get("type").and_then(Value::as_str) != Some("home") {
        return Some("invalid_arguments");
    }
    let Some(blocks) = view.get("blocks").and_then(Value::as_array) else {
        return Some("invalid_arguments");
    };
    if blocks.len() > 100
        || blocks.iter().any(|b| {
            b.get("type").and_then(Value::as_str) == Some("header")
                && b.get("text").map(text_len).unwrap_or(0) > 150
        })
    {
        return Some("invalid_arguments");
    }
    None
}
