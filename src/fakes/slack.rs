//! A fake Slack Web API that records every call, enforces Block Kit's limits as Slack does, and
//! injects faults on demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The workspace the fake Slack is, unless a test says otherwise.
pub const TEAM_ID: &str = "T0TEST";

/// One Web API call as the fake received it.
#[derive(Clone, Debug)]
pub struct SlackCall {
    pub method: String,
    pub body: Value,
    /// When it arrived.
    pub at: std::time::Instant,
    /// What the fake answered: `ok`, an error code, `429`, `hang`.
    pub answer: String,
}

/// A fault the fake Slack injects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlackFault {
    /// `{"ok": false, "error": code}` with HTTP 200.
    Error(String),
    /// HTTP 429 with `Retry-After` (seconds).
    RateLimited(u64),
    /// HTTP status with an empty body (a 5xx from a proxy, say).
    Status(u16),
    /// No answer at all (the connection stays open, as with a hung peer).
    Hang,
    /// `{"ok": true, "ts": …}` and nothing else: what a strict client type would refuse.
    Lean,
}

struct FaultRule {
    method: String,
    channel: Option<String>,
    fault: SlackFault,
    remaining: u32,
}

impl SlackCall {
    pub fn str(&self, field: &str) -> &str {
        self.body.get(field).and_then(Value::as_str).unwrap_or("")
    }
}

#[derive(Default)]
struct SlackState {
    /// Calls answered `ok`.
    calls: Mutex<Vec<SlackCall>>,
    /// Every call, whatever the answer.
    attempts: Mutex<Vec<SlackCall>>,
    next_ts: Mutex<u64>,
    faults: Mutex<Vec<FaultRule>>,
    /// user ID → profile email, for `users.info`.
    emails: Mutex<HashMap<String, String>>,
    /// Every answer waits this long first (a real Slack takes tens of milliseconds).
    delay: Mutex<Duration>,
    /// The workspace (and Enterprise Grid org) `auth.test` names.
    team: Mutex<(String, Option<String>)>,
    /// Posts so far to each `response_url`.
    responses_per_url: Mutex<HashMap<String, u32>>,
    /// User groups, for `usergroups.users.list`.
    people: Mutex<super::people::People>,
    /// Socket Mode: the URL `apps.connections.open` hands out and the app token it takes.
    socket: Mutex<Option<(String, String)>>,
    changed: Notify,
}

