//! Recording stand-ins for what jitbot talks to, served on 127.0.0.1: the Slack Web API and a
//! webhook receiver that checks `X-Jit-Signature`. `jitbot demo` and the tests use them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::providers::webhook;
use crate::slack::verify::sign;

/// One Web API call as the fake received it.
#[derive(Clone, Debug)]
pub struct SlackCall {
    pub method: String,
    pub body: Value,
}

impl SlackCall {
    pub fn str(&self, field: &str) -> &str {
        self.body.get(field).and_then(Value::as_str).unwrap_or("")
    }
}

#[derive(Default)]
struct SlackState {
    calls: Mutex<Vec<SlackCall>>,
    next_ts: Mutex<u64>,
    /// method → how many more calls to answer with `ok: false`.
    failures: Mutex<HashMap<String, u32>>,
    /// user ID → profile email, for `users.info`.
    emails: Mutex<HashMap<String, String>>,
    changed: Notify,
}

/// A fake Slack Web API. Its base URL (`…/api/`) goes in `SLACK_API_URL`.
pub struct FakeSlack {
    pub base_url: String,
    state: Arc<SlackState>,
    task: JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn body_json(headers: &HeaderMap, uri: &Uri, body: &[u8]) -> Value {
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if is_json && let Ok(v) = serde_json::from_slice::<Value>(body) {
        return v;
    }
    let mut map = serde_json::Map::new();
    let query = uri.query().unwrap_or("").as_bytes();
    for part in [query, body] {
        if let Ok(pairs) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(part) {
            for (k, v) in pairs {
                map.insert(k, Value::String(v));
            }
        }
    }
    Value::Object(map)
}

async fn slack_method(
    State(state): State<Arc<SlackState>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let authed = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer xox"));
    if !authed {
        return axum::Json(json!({"ok": false, "error": "not_authed"})).into_response();
    }
    let body = body_json(&headers, &uri, &body);
    {
        let mut failures = state.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = failures.get_mut(&method)
            && *n > 0
        {
            *n -= 1;
            return axum::Json(json!({"ok": false, "error": "fatal_error"})).into_response();
        }
    }
    let ts = {
        let mut next = state.next_ts.lock().unwrap_or_else(|e| e.into_inner());
        *next += 1;
        format!("1700000000.{:06}", *next)
    };
    let channel = body
        .get("channel")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let text = body.get("text").cloned().unwrap_or(Value::Null);
    let answer = match method.as_str() {
        "chat.postMessage" => {
            json!({"ok": true, "channel": channel, "ts": ts, "message": {"ts": ts, "text": text}})
        }
        "chat.update" => {
            let ts = body.get("ts").cloned().unwrap_or(Value::Null);
            json!({"ok": true, "channel": channel, "ts": ts, "message": {"text": text}})
        }
        "chat.postEphemeral" => json!({"ok": true, "message_ts": ts}),
        "users.info" => {
            let user = body
                .get("user")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let email = state
                .emails
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&user)
                .cloned();
            let profile = match email {
                Some(email) => json!({"email": email}),
                None => json!({}),
            };
            json!({"ok": true, "user": {"id": user, "profile": profile}})
        }
        "conversations.open" => {
            let users = match body.get("users") {
                Some(Value::Array(list)) => list
                    .first()
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                Some(Value::String(s)) => s.split(',').next().unwrap_or("").to_string(),
                _ => String::new(),
            };
            json!({"ok": true, "channel": {"id": format!("D{users}")}})
        }
        _ => json!({"ok": true}),
    };
    state
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(SlackCall { method, body });
    state.changed.notify_waiters();
    axum::Json(answer).into_response()
}

impl FakeSlack {
    pub async fn start() -> anyhow::Result<FakeSlack> {
        let state = Arc::new(SlackState::default());
        let app = Router::new()
            .route("/api/{method}", any(slack_method))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeSlack {
            base_url: format!("http://{addr}/api/"),
            state,
            task,
        })
    }

    pub fn calls(&self) -> Vec<SlackCall> {
        self.state
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn calls_to(&self, method: &str) -> Vec<SlackCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// The email `users.info` reports for `user`.
    pub fn set_email(&self, user: &str, email: &str) {
        self.state
            .emails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.to_string(), email.to_string());
    }

    /// Answers the next `n` calls to `method` with an error.
    pub fn fail_next(&self, method: &str, n: u32) {
        self.state
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(method.to_string(), n);
    }

    /// Waits until `done` holds for the calls so far, or fails after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[SlackCall]) -> bool,
    ) -> anyhow::Result<Vec<SlackCall>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            let calls = self.calls();
            if done(&calls) {
                return Ok(calls);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let calls = self.calls();
                if done(&calls) {
                    return Ok(calls);
                }
                anyhow::bail!(
                    "fake Slack: waited {timeout:?} for {what}; got {:#?}",
                    calls
                );
            }
        }
    }
}

