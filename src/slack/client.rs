//! Slack Web API calls, through slack-morphism, against `SLACK_API_URL`.

use std::sync::Arc;

use anyhow::Context;
use serde_json::Value;
use slack_morphism::prelude::*;

#[derive(Clone)]
pub struct SlackApi {
    client: Arc<SlackClient<SlackClientHyperHttpsConnector>>,
    token: SlackApiToken,
}

impl SlackApi {
    /// `api_url` is the base such as `https://slack.com/api/`; plain http is allowed for fakes.
    pub fn new(api_url: &str, bot_token: &str) -> anyhow::Result<Self> {
        crate::config::install_crypto_provider();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .context("loading the system's TLS roots")?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        // slack-morphism joins base and method with its own `/`.
        let base = api_url.trim_end_matches('/');
        let connector = SlackClientHyperConnector::with_connector(https).with_slack_api_url(base);
        Ok(Self {
            client: Arc::new(SlackClient::new(connector)),
            token: SlackApiToken::new(SlackApiTokenValue(bot_token.to_string())),
        })
    }

    fn content(text: &str, blocks: Option<Vec<Value>>) -> anyhow::Result<SlackMessageContent> {
        let mut content = SlackMessageContent::new().with_text(text.to_string());
        if let Some(blocks) = blocks {
            let blocks: Vec<SlackBlock> =
                serde_json::from_value(Value::Array(blocks)).context("building blocks")?;
            content = content.with_blocks(blocks);
        }
        Ok(content)
    }

    /// Posts a message and returns its `ts`.
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: Option<Vec<Value>>,
        thread_ts: Option<&str>,
    ) -> anyhow::Result<String> {
        let session = self.client.open_session(&self.token);
        let mut req =
            SlackApiChatPostMessageRequest::new(channel.into(), Self::content(text, blocks)?);
        if let Some(ts) = thread_ts {
            req = req.with_thread_ts(ts.into());
        }
        let resp = session
            .chat_post_message(&req)
            .await
            .context("chat.postMessage")?;
        Ok(resp.ts.0)
    }

    /// Posts one mrkdwn text (with a plain fallback) and returns its `ts`.
    pub async fn post_text(
        &self,
        channel: &str,
        mrkdwn: &str,
        thread_ts: Option<&str>,
    ) -> anyhow::Result<String> {
        let blocks = vec![super::blocks::text_section(mrkdwn)];
        self.post_message(
            channel,
            &super::blocks::strip_mrkdwn(mrkdwn),
            Some(blocks),
            thread_ts,
        )
        .await
    }

    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: Vec<Value>,
    ) -> anyhow::Result<()> {
        let session = self.client.open_session(&self.token);
        let req = SlackApiChatUpdateRequest::new(
            channel.into(),
            Self::content(text, Some(blocks))?,
            ts.into(),
        );
        session.chat_update(&req).await.context("chat.update")?;
        Ok(())
    }

    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> anyhow::Result<()> {
        let session = self.client.open_session(&self.token);
        let req = SlackApiChatPostEphemeralRequest::new(
            channel.into(),
            user.into(),
            Self::content(text, None)?,
        );
        session
            .chat_post_ephemeral(&req)
            .await
            .context("chat.postEphemeral")?;
        Ok(())
    }

    /// The email on a person's Slack profile (`users.info`; needs `users:read.email`).
    pub async fn user_email(&self, user: &str) -> anyhow::Result<Option<String>> {
        let session = self.client.open_session(&self.token);
        let resp = session
            .users_info(&SlackApiUsersInfoRequest::new(user.into()))
            .await
            .context("users.info")?;
        Ok(resp.user.profile.and_then(|p| p.email).map(|e| e.0))
    }
}

/// How long Slack asked us to wait (HTTP 429 `Retry-After`), if this error is a rate limit.
pub fn retry_after(error: &anyhow::Error) -> Option<std::time::Duration> {
    error.chain().find_map(|cause| {
        match cause.downcast_ref::<slack_morphism::errors::SlackClientError>() {
            Some(slack_morphism::errors::SlackClientError::RateLimitError(limit)) => {
                limit.retry_after
            }
            _ => None,
        }
    })
}