/// A fake Slack Web API. Its base URL (`…/api/`) goes in `SLACK_API_URL`.
pub struct FakeSlack {
    pub base_url: String,
    state: Arc<SlackState>,
    /// Stops the fake's own thread.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
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
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    if method == "apps.connections.open" {
        return super::socket::connections_open(&state.socket, &bearer);
    }
    if !bearer.starts_with("xox") {
        return axum::Json(json!({"ok": false, "error": "not_authed"})).into_response();
    }
    let body = body_json(&headers, &uri, &body);
    let arrived = std::time::Instant::now();
    let delay = *state.delay.lock().unwrap_or_else(|e| e.into_inner());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let channel = body
        .get("channel")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let fault = {
        let mut faults = state.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults
            .iter_mut()
            .find(|r| {
                r.remaining > 0
                    && r.method == method
                    && r.channel.as_ref().is_none_or(|c| *c == channel)
            })
            .map(|r| {
                r.remaining -= 1;
                r.fault.clone()
            })
    };
    let posting = matches!(
        method.as_str(),
        "chat.postMessage" | "chat.update" | "chat.postEphemeral"
    );
    let refusal = match &fault {
        Some(SlackFault::Error(code)) => Some(code.clone()),
        _ if posting && channel.is_empty() => Some("channel_not_found".into()),
        _ if posting
            && body.get("text").is_none_or(Value::is_null)
            && body.get("blocks").is_none_or(Value::is_null) =>
        {
            Some("no_text".into())
        }
        _ if posting => super::blockkit::block_kit_error(&body).map(str::to_string),
        _ if method == "views.open" => super::views::view_error(&body).map(str::to_string),
        _ if method == "views.publish" => super::views::publish_error(&body).map(str::to_string),
        _ => {
            let emails = state
                .emails
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let people = state.people.lock().unwrap_or_else(|e| e.into_inner());
            people.refusal(&emails, &method, &body)
        }
    };
    let record = |answer: &str| {
        state
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(SlackCall {
                method: method.clone(),
                body: body.clone(),
                at: arrived,
                answer: answer.to_string(),
            });
        state.changed.notify_waiters();
    };
    match &fault {
        Some(SlackFault::Hang) => {
            record("hang");
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Some(SlackFault::RateLimited(secs)) => {
            record("429");
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                axum::Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response();
        }
        Some(SlackFault::Status(code)) => {
            record(&code.to_string());
            return StatusCode::from_u16(*code)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                .into_response();
        }
        _ => {}
    }
    if let Some(code) = refusal {
        record(&code);
        return axum::Json(json!({"ok": false, "error": code})).into_response();
    }
    record("ok");
    let ts = {
        let mut next = state.next_ts.lock().unwrap_or_else(|e| e.into_inner());
        *next += 1;
        format!("1700000000.{:06}", *next)
    };
    let text = body.get("text").cloned().unwrap_or(Value::Null);
    let answer = match method.as_str() {
        "chat.postMessage" if fault == Some(SlackFault::Lean) => json!({"ok": true, "ts": ts}),
        "chat.postMessage" => {
            json!({"ok": true, "channel": channel, "ts": ts, "message": {"ts": ts, "text": text}})
        }
        "chat.update" => {
            let ts = body.get("ts").cloned().unwrap_or(Value::Null);
            json!({"ok": true, "channel": channel, "ts": ts, "message": {"text": text}})
        }
        "chat.postEphemeral" => json!({"ok": true, "message_ts": ts}),
        "auth.test" => {
            let (team, enterprise) = state.team.lock().unwrap_or_else(|e| e.into_inner()).clone();
            json!({"ok": true, "team_id": team, "enterprise_id": enterprise, "user_id": "U0JITBOT",
                   "bot_id": "B0JITBOT", "url": "https://fake.slack.com/"})
        }
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
        _ => {
            let emails = state
                .emails
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let people = state.people.lock().unwrap_or_else(|e| e.into_inner());
            people
                .answer(&emails, &method, &body)
                .unwrap_or_else(|| json!({"ok": true}))
        }
    };
    state
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(SlackCall {
            method,
            body,
            at: arrived,
            answer: "ok".into(),
        });
    state.changed.notify_waiters();
    axum::Json(answer).into_response()
}

/// How many times Slack takes a message on one `response_url` (it allows five within 30 min).
pub const RESPONSE_URL_USES: u32 = 5;

/// A message to a `response_url` (`…/hooks/<anything>`), as Slack takes it: JSON, at most
/// [`RESPONSE_URL_USES`] per URL, text within Slack's limit. Recorded as method `response_url`.
async fn response_url(
    State(state): State<Arc<SlackState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = std::time::Instant::now();
    let body = body_json(&headers, &uri, &body);
    let path = uri.path().to_string();
    let uses = {
        let mut per_url = state
            .responses_per_url
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = per_url.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let refusal = if uses > RESPONSE_URL_USES {
        Some((StatusCode::NOT_FOUND, "used_url"))
    } else if body
        .get("text")
        .and_then(Value::as_str)
        .is_none_or(|t| t.is_empty() || t.chars().count() > 40_000)
    {
        Some((StatusCode::BAD_REQUEST, "invalid_payload"))
    } else {
        None
    };
    let mut body = body;
    if let Value::Object(map) = &mut body {
        map.insert("url".into(), Value::String(path));
    }
    let call = SlackCall {
        method: "response_url".into(),
        body,
        at: arrived,
        answer: refusal.map_or("ok", |(_, code)| code).to_string(),
    };
    state
        .attempts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(call.clone());
    if refusal.is_none() {
        state
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }
    state.changed.notify_waiters();
    match refusal {
        Some((status, code)) => (status, code).into_response(),
        None => (StatusCode::OK, "ok").into_response(),
    }
}

impl FakeSlack {
    pub async fn start() -> anyhow::Result<FakeSlack> {
        let state = Arc::new(SlackState::default());
        *state.team.lock().unwrap_or_else(|e| e.into_inner()) = (TEAM_ID.to_string(), None);
        let app = Router::new()
            .route("/api/{method}", any(slack_method))
            .route("/hooks/{*rest}", axum::routing::post(response_url))
            .with_state(state.clone());
        let (addr, stop) = super::serve_apart("fake-slack", app)?;
        Ok(FakeSlack {
            base_url: format!("http://{addr}/api/"),
            state,
            stop: Some(stop),
        })
    }

    /// A `response_url` on this fake, as Slack would put in a command or a click.
    pub fn response_url(&self, name: &str) -> String {
        format!("{}hooks/{name}", self.base_url.trim_end_matches("api/"))
    }

    /// The workspace (and Enterprise Grid org) `auth.test` answers with.
    pub fn set_team(&self, team: &str, enterprise: Option<&str>) {
        *self.state.team.lock().unwrap_or_else(|e| e.into_inner()) =
            (team.to_string(), enterprise.map(str::to_string));
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

    /// The email `users.info` reports for `user`, and by which `users.lookupByEmail` finds them.
    pub fn set_email(&self, user: &str, email: &str) {
        self.state
            .emails
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.to_string(), email.to_string());
    }

    /// The members `usergroups.users.list` reports for user group `id` (which then exists).
    pub fn set_usergroup(&self, id: &str, members: &[&str]) {
        self.state
            .people
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .usergroups
            .insert(
                id.to_string(),
                members.iter().map(|m| m.to_string()).collect(),
            );
    }

    /// Socket Mode: `apps.connections.open` with `app_token` answers `url` (a
    /// [`super::FakeSocketMode`]'s); any other app token is `invalid_auth`.
    pub fn set_socket_mode(&self, url: &str, app_token: &str) {
        *self.state.socket.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((url.to_string(), app_token.to_string()));
    }

    /// A free workspace: every `usergroups.users.list` answers `plan_upgrade_required`.
    pub fn without_usergroups(&self) {
        self.state
            .people
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .no_usergroups = true;
    }

    /// Every call received, whatever the answer, in order.
    pub fn attempts(&self) -> Vec<SlackCall> {
        self.state
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Answers the next `n` calls to `method` with `fatal_error` (a transient error).
    pub fn fail_next(&self, method: &str, n: u32) {
        self.fault(method, None, SlackFault::Error("fatal_error".into()), n);
    }

    /// Injects `fault` into the next `n` calls to `method` (in `channel`, when given).
    pub fn fault(&self, method: &str, channel: Option<&str>, fault: SlackFault, n: u32) {
        self.state
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(FaultRule {
                method: method.to_string(),
                channel: channel.map(str::to_string),
                fault,
                remaining: n,
            });
    }

    /// Forgets every injected fault.
    pub fn clear_faults(&self) {
        self.state
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Every answer takes this long (a real Slack answers in tens of milliseconds).
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap_or_else(|e| e.into_inner()) = delay;
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
