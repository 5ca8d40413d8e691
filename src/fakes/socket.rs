//! A fake of Slack's Socket Mode, on 127.0.0.1: the fake Slack's `apps.connections.open` hands
//! out this server's `ws://` URL; each connection gets a `hello`, then the envelopes a test sends
//! (`slash_commands`, `interactive`, `events_api`), and its acks are recorded by envelope id. A
//! test can send `disconnect` (Slack does so every few hours) and watch the client come back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct SocketState {
    /// Live connections: id → where to send frames.
    live: Mutex<Vec<(u64, mpsc::UnboundedSender<Message>)>>,
    /// Connections accepted so far.
    opened: AtomicU64,
    next_envelope: AtomicU64,
    /// Envelope id → the ack the client sent.
    acks: Mutex<HashMap<String, Value>>,
    changed: Notify,
}

pub struct FakeSocketMode {
    /// The `ws://` URL `apps.connections.open` answers with.
    pub url: String,
    state: Arc<SocketState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeSocketMode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn connection(state: Arc<SocketState>, stream: tokio::net::TcpStream) {
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let id = state.opened.fetch_add(1, Ordering::SeqCst) + 1;
    let (mut writer, mut reader) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    // What Slack's hello carries (slack-morphism refuses a hello without these fields).
    let hello = json!({"type": "hello", "num_connections": 1,
                       "connection_info": {"app_id": "A0JITBOT"},
                       "debug_info": {"host": "fake-socket-mode", "approximate_connection_time": 3600}});
    if writer
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    state
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, tx));
    state.changed.notify_waiters();
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(Message::Close(c)) => {
                    let _ = writer.send(Message::Close(c)).await;
                    break;
                }
                Some(frame) => {
                    if writer.send(frame).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            incoming = reader.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(ack) = serde_json::from_str::<Value>(text.as_str())
                        && let Some(envelope) = ack.get("envelope_id").and_then(Value::as_str)
                    {
                        state
                            .acks
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(envelope.to_string(), ack.clone());
                        state.changed.notify_waiters();
                    }
                }
                Some(Ok(Message::Ping(body))) => {
                    if writer.send(Message::Pong(body)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    state
        .live
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(live, _)| *live != id);
    state.changed.notify_waiters();
}

impl FakeSocketMode {
    pub async fn start() -> anyhow::Result<FakeSocketMode> {
        let state = Arc::new(SocketState::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let served = state.clone();
        // Its own thread and runtime, like the fake Slack.
        std::thread::Builder::new()
            .name("fake-socket-mode".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            accepted = listener.accept() => {
                                if let Ok((stream, _)) = accepted {
                                    tokio::spawn(connection(served.clone(), stream));
                                }
                            }
                            _ = &mut stopped => break,
                        }
                    }
                });
            })?;
        Ok(FakeSocketMode {
            url: format!("ws://{addr}/link"),
            state,
            stop: Some(stop),
        })
    }

    /// Connections accepted so far (reconnections included).
    pub fn opened(&self) -> u64 {
        self.state.opened.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn live(&self) -> usize {
        self.state
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Waits until at least `n` connections are open.
    pub async fn wait_live(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            if self.live() >= n {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                anyhow::bail!(
                    "fake Socket Mode: {} connection(s) open after {timeout:?}, wanted {n}",
                    self.live()
                );
            }
        }
    }

    /// Sends an envelope of `kind` with `payload` on the newest open connection; its id.
    pub fn send(&self, kind: &str, payload: Value) -> anyhow::Result<String> {
        let envelope_id = format!(
            "env-{}",
            self.state.next_envelope.fetch_add(1, Ordering::SeqCst) + 1
        );
        let frame = json!({"envelope_id": envelope_id, "type": kind, "payload": payload,
                           "accepts_response_payload": kind != "events_api", "retry_attempt": 0,
                           "retry_reason": ""});
        let live = self.state.live.lock().unwrap_or_else(|e| e.into_inner());
        let Some((_, tx)) = live.last() else {
            anyhow::bail!("fake Socket Mode: no open connection to send {kind} on");
        };
        tx.send(Message::Text(frame.to_string().into()))
            .map_err(|_| anyhow::anyhow!("fake Socket Mode: the connection closed"))?;
        Ok(envelope_id)
    }

    /// The ack of envelope `id`, waiting up to `timeout` for it.
    pub async fn ack(&self, id: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            if let Some(ack) = self
                .state
                .acks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
            {
                return Ok(ack.clone());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                anyhow::bail!("fake Socket Mode: no ack for {id} within {timeout:?}");
            }
        }
    }

    /// Sends an envelope and waits for its ack.
    pub async fn exchange(&self, kind: &str, payload: Value) -> anyhow::Result<Value> {
        let id = self.send(kind, payload)?;
        self.ack(&id, Duration::from_secs(10)).await
    }

    /// What Slack does before it rotates a connection: `disconnect`, then the socket closes.
    pub fn disconnect_all(&self) {
        let frame = json!({"type": "disconnect", "reason": "refresh_requested",
                           "debug_info": {"host": "fake-socket-mode"}});
        let live = self.state.live.lock().unwrap_or_else(|e| e.into_inner());
        for (_, tx) in live.iter() {
            let _ = tx.send(Message::Text(frame.to_string().into()));
            let _ = tx.send(Message::Close(None));
        }
    }
}

/// `apps.connections.open`, as Slack answers it: only an app-level token (`xapp-…`), and only
/// the one the test registered; the answer is a fresh WebSocket URL each time.
pub(super) fn connections_open(socket: &Mutex<Option<(String, String)>>, bearer: &str) -> Response {
    let answer = match &*socket.lock().unwrap_or_else(|e| e.into_inner()) {
        _ if !bearer.starts_with("xapp-") => {
            json!({"ok": false, "error": "not_allowed_token_type"})
        }
        Some((url, token)) if token == bearer => {
            json!({"ok": true, "url": format!("{url}?ticket={}", rand::random::<u32>())})
        }
        _ => json!({"ok": false, "error": "invalid_auth"}),
    };
    axum::Json(answer).into_response()
}
