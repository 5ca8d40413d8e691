//! The HTTP edge: Slack's two routes, health, metrics, and the machines' API ([`crate::api`]). A Slack request is verified before
//! anything in it is read; the answer never waits on a provider or on Slack. [`serve`] is the
//! accept loop with deadlines on slow clients.

pub mod serve;
pub mod socket;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

use crate::config::Secret;
use crate::metrics::Metrics;
use crate::service::Service;
use crate::slack::payload::{self, Interaction, PayloadError, SlashCommand};
use crate::slack::{Admission, SlackApi, Workspace, verify};

/// Largest body accepted from Slack; real payloads are a few kilobytes.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// `/healthz` answers 503 when the store has not answered within this: short enough that the
/// answer comes within a second (an orchestrator's usual probe timeout) on a busy host too.
const HEALTH_DEADLINE: Duration = Duration::from_millis(800);
/// `/metrics` leaves out the queue gauges when the store has not answered within this.
const METRICS_QUEUE_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct AppState {
    pub service: Service,
    pub signing_secret: Secret,
    pub metrics: Arc<Metrics>,
    /// Deadline for reading a request body.
    pub body_timeout: Duration,
    /// The one workspace served; payloads from any other are refused.
    pub workspace: Arc<Workspace>,
    /// Opens forms (`views.open`), which must happen within 3 s of the click or command.
    pub slack: SlackApi,
}

pub fn router(state: AppState) -> Router {
    let api = crate::api::router(crate::api::ApiState {
        service: state.service.clone(),
        metrics: state.metrics.clone(),
        limiter: Arc::new(crate::api::auth::Limiter::default()),
        waiting: Arc::new(tokio::sync::Semaphore::new(crate::api::MAX_WAITING)),
        body_timeout: state.body_timeout,
    });
    Router::new()
        .route("/slack/commands", post(command))
        .route("/slack/interactions", post(interaction))
        .route("/slack/events", post(event))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(api)
        .layer(axum::middleware::from_fn(request_id))
}

/// Every request gets an id: on each log line written while it is handled (the `http` span,
/// which JSON logs carry as fields) and in the answer's `X-Request-Id` header.
async fn request_id(req: Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let id = format!("{:016x}", rand::random::<u64>());
    let span = tracing::info_span!("http", request_id = %id, path = %req.uri().path());
    let mut response = next.run(req).instrument(span).await;
    if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// A request body that carried a valid Slack signature; the only way to get one is to pass
/// verification.
pub struct SignedBody(pub Bytes);

impl FromRequest<AppState> for SignedBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let headers: HeaderMap = req.headers().clone();
        let announced = verify::announced_length(&headers);
        if announced.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
            return Err((StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response());
        }
        let body = match tokio::time::timeout(
            state.body_timeout,
            axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES),
        )
        .await
        {
            Ok(Ok(body)) => body,
            Ok(Err(_)) => {
                return Err((StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response());
            }
            Err(_) => {
                return Err(
                    (StatusCode::REQUEST_TIMEOUT, "body not received in time").into_response()
                );
            }
        };
        match verify::verify_headers(
            state.signing_secret.expose().as_bytes(),
            &headers,
            &body,
            Utc::now().timestamp(),
        ) {
            Ok(()) => {
                Metrics::inc(&state.metrics.slack_requests);
                Ok(SignedBody(body))
            }
            Err(e) => {
                Metrics::inc(&state.metrics.signature_failures);
                tracing::warn!(reason = %e, "refused a Slack request");
                Err((StatusCode::UNAUTHORIZED, "invalid Slack signature").into_response())
            }
        }
    }
}

fn ephemeral(text: impl Into<String>) -> Response {
    Json(json!({"response_type": "ephemeral", "text": text.into()})).into_response()
}

/// Answer when something on our side broke: the cause is logged, never shown.
const INTERNAL_TROUBLE: &str = "jitbot hit a problem on its side and could not finish that. Try again in a minute; if it persists, tell the jitbot admins.";
/// Slack waits 3 s for an answer; past this, jitbot answers that it could not finish.
const ANSWER_DEADLINE: Duration = Duration::from_millis(2_500);
/// Longest wait for `views.open`: a form opens within Slack's 3 s or not at all.
const FORM_DEADLINE: Duration = Duration::from_millis(2_000);
/// The answer when a form could not be opened.
const NO_FORM: &str = "jitbot could not open the form (Slack did not answer in time). Try again, or type it out: `/jit request <resource> <duration> <reason>`, `/jit deny <id> <reason>`.";

/// Opens `form` for the person whose click or command carried `trigger_id`; whether it opened.
async fn open_form(state: &AppState, trigger_id: &str, form: serde_json::Value) -> bool {
    match tokio::time::timeout(FORM_DEADLINE, state.slack.views_open(trigger_id, form)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = format!("{e:#}"), "could not open a form");
            false
        }
        Err(_) => {
            tracing::warn!("views.open did not answer in time");
            false
        }
    }
}

/// The answer when the store was too slow to finish within Slack's deadline.
const TOO_SLOW: &str = "jitbot could not finish that in time (its database is slow or unreachable). Try again in a moment; `/jit list` shows what went through.";

