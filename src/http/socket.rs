//! Slack's Socket Mode: with `SLACK_APP_TOKEN` set, jitbot opens WebSocket connections to Slack
//! (slack-morphism's listener: `apps.connections.open`, `hello`, acks, `disconnect` and
//! reconnection, pings) and takes commands, clicks, form submissions and Home tab events over
//! them, so it needs no public URL. Each envelope goes to the very handler the HTTP route uses;
//! the handler's answer becomes the envelope's ack (the command's ephemeral answer, a form's
//! field errors).
//!
//! The connection is opened with the app-level token, so what arrives on it comes from Slack for
//! this app; the workspace check of the HTTP edge still applies. slack-morphism's event types
//! carry no `enterprise_id`, so on an Enterprise Grid org-wide install (`SLACK_TEAM_ID=E…`)
//! Socket Mode payloads cannot be placed and are refused: serve such an install over HTTP.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use super::AppState;
use crate::config::{Secret, UserError};
use crate::slack::payload::SlashCommand;

type Connector = SlackClientHyperHttpsConnector;
type Client = Arc<SlackClient<Connector>>;
type States = SlackClientEventsUserState;

/// Connections kept open at once (Slack spreads envelopes over them; a slow one holds only its
/// own).
const CONNECTIONS: u32 = 2;
/// Wait before trying again when Slack cannot be reached (slack-morphism's default is 30 s).
const RECONNECT_AFTER_SECS: u64 = 5;
/// Deadline of the start-up check of the app token.
const CHECK_DEADLINE: Duration = Duration::from_secs(5);
/// Largest handler answer read back into an ack.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Socket Mode, started: dropping it closes the connections.
pub struct SocketMode {
    listener: SlackClientSocketModeListener<Connector>,
}

impl SocketMode {
    pub async fn shutdown(&self) {
        self.listener.shutdown().await;
    }
}

fn client(api_url: &str) -> anyhow::Result<Client> {
    let connector =
        crate::slack::client::connector(api_url).context("building the Socket Mode client")?;
    Ok(Arc::new(SlackClient::new(connector)))
}

/// Asks Slack for a connection once, so a wrong app token stops `serve` with one line rather
/// than being retried unseen; Slack not answering is logged and left to the reconnections.
pub async fn check_app_token(api_url: &str, token: &Secret) -> anyhow::Result<()> {
    let client = client(api_url)?;
    let token = SlackApiToken::new(SlackApiTokenValue(token.expose().to_string()));
    let session = client.open_session(&token);
    let request = SlackApiAppsConnectionOpenRequest::new();
    let asked = session.apps_connections_open(&request);
    match tokio::time::timeout(CHECK_DEADLINE, asked).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(SlackClientError::ApiError(e))) => Err(UserError(format!(
            "Slack refused SLACK_APP_TOKEN for Socket Mode (apps.connections.open: {}): use the app-level token (xapp-…) with the connections:write scope, and turn Socket Mode on in the app's settings",
            e.code
        ))
        .into()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot reach Slack for Socket Mode yet; retrying in the background");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("Slack did not answer apps.connections.open in time; retrying in the background");
            Ok(())
        }
    }
}

/// Opens the connections and serves envelopes until shut down.
pub async fn start(state: AppState, api_url: &str, token: &Secret) -> anyhow::Result<SocketMode> {
    let environment = Arc::new(
        SlackClientEventsListenerEnvironment::new(client(api_url)?)
            .with_error_handler(on_error)
            .with_user_state(state),
    );
    let callbacks = SlackSocketModeListenerCallbacks::new()
        .with_command_events(on_command)
        .with_interaction_events(on_interaction)
        .with_push_events(on_push_event);
    let config = SlackClientSocketModeConfig::new()
        .with_max_connections_count(CONNECTIONS)
        .with_initial_backoff_in_seconds(1)
        .with_reconnect_timeout_in_seconds(RECONNECT_AFTER_SECS);
    let listener = SlackClientSocketModeListener::new(&config, environment, callbacks);
    let token = SlackApiToken::new(SlackApiTokenValue(token.expose().to_string()));
    listener
        .listen_for(&token)
        .await
        .map_err(|e| anyhow::anyhow!("Socket Mode: {e}"))?;
    listener.start().await;
    tracing::info!(
        connections = CONNECTIONS,
        "taking Slack's payloads over Socket Mode too"
    );
    Ok(SocketMode { listener })
}

