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
    /// Opens a modal within 3 s of the command (`/jit request` with no arguments).
    #[serde(default)]
    pub trigger_id: String,
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
    /// Opens a modal within 3 s of the click (empty if Slack sent none).
    pub trigger_id: String,
    /// Clicked on the App Home tab (which is then published again).
    pub from_home: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickAction {
    Approve,
    Deny,
    /// "I'm done" on the requester's DM: end the access now.
    Done,
    /// Extend on the DM of access that ends soon.
    Extend,
}

/// Action ids on the card's buttons.
pub const APPROVE_ACTION: &str = "jit_approve";
pub const DENY_ACTION: &str = "jit_deny";
/// Action id of the "I'm done" button on an active grant's DM.
pub const DONE_ACTION: &str = "jit_done";
/// Action id of the Extend button on the DM of access that ends soon; its value is
/// `<request id>:<seconds>`.
pub const EXTEND_ACTION: &str = "jit_extend";

/// A modal submitted (`view_submission`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// Who submitted: the signed payload's `user.id`.
    pub user: String,
    pub team_id: String,
    pub enterprise_id: String,
    /// Which form: [`super::modals::DENY_FORM`] or [`super::modals::REQUEST_FORM`].
    pub callback_id: String,
    /// What the form was opened for (the request id of a denial).
    pub private_metadata: String,
    /// Each input block's value by block id: typed text, or the selected option's value.
    pub values: std::collections::BTreeMap<String, String>,
}

/// An interaction jitbot acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    Click(Click),
    Submission(Submission),
}

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
    #[serde(default)]
    trigger_id: String,
    view: Option<RawView>,
}

#[derive(Deserialize)]
struct RawView {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    callback_id: String,
    #[serde(default)]
    private_metadata: String,
    state: Option<RawState>,
}

#[derive(Deserialize)]
struct RawState {
    /// block id → action id → the element's state.
    #[serde(default)]
    values: std::collections::BTreeMap<String, std::collections::BTreeMap<String, RawValue>>,
}

#[derive(Deserialize)]
struct RawValue {
    value: Option<String>,
    selected_option: Option<RawOption>,
}

#[derive(Deserialize)]
struct RawOption {
    value: String,
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

/// Parses the `payload` form field of `/slack/interactions`: a button click or a submitted form.
pub fn parse_interaction(payload: &str) -> Result<Interaction, PayloadError> {
    let raw: RawInteraction = serde_json::from_str(payload)?;
    match raw.kind.as_str() {
        "block_actions" => click(raw).map(Interaction::Click),
        "view_submission" => submission(raw).map(Interaction::Submission),
        _ => Err(PayloadError::Unsupported(raw.kind)),
    }
}

/// Parses a button click (see [`parse_interaction`]).
pub fn parse_click(payload: &str) -> Result<Click, PayloadError> {
    match parse_interaction(payload)? {
        Interaction::Click(click) => Ok(click),
        Interaction::Submission(_) => Err(PayloadError::Unsupported("view_submission".into())),
    }
}

fn submission(raw: RawInteraction) -> Result<Submission, PayloadError> {
    let view = raw
        .view
        .ok_or_else(|| PayloadError::Unsupported("view_submission without a view".into()))?;
    let values = view
        .state
        .map(|s| s.values)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(block, actions)| {
            let value = actions.into_values().next()?;
            let text = value
                .selected_option
                .map(|o| o.value)
                .or(value.value)
                .unwrap_or_default();
            Some((block, text))
        })
        .collect();
    Ok(Submission {
        user: raw.user.id,
        team_id: raw.team.map(|t| t.id).unwrap_or_default(),
        enterprise_id: raw.enterprise.map(|e| e.id).unwrap_or_default(),
        callback_id: view.callback_id,
        private_metadata: view.private_metadata,
        values,
    })
}

fn click(raw: RawInteraction) -> Result<Click, PayloadError> {
    let action = raw
        .actions
        .into_iter()
        .next()
        .ok_or_else(|| PayloadError::Unsupported("block_actions without an action".into()))?;
    let kind = match action.action_id.as_str() {
        APPROVE_ACTION => ClickAction::Approve,
        DENY_ACTION => ClickAction::Deny,
        DONE_ACTION => ClickAction::Done,
        EXTEND_ACTION => ClickAction::Extend,
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
        trigger_id: raw.trigger_id,
        from_home: raw.view.is_some_and(|v| v.kind == "home"),
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

    #[test]
    fn a_submission_carries_each_fields_value() {
        let payload = r#"{"type":"view_submission","user":{"id":"U0BOB"},"team":{"id":"T1"},
            "view":{"callback_id":"jit_deny_form","private_metadata":"42","state":{"values":{
              "reason":{"text":{"type":"plain_text_input","value":"not now"}},
              "resource":{"pick":{"type":"static_select","selected_option":{"value":"prod-db"}}}}}}}"#;
        let Interaction::Submission(s) = parse_interaction(payload).unwrap() else {
            panic!("a submission");
        };
        assert_eq!(s.user, "U0BOB");
        assert_eq!(s.callback_id, "jit_deny_form");
        assert_eq!(s.private_metadata, "42");
        assert_eq!(s.values["reason"], "not now");
        assert_eq!(s.values["resource"], "prod-db");
        assert!(parse_interaction(r#"{"type":"view_submission","user":{"id":"U1"}}"#).is_err());
    }
}