/// The answer when a command cannot be read.
const UNREADABLE_COMMAND: &str = "jitbot could not read that command. Try `/jit help`.";

async fn command(State(state): State<AppState>, SignedBody(body): SignedBody) -> Response {
    let Ok(cmd) = serde_urlencoded::from_bytes::<SlashCommand>(&body) else {
        return ephemeral(UNREADABLE_COMMAND);
    };
    handle_command(&state, cmd).await
}

/// A `/jit` command, however it arrived (HTTP or Socket Mode): the answer Slack shows.
pub(crate) async fn handle_command(state: &AppState, cmd: SlashCommand) -> Response {
    let state = state.clone();
    if let Some(refusal) = admit(
        &state,
        &cmd.user_id,
        &cmd.team_id,
        &cmd.enterprise_id,
        "command",
    )
    .await
    {
        return refusal;
    }
    // `/jit request` with nothing else opens the request form.
    if cmd.text.trim().eq_ignore_ascii_case("request") && !cmd.trigger_id.is_empty() {
        let form = state.service.request_form(&cmd.user_id);
        return if open_form(&state, &cmd.trigger_id, form).await {
            StatusCode::OK.into_response()
        } else {
            ephemeral(NO_FORM)
        };
    }
    let answer = tokio::time::timeout(
        ANSWER_DEADLINE,
        state.service.command(&cmd.user_id, &cmd.text, Utc::now()),
    )
    .await;
    match answer {
        Ok(Ok(mut messages)) => {
            let first = if messages.is_empty() {
                String::new()
            } else {
                messages.remove(0)
            };
            if !messages.is_empty()
                && let Err(e) = state
                    .service
                    .follow_up(
                        &cmd.user_id,
                        &cmd.channel_id,
                        &cmd.response_url,
                        messages,
                        Utc::now(),
                    )
                    .await
            {
                tracing::error!(error = format!("{e:#}"), user = %cmd.user_id, "could not queue the rest of an answer");
                return ephemeral(format!("{first}\n\n_{INTERNAL_TROUBLE}_"));
            }
            ephemeral(first)
        }
        Ok(Err(e)) if e.chain().any(|c| c.is::<crate::store::TooSlow>()) => {
            tracing::error!(user = %cmd.user_id, "command not written: the store is too slow");
            ephemeral(TOO_SLOW)
        }
        Ok(Err(e)) => {
            tracing::error!(error = format!("{e:#}"), user = %cmd.user_id, "command failed");
            ephemeral(INTERNAL_TROUBLE)
        }
        Err(_) => {
            tracing::error!(user = %cmd.user_id, "command did not finish within Slack's deadline");
            ephemeral(TOO_SLOW)
        }
    }
}

/// Refuses a signed payload from another workspace (403, one audit event, nothing else), or
/// any payload while the workspace is not known yet (503: Slack could not be asked).
async fn admit(
    state: &AppState,
    user: &str,
    team_id: &str,
    enterprise_id: &str,
    what: &str,
) -> Option<Response> {
    match state.workspace.admits(team_id, enterprise_id).await {
        Admission::Ours => None,
        Admission::Unknown => Some(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "jitbot cannot confirm its workspace with Slack yet; try again in a minute",
            )
                .into_response(),
        ),
        Admission::Foreign => {
            Metrics::inc(&state.metrics.foreign_payloads);
            tracing::warn!(
                user,
                team_id,
                enterprise_id,
                what,
                "refused a signed payload from another workspace"
            );
            let event = crate::store::audit(
                user,
                "foreign_workspace",
                json!({"team_id": team_id, "enterprise_id": enterprise_id, "payload": what}),
            );
            if let Err(e) = state
                .service
                .store
                .audit(None, event, Utc::now().timestamp_millis())
                .await
            {
                tracing::error!(
                    error = format!("{e:#}"),
                    "could not write the audit event of a foreign payload"
                );
            }
            Some(
                (
                    StatusCode::FORBIDDEN,
                    "this jitbot serves another Slack workspace",
                )
                    .into_response(),
            )
        }
    }
}

#[derive(Deserialize)]
struct InteractionForm {
    payload: String,
}

async fn interaction(State(state): State<AppState>, SignedBody(body): SignedBody) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<InteractionForm>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "expected a form with a payload field",
        )
            .into_response();
    };
    handle_interaction(&state, &form.payload).await
}