// ---- webhook receiver -------------------------------------------------------------------------

/// One event a webhook receiver accepted (signature checked).
#[derive(Clone, Debug)]
pub struct WebhookEvent {
    pub body: Value,
    pub raw: Vec<u8>,
    pub signature: String,
}

#[derive(Default)]
struct HookState {
    secret: String,
    events: Mutex<Vec<WebhookEvent>>,
    /// Answer this many more requests with HTTP 500 before accepting.
    failures: Mutex<u32>,
    changed: Notify,
}

/// A webhook receiver that verifies signatures the way the interface tells receivers to.
pub struct WebhookReceiver {
    pub url: String,
    state: Arc<HookState>,
    task: JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(state): State<Arc<HookState>>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers
        .get(webhook::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let expected = webhook::signature(state.secret.as_bytes(), &body);
    let matches: bool =
        subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), signature.as_bytes()).into();
    if !matches {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    {
        let mut failures = state.failures.lock().unwrap_or_else(|e| e.into_inner());
        if *failures > 0 {
            *failures -= 1;
            return (StatusCode::INTERNAL_SERVER_ERROR, "try later").into_response();
        }
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    state
        .events
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(WebhookEvent {
            body: parsed,
            raw: body.to_vec(),
            signature,
        });
    state.changed.notify_waiters();
    StatusCode::NO_CONTENT.into_response()
}

impl WebhookReceiver {
    pub async fn start(secret: &str) -> anyhow::Result<WebhookReceiver> {
        let state = Arc::new(HookState {
            secret: secret.to_string(),
            ..Default::default()
        });
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(WebhookReceiver {
            url: format!("http://{addr}/hook"),
            state,
            task,
        })
    }

    pub fn events(&self) -> Vec<WebhookEvent> {
        self.state
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Events of one kind (`grant` or `revoke`).
    pub fn events_of(&self, kind: &str) -> Vec<WebhookEvent> {
        self.events()
            .into_iter()
            .filter(|e| e.body.get("event").and_then(Value::as_str) == Some(kind))
            .collect()
    }

    /// Answers the next `n` deliveries with HTTP 500.
    pub fn fail_next(&self, n: u32) {
        *self
            .state
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = n;
    }

    pub async fn wait_for(
        &self,
        kind: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<WebhookEvent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            let events = self.events_of(kind);
            if events.len() >= count {
                return Ok(events);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                anyhow::bail!(
                    "webhook receiver: waited {timeout:?} for {count} {kind} event(s); got {}",
                    self.events().len()
                );
            }
        }
    }
}

// ---- a signed sender, standing in for Slack's side of the HTTP edge -------------------------------

/// Sends slash commands and clicks to a jitbot the way Slack does, signed with its secret.
#[derive(Clone)]
pub struct SlackSender {
    pub base: String,
    secret: String,
    http: reqwest::Client,
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
        serde_urlencoded::to_string([
            ("token", "unused"),
            ("team_id", "T0TEST"),
            ("channel_id", "C0GENERAL"),
            ("user_id", user),
            ("command", "/jit"),
            ("text", text),
            (
                "response_url",
                "https://hooks.slack.com/commands/T0TEST/1/x",
            ),
        ])
        .unwrap_or_default()
    }

    /// `/jit <text>` from `user`.
    pub async fn command(&self, user: &str, text: &str) -> anyhow::Result<Answer> {
        self.post("/slack/commands", Self::command_body(user, text))
            .await
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
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user, "name": user.to_lowercase()},
            "channel": {"id": "C0REVIEW"},
            "response_url": "https://hooks.slack.com/actions/T0TEST/1/x",
            "actions": [{"action_id": action, "value": value, "type": "button"}],
        });
        serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap_or_default()
    }

    /// A click on a card button (`jit_approve` / `jit_deny`) by `user`.
    pub async fn click(&self, user: &str, action: &str, value: &str) -> anyhow::Result<Answer> {
        self.post("/slack/interactions", Self::click_body(user, action, value))
            .await
    }
}
