//! Slack Web API calls, through slack-morphism, against `SLACK_API_URL`.
//!
//! Every call has a deadline and a connect timeout; every failure is classified
//! ([`SlackError`]): rate limits and server trouble are retried, errors that retrying cannot fix
//! (`channel_not_found`, `invalid_blocks`, …) are not. Answers are read as plain JSON, so an
//! `ok: true` answer counts as done even when it lacks fields a strict type would want (re-sending
//! a post that Slack took would post a second card).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

pub use super::error::SlackError;
use super::error::{DEFAULT_RETRY_AFTER, classify};
use super::gate::{POST_MESSAGE, RateGate};
use crate::metrics::{Metrics, label};

/// Default deadline of one Slack call (`JIT_SLACK_TIMEOUT_MS`).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for the TCP (and TLS) connection to Slack.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What `auth.test` says of the bot token.
#[derive(Debug, Clone)]
pub struct BotIdentity {
    pub team_id: String,
    pub enterprise_id: Option<String>,
    pub is_enterprise_install: bool,
}

/// Where a `response_url` may point: Slack's own hooks host. (Also the origin of
/// `SLACK_API_URL`, so a fake Slack in tests can take them.)
const RESPONSE_URL_HOST: &str = "hooks.slack.com";

/// slack-morphism's HTTP connector for `api_url`: https, or plain http (a fake on this machine),
/// with a connect deadline.
pub(crate) fn connector(api_url: &str) -> anyhow::Result<SlackClientHyperHttpsConnector> {
    crate::config::install_crypto_provider();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .context("loading the system's TLS roots")?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    // slack-morphism joins base and method with its own `/`.
    let base = api_url.trim_end_matches('/');
    Ok(SlackClientHyperConnector::with_connector(https).with_slack_api_url(base))
}

#[derive(Clone)]
pub struct SlackApi {
    pub(super) client: Arc<SlackClient<SlackClientHyperHttpsConnector>>,
    /// For `response_url` posts: no redirects, a deadline per call.
    http: reqwest::Client,
    /// Scheme, host and port of `SLACK_API_URL`.
    api_origin: Option<(String, String, Option<u16>)>,
    pub(super) token: SlackApiToken,
    timeout: Duration,
    gate: Arc<RateGate>,
    metrics: Arc<Metrics>,
}

impl SlackApi {
    /// `api_url` is the base such as `https://slack.com/api/`; plain http is allowed for fakes.
    pub fn new(
        api_url: &str,
        bot_token: &str,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let connector = connector(api_url)?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            .build()
            .context("building the HTTP client for response_url")?;
        let api_origin = reqwest::Url::parse(api_url)
            .ok()
            .and_then(|u| Some((u.scheme().to_string(), u.host_str()?.to_string(), u.port())));
        Ok(Self {
            client: Arc::new(SlackClient::new(connector)),
            http,
            api_origin,
            token: SlackApiToken::new(SlackApiTokenValue(bot_token.to_string())),
            timeout,
            gate: Arc::new(RateGate::default()),
            metrics,
        })
    }

    /// What Slack's rate limits hold back now.
    pub fn gate(&self) -> &RateGate {
        &self.gate
    }

