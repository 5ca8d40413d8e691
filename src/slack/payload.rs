//! What Slack sends us: slash-command forms and interaction payloads, parsed into plain structs.

use serde::Deserialize;

/// The fields of a slash command jitbot uses.
#[derive(Debug, Clone, Deserialize)]
pub struct SlashCommand {
    pub user_id: String,
    #[serde(default)]
    pub channel_id: String,
    #[serde(default)]
    pub text: String,
    /// Where later parts of a long answer go (a few uses within 30 minutes).
    #[serde(default)]
    pub response_url: String,
    /// The workspace the command came from.
    #[serde(default)]
    pub team_id: String,
    /// The Enterprise Grid org, when there is one.
    #[serde(default)]
    pub enterprise_id: String,
}

/// A button click on an approval card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    /// Who clicked: the signed payload's `user.id`, never anything from the button.
    pub user: String,
    pub action: ClickAction,
    /// The button's `value`: the request id it claims to be about.
    pub value: String,
    pub channel: String,
    /// Where an answer to the clicker can go when there is no channel to post it in.
    pub response_url: String,
    /// The workspace the click came from.
    pub team_id: String,
    /// The Enterprise Grid org, when there is one.
    pub enterprise_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickAction {
    Approve,
    Deny,
}

/// Action ids on the card's buttons.
pub const APPROVE_ACTION: &str = "jit_approve";
pub const DENY_ACTION: &str = "jit_deny";

#[derive(Deserialize)]
struct RawInteraction {
    #[serde(rename = "type")]
    kind: String,
    user: RawId,
    channel: Option<RawId>,
    team: Option<RawId>,
    enterprise: Option<RawId>,
    #[serde(default)]
    response_url: String,
    #[serde(default)]
    actions: Vec<RawAction>,
}

#[derive(Deserialize)]
struct RawId {
    id: String,
}

#[derive(Deserialize)]
struct RawAction {
    action_id: String,
    #[serde(default)]
    value: String,
}

/// Why an interaction payload was not one jitbot acts on.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the payload is not valid JSON of a Slack interaction: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unsupported interaction `{0}`")]
    Unsupported(String),
}

/// Parses the `payload` form field of `/slack/interactions`.
pub fn parse_click(payload: &str) -> Result<Click, PayloadError> {
    let raw: RawInteraction = serde_json::from_str(payload)?;
    if raw.kind != "block_actions" {
        return Err(PayloadError::Unsupported(raw.kind));
    }
    let action = raw
        .actions
        .into_iter()
        .next()
        .ok_or_else(|| PayloadError::Unsupported("block_actions without an action".into()))?;
    let kind = match action.action_id.as_str() {
        APPROVE_ACTION => ClickAction::Approve,
        DENY_ACTION => ClickAction::Deny,
        other => return Err(PayloadError::Unsupported(other.chars().take(64).collect())),
    };
    Ok(Click {
        user: raw.user.id,
        action: kind,
        value: action.value,
        channel: raw.channel.map(|c| c.id).unwrap_or_default(),
        response_url: raw.response_url,
        team_id: raw.team.map(|t| t.id).unwrap_or_default(),
        enterprise_id: raw.enterprise.map(|e| e.id).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_click_takes_the_clicker_from_the_payload() {
        let payload = r#"{"type":"block_actions","user":{"id":"U0BOB","name":"bob"},"channel":{"id":"C0REVIEW"},
            "actions":[{"action_id":"jit_approve","value":"42","type":"button"}],"response_url":"https://x"}"#;
        let click = parse_click(payload).unwrap();
        assert_eq!(click.user, "U0BOB");
        assert_eq!(click.action, ClickAction::Approve);
        assert_eq!(click.value, "42");
        assert!(parse_click("{").is_err());
        assert!(parse_click(r#"{"type":"view_submission","user":{"id":"U1"}}"#).is_err());
    }
}