/// A click or a form submission (the interaction `payload` JSON), however it arrived: an empty
/// 200, the form's field errors, or a failure status.
pub(crate) async fn handle_interaction(state: &AppState, payload: &str) -> Response {
    let state = state.clone();
    let click = match payload::parse_interaction(payload) {
        Ok(Interaction::Click(c)) => c,
        Ok(Interaction::Submission(submission)) => return submitted(&state, submission).await,
        Err(PayloadError::Unsupported(kind)) => {
            tracing::debug!(kind, "ignored an interaction");
            return StatusCode::OK.into_response();
        }
        Err(e) => {
            tracing::warn!(error = %e, "unreadable interaction");
            return (StatusCode::BAD_REQUEST, "unreadable payload").into_response();
        }
    };
    if let Some(refusal) = admit(
        &state,
        &click.user,
        &click.team_id,
        &click.enterprise_id,
        "click",
    )
    .await
    {
        return refusal;
    }
    // A click that cannot be handled in time fails visibly in Slack, so the clicker tries again.
    let trigger_id = click.trigger_id.clone();
    let answered = click.clone();
    // A click on the Home tab: the tab shows what changed.
    if click.from_home {
        let (state, user) = (state.clone(), click.user.clone());
        tokio::spawn(async move {
            // After the click's own answer, so the tab shows its outcome.
            tokio::time::sleep(Duration::from_millis(200)).await;
            publish_home(&state, &user).await;
        });
    }
    match tokio::time::timeout(ANSWER_DEADLINE, state.service.click(click, Utc::now())).await {
        Ok(Ok(None)) => StatusCode::OK.into_response(),
        Ok(Ok(Some(form))) => {
            if !open_form(&state, &trigger_id, form).await
                && let Err(e) = state
                    .service
                    .answer_click(&answered, NO_FORM.to_string(), Utc::now())
                    .await
            {
                tracing::error!(
                    error = format!("{e:#}"),
                    "could not tell the clicker the form did not open"
                );
            }
            StatusCode::OK.into_response()
        }
        Ok(Err(e)) => {
            tracing::error!(error = format!("{e:#}"), "click failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(_) => {
            tracing::error!("click did not finish within Slack's deadline");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// A submitted form: an empty 200 closes it; errors keep it open, shown on their fields.
async fn submitted(state: &AppState, form: payload::Submission) -> Response {
    if let Some(refusal) = admit(
        state,
        &form.user,
        &form.team_id,
        &form.enterprise_id,
        "form",
    )
    .await
    {
        return refusal;
    }
    match tokio::time::timeout(ANSWER_DEADLINE, state.service.submitted(form, Utc::now())).await {
        Ok(Ok(None)) => StatusCode::OK.into_response(),
        Ok(Ok(Some(errors))) => Json(errors).into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = format!("{e:#}"), "form submission failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(_) => {
            tracing::error!("form submission did not finish within Slack's deadline");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

#[derive(Deserialize)]
struct EventEnvelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    challenge: String,
    #[serde(default)]
    team_id: String,
    #[serde(default)]
    enterprise_id: Option<String>,
    event: Option<InnerEvent>,
}

#[derive(Deserialize)]
struct InnerEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    tab: String,
}

/// Slack's Events API: the URL check, and `app_home_opened` (the Home tab is published). Answered
/// at once; the publishing happens after.
async fn event(State(state): State<AppState>, SignedBody(body): SignedBody) -> Response {
    handle_event(&state, &body).await
}

/// An Events API envelope (JSON), however it arrived.
pub(crate) async fn handle_event(state: &AppState, body: &[u8]) -> Response {
    let state = state.clone();
    let Ok(envelope) = serde_json::from_slice::<EventEnvelope>(body) else {
        return (StatusCode::BAD_REQUEST, "expected a Slack event").into_response();
    };
    match envelope.kind.as_str() {
        "url_verification" => Json(json!({"challenge": envelope.challenge})).into_response(),
        "event_callback" => {
            let Some(event) = envelope.event else {
                return StatusCode::OK.into_response();
            };
            if event.kind != "app_home_opened" || event.tab != "home" || event.user.is_empty() {
                tracing::debug!(kind = %event.kind, "ignored an event");
                return StatusCode::OK.into_response();
            }
            let enterprise = envelope.enterprise_id.unwrap_or_default();
            if let Some(refusal) =
                admit(&state, &event.user, &envelope.team_id, &enterprise, "event").await
            {
                return refusal;
            }
            tokio::spawn(async move { publish_home(&state, &event.user).await });
            StatusCode::OK.into_response()
        }
        other => {
            tracing::debug!(kind = other, "ignored an event envelope");
            StatusCode::OK.into_response()
        }
    }
}

/// Publishes `user`'s Home tab; a failure is logged (the next opening publishes it again).
async fn publish_home(state: &AppState, user: &str) {
    let view = match tokio::time::timeout(ANSWER_DEADLINE, state.service.home(user)).await {
        Ok(Ok(view)) => view,
        Ok(Err(e)) => {
            tracing::error!(
                error = format!("{e:#}"),
                user,
                "could not read the Home tab"
            );
            return;
        }
        Err(_) => {
            tracing::error!(user, "the Home tab could not be read in time");
            return;
        }
    };
    if let Err(e) = state.slack.views_publish(user, view).await {
        tracing::warn!(
            error = format!("{e:#}"),
            user,
            "could not publish the Home tab"
        );
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(HEALTH_DEADLINE, state.service.store.ping()).await {
        Ok(true) => (StatusCode::OK, "ok").into_response(),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, "store unreachable").into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store did not answer in time",
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let now = Utc::now().timestamp_millis();
    let queue = tokio::time::timeout(METRICS_QUEUE_DEADLINE, state.service.store.lane_stats(now))
        .await
        .ok()
        .and_then(Result::ok);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(queue.as_deref(), now),
    )
        .into_response()
}
