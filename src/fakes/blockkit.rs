//! Slack's Block Kit limits, as the fake Slack enforces them on every message.

use serde_json::Value;

/// Slack's Block Kit limits, as Slack enforces them: `None` when the message is within them,
/// else the error Slack answers.
pub(super) fn block_kit_error(body: &Value) -> Option<&'static str> {
    let text_len = |v: &Value| {
        v.get("text")
            .and_then(Value::as_str)
            .map(|t| t.chars().count())
    };
    if body
        .get("text")
        .and_then(Value::as_str)
        .is_some_and(|t| t.chars().count() > 40_000)
    {
        return Some("msg_too_long");
    }
    let blocks = match body.get("blocks") {
        None | Some(Value::Null) => return None,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v) => v,
            Err(_) => return Some("invalid_blocks"),
        },
        Some(v) => v.clone(),
    };
    let Some(blocks) = blocks.as_array() else {
        return Some("invalid_blocks");
    };
    if blocks.len() > 50 {
        return Some("invalid_blocks");
    }
    for block in blocks {
        let id_too_long = |k: &str| {
            block
                .get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| s.len() > 255)
        };
        if id_too_long("block_id") {
            return Some("invalid_blocks");
        }
        if block.get("type").and_then(Value::as_str) == Some("section") {
            if block
                .get("text")
                .and_then(text_len)
                .is_some_and(|n| n > 3_000)
            {
                return Some("invalid_blocks");
            }
            if let Some(fields) = block.get("fields").and_then(Value::as_array)
                && (fields.len() > 10
                    || fields
                        .iter()
                        .any(|f| text_len(f).is_some_and(|n| n > 2_000)))
            {
                return Some("invalid_blocks");
            }
        }
        for element in block
            .get("elements")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if element.get("type").and_then(Value::as_str) == Some("button") {
                let label = element.get("text").and_then(text_len).unwrap_or(0);
                let value = element
                    .get("value")
                    .and_then(Value::as_str)
                    .map_or(0, |v| v.chars().count());
                let action = element
                    .get("action_id")
                    .and_then(Value::as_str)
                    .map_or(0, str::len);
                if label > 75 || value > 2_000 || action > 255 {
                    return Some("invalid_blocks");
                }
            }
            if element.get("type").and_then(Value::as_str) == Some("mrkdwn")
                && text_len(element).is_some_and(|n| n > 3_000)
            {
                return Some("invalid_blocks");
            }
        }
    }
    None
}
