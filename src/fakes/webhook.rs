//! A webhook receiver that verifies `X-Jit-Signature` the way the interface tells receivers to,
//! records what it accepts, and can be slow, hang, or answer with any status.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::providers::webhook;

/// One event a webhook receiver accepted (signature checked).
#[derive(Clone, Debug)]
pub struct WebhookEvent {
    pub body: Value,
    pub raw: Vec<u8>,
    pub signature: String,
    /// When it was accepted (after any delay).
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// How the receiver answers the next deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookFault {
    /// This HTTP status (a 3xx carries `Location: /elsewhere`, which answers 200).
    Status(u16),
    /// No answer at all.
    Hang,
}

#[derive(Default)]
struct HookState {
    secret: String,
    events: Mutex<Vec<WebhookEvent>>,
    /// Accepted events per `event` kind, so waiting costs no copy of them all.
    counts: Mutex<std::collections::HashMap<String, usize>>,
    /// Every delivery that arrived with a good signature, accepted or not.
    deliveries: Mutex<u64>,
    /// Answer this many more requests with a fault before accepting.
    faults: Mutex<(u32, Option<HookFault>)>,
    /// Every delivery waits this long before it is answered (a provider's own latency).
    delay: Mutex<Duration>,
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
    *state.deliveries.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    state.changed.notify_waiters();
    let delay = *state.delay.lock().unwrap_or_else(|e| e.into_inner());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let fault = {
        let mut faults = state.faults.lock().unwrap_or_else(|e| e.into_inner());
        if faults.0 > 0 {
            faults.0 -= 1;
            Some(faults.1.unwrap_or(HookFault::Status(500)))
        } else {
            None
        }
    };
    match fault {
        Some(HookFault::Hang) => {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Some(HookFault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, [("location", "/elsewhere")], "not here").into_response();
        }
        None => {}
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let kind = parsed
        .get("event")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    state
        .events
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(WebhookEvent {
            body: parsed,
            raw: body.to_vec(),
            signature,
            received_at: chrono::Utc::now(),
        });
    *state
        .counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(kind)
        .or_default() += 1;
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
            .route("/elsewhere", any(|| async { "a login page, say" }))
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
        self.fault_next(n, HookFault::Status(500));
    }

    /// Answers the next `n` deliveries with `fault`.
    pub fn fault_next(&self, n: u32, fault: HookFault) {
        *self.state.faults.lock().unwrap_or_else(|e| e.into_inner()) = (n, Some(fault));
    }

    /// Every delivery waits this long before it is answered.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap_or_else(|e| e.into_inner()) = delay;
    }

    /// Deliveries with a good signature so far, whatever the answer.
    pub fn deliveries(&self) -> u64 {
        *self
            .state
            .deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until at least `count` deliveries arrived.
    pub async fn wait_deliveries(&self, count: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            if self.deliveries() >= count {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                anyhow::bail!(
                    "webhook receiver: waited {timeout:?} for {count} deliveries; got {}",
                    self.deliveries()
                );
            }
        }
    }

    /// How many events of one kind were accepted.
    pub fn count_of(&self, kind: &str) -> usize {
        self.state
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(kind)
            .copied()
            .unwrap_or(0)
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
            if self.count_of(kind) >= count {
                return Ok(self.events_of(kind));
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