async fn app_state(states: &States) -> Option<AppState> {
    states.read().await.get_user_state::<AppState>().cloned()
}

/// The status and JSON body (if any) of a handler's answer.
async fn read_answer(answer: Response) -> (StatusCode, Option<Value>) {
    let status = answer.status();
    let body = axum::body::to_bytes(answer.into_body(), MAX_ANSWER_BYTES)
        .await
        .unwrap_or_default();
    let json = serde_json::from_slice::<Value>(&body).ok().or_else(|| {
        // A refusal's plain-text body, shown to the person as the HTTP edge's status would be.
        let text = String::from_utf8_lossy(&body).trim().to_string();
        (!text.is_empty()).then(|| json!({"response_type": "ephemeral", "text": text}))
    });
    (status, json)
}

fn failure(what: &str) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(std::io::Error::other(what.to_string()))
}

/// A slash command: answered in the ack, as over HTTP.
async fn on_command(
    event: SlackCommandEvent,
    _client: Client,
    states: States,
) -> UserCallbackResult<SlackCommandEventResponse> {
    let state = app_state(&states)
        .await
        .ok_or_else(|| failure("Socket Mode has no app state"))?;
    let fields = serde_json::to_value(&event)?;
    let answer = match serde_json::from_value::<SlashCommand>(fields) {
        Ok(cmd) => super::handle_command(&state, cmd).await,
        Err(_) => super::ephemeral(super::UNREADABLE_COMMAND),
    };
    let (_, body) = read_answer(answer).await;
    // A command that opened a form answers nothing: an empty payload shows nothing.
    let body = body.unwrap_or_else(|| json!({}));
    Ok(serde_json::from_value(body)?)
}

/// A click or a form submission: the form's field errors go back in the ack; a failure is not
/// acked, so Slack shows the person that it did not work (as it does for an HTTP 5xx).
async fn on_interaction(
    event: SlackInteractionEvent,
    _client: Client,
    states: States,
) -> UserCallbackResult<SlackInteractionResponse> {
    let state = app_state(&states)
        .await
        .ok_or_else(|| failure("Socket Mode has no app state"))?;
    let payload = serde_json::to_string(&event)?;
    let (status, body) = read_answer(super::handle_interaction(&state, &payload).await).await;
    if !status.is_success() {
        return Err(failure(&format!("the interaction was answered {status}")));
    }
    match body {
        Some(body) if body.get("response_action").is_some() => Ok(
            SlackInteractionResponse::ViewSubmission(serde_json::from_value(body)?),
        ),
        _ => Ok(SlackInteractionResponse::Empty),
    }
}

/// An Events API event (the Home tab opened).
async fn on_push_event(
    event: SlackPushEventCallback,
    _client: Client,
    states: States,
) -> UserCallbackResult<()> {
    let state = app_state(&states)
        .await
        .ok_or_else(|| failure("Socket Mode has no app state"))?;
    let mut envelope = serde_json::to_value(&event)?;
    if let Value::Object(map) = &mut envelope {
        map.insert("type".into(), json!("event_callback"));
    }
    let (status, _) =
        read_answer(super::handle_event(&state, &serde_json::to_vec(&envelope)?).await).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(failure(&format!("the event was answered {status}")))
    }
}

/// Whatever the listener could not hand to a callback, or a callback that failed: logged; the
/// envelope is left unacknowledged (Slack retries it, or tells the person it failed).
fn on_error(
    error: Box<dyn std::error::Error + Send + Sync>,
    _client: Client,
    _states: States,
) -> HttpStatusCode {
    // A protocol error carries the whole envelope (with its `response_url`): not logged.
    match error.downcast_ref::<SlackClientError>() {
        Some(SlackClientError::ProtocolError(_)) => {
            tracing::warn!("Slack sent a Socket Mode envelope jitbot could not read")
        }
        _ => tracing::warn!(error = %error, "a Socket Mode envelope was not handled"),
    }
    HttpStatusCode::INTERNAL_SERVER_ERROR
}