    /// One call: checks our own holds first, runs under the deadline, records its latency and
    /// any rate limit.
    /// `send` is the (lazy) call itself; it goes out only if nothing holds the method back.
    pub(super) async fn call(
        &self,
        method: &'static str,
        channel: &str,
        send: impl Future<Output = Result<Value, SlackClientError>>,
    ) -> anyhow::Result<Value> {
        if let Some(wait) = self.gate.held_for(method, channel) {
            return Err(SlackError::HeldBack { method, wait }.into());
        }
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, send).await;
        self.metrics
            .slack_calls
            .observe(&format!("method=\"{}\"", label(method)), started.elapsed());
        let error = match result {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => classify(method, e),
            Err(_) => SlackError::Transient {
                method,
                detail: format!("no answer within {}s", self.timeout.as_secs_f32()),
            },
        };
        if let SlackError::RateLimited { retry_after, .. } = &error {
            let hold_channel = if method == POST_MESSAGE { channel } else { "" };
            self.gate.hold(method, hold_channel, *retry_after);
        }
        Err(error.into())
    }

    async fn post<RQ: Serialize + Send + Sync>(
        &self,
        method: &'static str,
        channel: &str,
        request: &RQ,
    ) -> anyhow::Result<Value> {
        let session = self.client.open_session(&self.token);
        let send = session
            .http_session_api
            .http_post::<RQ, Value>(method, request, None);
        self.call(method, channel, send).await
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

    /// Posts a message and returns where it landed (for a user ID, the DM's `D…` channel) and
    /// its `ts`, to update it later.
    pub async fn post_message_in(
        &self,
        channel: &str,
        text: &str,
        blocks: Vec<Value>,
    ) -> anyhow::Result<(String, String)> {
        let req =
            SlackApiChatPostMessageRequest::new(channel.into(), Self::content(text, Some(blocks))?);
        let answer = self.post(POST_MESSAGE, channel, &req).await?;
        let field = |key: &str| {
            answer
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let landed = field("channel");
        Ok((
            if landed.is_empty() {
                channel.to_string()
            } else {
                landed
            },
            field("ts"),
        ))
    }

    /// Posts a message and returns its `ts` (empty if Slack's `ok: true` answer lacked one).
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: Option<Vec<Value>>,
        thread_ts: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut req =
            SlackApiChatPostMessageRequest::new(channel.into(), Self::content(text, blocks)?);
        if let Some(ts) = thread_ts {
            req = req.with_thread_ts(ts.into());
        }
        let answer = self.post(POST_MESSAGE, channel, &req).await?;
        let ts = answer
            .get("ts")
            .or_else(|| answer.pointer("/message/ts"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if ts.is_empty() {
            tracing::warn!(
                channel,
                "chat.postMessage answered ok without a ts; the message cannot be updated later"
            );
        }
        Ok(ts.to_string())
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
            &super::blocks::plain_fallback(mrkdwn),
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
        let req = SlackApiChatUpdateRequest::new(
            channel.into(),
            Self::content(text, Some(blocks))?,
            ts.into(),
        );
        self.post("chat.update", channel, &req).await?;
        Ok(())
    }

    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> anyhow::Result<()> {
        let req = SlackApiChatPostEphemeralRequest::new(
            channel.into(),
            user.into(),
            Self::content(text, None)?,
        );
        self.post("chat.postEphemeral", channel, &req).await?;
        Ok(())
    }

    /// May jitbot post to this `response_url`? Only to Slack's hooks host over https, or to the
    /// origin of `SLACK_API_URL` (a fake Slack): a URL from a payload never sends a message, or
    /// the bot's traffic, anywhere else.
    pub fn response_url_allowed(&self, url: &str) -> bool {
        let Ok(u) = reqwest::Url::parse(url) else {
            return false;
        };
        if u.scheme() == "https" && u.host_str() == Some(RESPONSE_URL_HOST) && u.port().is_none() {
            return true;
        }
        self.api_origin
            .as_ref()
            .is_some_and(|(scheme, host, port)| {
                u.scheme() == scheme && u.host_str() == Some(host) && u.port() == *port
            })
    }

    /// Posts an ephemeral message to a command's or a click's `response_url` (usable a few times
    /// within 30 minutes). Only a 2xx counts; a redirect is not followed.
    pub async fn respond(&self, url: &str, text: &str) -> anyhow::Result<()> {
        const METHOD: &str = "response_url";
        if !self.response_url_allowed(url) {
            return Err(SlackError::Permanent {
                method: METHOD,
                code: "response_url_not_slack".into(),
            }
            .into());
        }
        let body = serde_json::json!({
            "response_type": "ephemeral",
            "replace_original": false,
            "text": text,
        });
        let started = Instant::now();
        let result = self.http.post(url).json(&body).send().await;
        self.metrics
            .slack_calls
            .observe(&format!("method=\"{METHOD}\""), started.elapsed());
        let response = result.map_err(|e| SlackError::Transient {
            method: METHOD,
            detail: if e.is_timeout() {
                format!("no answer within {}s", self.timeout.as_secs_f32())
            } else {
                "connection failed".into()
            },
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let error = if status.as_u16() == 429 {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_RETRY_AFTER);
            SlackError::RateLimited {
                method: METHOD,
                retry_after,
            }
        } else if status.is_server_error() {
            SlackError::Transient {
                method: METHOD,
                detail: format!("HTTP {}", status.as_u16()),
            }
        } else {
            // 404 / 410: the URL has expired or was used up; 3xx: not Slack's answer.
            SlackError::Permanent {
                method: METHOD,
                code: format!("HTTP {}", status.as_u16()),
            }
        };
        Err(error.into())
    }

    /// Opens a modal for the person whose click or command carried `trigger_id` (valid 3 s).
    pub async fn views_open(&self, trigger_id: &str, view: Value) -> anyhow::Result<()> {
        let request = serde_json::json!({"trigger_id": trigger_id, "view": view});
        self.post("views.open", "", &request).await?;
        Ok(())
    }

    /// Publishes `user`'s App Home tab.
    pub async fn views_publish(&self, user: &str, view: Value) -> anyhow::Result<()> {
        let request = serde_json::json!({"user_id": user, "view": view});
        self.post("views.publish", "", &request).await?;
        Ok(())
    }

    /// Who the bot token belongs to: its workspace, and its org for an Enterprise Grid install.
    pub async fn auth_test(&self) -> anyhow::Result<BotIdentity> {
        let answer = self
            .post("auth.test", "", &Value::Object(Default::default()))
            .await?;
        let text = |key: &str| {
            answer
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(BotIdentity {
            team_id: text("team_id").unwrap_or_default(),
            enterprise_id: text("enterprise_id"),
            is_enterprise_install: answer
                .get("is_enterprise_install")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// The email on a person's Slack profile (`users.info`; needs `users:read.email`).
    pub async fn user_email(&self, user: &str) -> anyhow::Result<Option<String>> {
        let session = self.client.open_session(&self.token);
        let params = vec![("user", Some(user))];
        let send = session
            .http_session_api
            .http_get::<Value, _, _>("users.info", &params, None);
        let answer = self.call("users.info", "", send).await?;
        Ok(answer
            .pointer("/user/profile/email")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .map(str::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slack_morphism::errors::{SlackClientApiError, SlackClientHttpError};

    #[test]
    fn a_response_url_must_be_slacks_or_the_configured_apis() {
        let metrics = Arc::new(Metrics::default());
        let api = SlackApi::new(
            "http://127.0.0.1:4567/api/",
            "xoxb-test",
            Duration::from_secs(1),
            metrics,
        )
        .expect("client");
        assert!(api.response_url_allowed("https://hooks.slack.com/commands/T1/2/x"));
        assert!(api.response_url_allowed("http://127.0.0.1:4567/hooks/x"));
        for bad in [
            "http://hooks.slack.com/commands/T1/2/x",
            "https://hooks.slack.com.evil.example/x",
            "https://hooks.slack.com:8443/x",
            "https://evil.example/?https://hooks.slack.com/",
            "http://127.0.0.1:4568/hooks/x",
            "http://169.254.169.254/latest/meta-data/",
            "not a url",
            "",
        ] {
            assert!(!api.response_url_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn errors_that_retrying_cannot_fix_are_permanent() {
        for code in [
            "channel_not_found",
            "invalid_blocks",
            "msg_too_long",
            "account_inactive",
        ] {
            let e = classify(
                "chat.postMessage",
                SlackClientError::ApiError(SlackClientApiError::new(code.into())),
            );
            assert!(e.is_permanent(), "{code}");
        }
        let e = classify(
            "chat.postMessage",
            SlackClientError::ApiError(SlackClientApiError::new("fatal_error".into())),
        );
        assert!(!e.is_permanent());
        let e = classify(
            "chat.update",
            SlackClientError::HttpError(SlackClientHttpError::new(
                hyper::http::StatusCode::BAD_GATEWAY,
            )),
        );
        assert!(!e.is_permanent());
        let e = classify(
            "chat.update",
            SlackClientError::HttpError(SlackClientHttpError::new(
                hyper::http::StatusCode::NOT_FOUND,
            )),
        );
        assert!(e.is_permanent());
    }
}
