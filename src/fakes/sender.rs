//! Sends slash commands and clicks to a jitbot the way Slack does, signed with its secret.

use serde_json::{Value, json};

use crate::slack::verify::sign;

/// Sends slash commands and clicks to a jitbot the way Slack does, signed with its secret.
#[derive(Clone)]
pub struct SlackSender {
    pub base: String,
    secret: String,
    http: reqwest::Client,
    /// The workspace payloads say they come from.
    pub team_id: String,
    /// The `response_url` commands and clicks carry.
    pub response_url: String,
}

/// What jitbot answered: HTTP status and the body (JSON when it was JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl SlackSender {
    pub fn new(base: &str, signing_secret: &str) -> Self {
        crate::config::install_crypto_provider();
        Self {
            base: base.trim_end_matches('/').to_string(),
            secret: signing_secret.to_string(),
            http: reqwest::Client::new(),
            team_id: super::slack::TEAM_ID.to_string(),
            response_url: "https://hooks.slack.com/commands/T0TEST/1/x".to_string(),
        }
    }

    /// Posts a form body with the given timestamp and signature headers (`None` leaves one out).
    pub async fn post_raw(
        &self,
        path: &str,
        body: String,
        timestamp: Option<String>,
        signature: Option<String>,
    ) -> anyhow::Result<Answer> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(ts) = timestamp {
            req = req.header("x-slack-request-timestamp", ts);
        }
        if let Some(sig) = signature {
            req = req.header("x-slack-signature", sig);
        }
        let resp = req.body(body).send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body })
    }

    /// Posts a correctly signed form body.
    pub async fn post(&self, path: &str, body: String) -> anyhow::Result<Answer> {
        let ts = chrono::Utc::now().timestamp().to_string();
        let sig = sign(self.secret.as_bytes(), &ts, body.as_bytes());
        self.post_raw(path, body, Some(ts), Some(sig)).await
    }

    pub fn command_body(user: &str, text: &str) -> String {
        Self::command_form(
            user,
            text,
            super::slack::TEAM_ID,
            "https://hooks.slack.com/commands/T0TEST/1/x",
        )
    }

    pub fn command_form(user: &str, text: &str, team_id: &str, response_url: &str) -> String {
        serde_urlencoded::to_string([
            ("token", "unused"),
            ("team_id", team_id),
            ("channel_id", "C0GENERAL"),
            ("user_id", user),
            ("command", "/jit"),
            ("text", text),
            ("response_url", response_url),
        ])
        .unwrap_or_default()
    }

    /// `/jit <text>` from `user`.
    pub async fn command(&self, user: &str, text: &str) -> anyhow::Result<Answer> {
        let body = Self::command_form(user, text, &self.team_id, &self.response_url);
        self.post("/slack/commands", body).await
    }

    /// The ephemeral text of the answer to `/jit <text>`.
    pub async fn command_text(&self, user: &str, text: &str) -> anyhow::Result<String> {
        let answer = self.command(user, text).await?;
        anyhow::ensure!(
            answer.status == 200,
            "HTTP {} to /jit {text}: {}",
            answer.status,
            answer.body
        );
        Ok(answer.body["text"].as_str().unwrap_or("").to_string())
    }

    pub fn click_body(user: &str, action: &str, value: &str) -> String {
        Self::click_form(
            user,
            action,
            value,
            Some("C0REVIEW"),
            super::slack::TEAM_ID,
            "https://hooks.slack.com/actions/T0TEST/1/x",
        )
    }

    /// A click's form: `channel` `None` is a click outside any channel.
    pub fn click_form(
        user: &str,
        action: &str,
        value: &str,
        channel: Option<&str>,
        team_id: &str,
        response_url: &str,
    ) -> String {
        let mut payload = json!({
            "type": "block_actions",
            "user": {"id": user, "name": user.to_lowercase(), "team_id": team_id},
            "team": {"id": team_id},
            "response_url": response_url,
            "actions": [{"action_id": action, "value": value, "type": "button"}],
        });
        if let Some(channel) = channel {
            payload["channel"] = json!({"id": channel});
        }
        serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap_or_default()
    }

    /// A click on a card button (`jit_approve` / `jit_deny`) by `user`.
    pub async fn click(&self, user: &str, action: &str, value: &str) -> anyhow::Result<Answer> {
        let body = Self::click_form(
            user,
            action,
            value,
            Some("C0REVIEW"),
            &self.team_id,
            &self.response_url,
        );
        self.post("/slack/interactions", body).await
    }

    /// A click from outside any channel (a message the bot sent by DM, say).
    pub async fn click_outside_channel(
        &self,
        user: &str,
        action: &str,
        value: &str,
    ) -> anyhow::Result<Answer> {
        let body = Self::click_form(user, action, value, None, &self.team_id, &self.response_url);
        self.post("/slack/interactions", body).await
    }

    /// `/jit <text>` from `user` as Slack sends it from the message box: with a `trigger_id`,
    /// so jitbot may open a form.
    pub async fn command_with_trigger(
        &self,
        user: &str,
        text: &str,
        trigger_id: &str,
    ) -> anyhow::Result<Answer> {
        let mut form: Vec<(String, String)> = serde_urlencoded::from_str(&Self::command_form(
            user,
            text,
            &self.team_id,
            &self.response_url,
        ))?;
        form.push(("trigger_id".into(), trigger_id.into()));
        self.post("/slack/commands", serde_urlencoded::to_string(form)?)
            .await
    }

    /// A click on a button by `user` in `channel`, with a `trigger_id` as real clicks carry.
    pub async fn click_with_trigger(
        &self,
        user: &str,
        action: &str,
        value: &str,
        channel: &str,
        trigger_id: &str,
    ) -> anyhow::Result<Answer> {
        let mut payload = json!({
            "type": "block_actions",
            "user": {"id": user, "name": user.to_lowercase(), "team_id": self.team_id},
            "team": {"id": self.team_id},
            "channel": {"id": channel},
            "trigger_id": trigger_id,
            "response_url": self.response_url,
            "actions": [{"action_id": action, "value": value, "type": "button"}],
        });
        if channel.is_empty() {
            payload.as_object_mut().map(|p| p.remove("channel"));
        }
        let body = serde_urlencoded::to_string([("payload", payload.to_string())])?;
        self.post("/slack/interactions", body).await
    }

    /// `user` submits the form `callback_id` (opened with `private_metadata`): `values` are
    /// (block id, typed text) for text inputs, and `selected` (block id, option value) for
    /// selects.
    pub async fn submit_form(
        &self,
        user: &str,
        callback_id: &str,
        private_metadata: &str,
        values: &[(&str, &str)],
        selected: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let mut state = serde_json::Map::new();
        for (block, text) in values {
            state.insert(
                block.to_string(),
                json!({"text": {"type": "plain_text_input", "value": text}}),
            );
        }
        for (block, value) in selected {
            state.insert(
                block.to_string(),
                json!({"pick": {"type": "static_select", "selected_option": {"value": value, "text": {"type": "plain_text", "text": value}}}}),
            );
        }
        let payload = json!({
            "type": "view_submission",
            "user": {"id": user, "name": user.to_lowercase(), "team_id": self.team_id},
            "team": {"id": self.team_id},
            "view": {
                "id": "V0FORM",
                "type": "modal",
                "callback_id": callback_id,
                "private_metadata": private_metadata,
                "state": {"values": state}
            }
        });
        let body = serde_urlencoded::to_string([("payload", payload.to_string())])?;
        self.post("/slack/interactions", body).await
    }

    /// An Events API envelope, signed, as Slack posts it (JSON).
    pub async fn event(&self, envelope: &Value) -> anyhow::Result<Answer> {
        self.post("/slack/events", envelope.to_string()).await
    }

    /// `user` opens jitbot's Home tab.
    pub async fn open_home(&self, user: &str) -> anyhow::Result<Answer> {
        self.event(&json!({
            "type": "event_callback",
            "team_id": self.team_id,
            "event": {"type": "app_home_opened", "user": user, "tab": "home", "channel": "D0HOME"}
        }))
        .await
    }

    /// A click on a button of `user`'s Home tab.
    pub async fn click_on_home(
        &self,
        user: &str,
        action: &str,
        value: &str,
    ) -> anyhow::Result<Answer> {
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user, "name": user.to_lowercase(), "team_id": self.team_id},
            "team": {"id": self.team_id},
            "view": {"id": "V0HOME", "type": "home"},
            "actions": [{"action_id": action, "value": value, "type": "button"}],
        });
        let body = serde_urlencoded::to_string([("payload", payload.to_string())])?;
        self.post("/slack/interactions", body).await
    }
}
