//! The HTTP API for machines (`/api/v1`): a pipeline or a service asks for access under the same
//! policy as people. It authenticates with a bearer token whose SHA-256 the policy's `clients:`
//! holds; an `auto_approve` rule naming the client grants at once (`201`), anything else posts
//! the usual card and waits for people (`202`). Errors are JSON `{code, message}` with a code
//! that does not change between versions.
//!
//! - this file: the routes and their handlers;
//! - [`auth`]: the bearer token and the per-client rate;
//! - [`view`]: a request as the API shows it;
//! - [`openapi`]: the OpenAPI document, held to the routes by a test;
//! - [`cli`]: `jitbot request`, a small client for a pipeline step.

pub mod auth;
pub mod cli;
pub mod openapi;
pub mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::domain::policy::Client;
use crate::domain::{GrantDuration, RequestId};
use crate::metrics::{Metrics, label};
use crate::service::{Refusal, Service};
use crate::store;

/// Longest `wait` honoured, in seconds: a long poll ends by then and the caller asks again.
pub const MAX_WAIT_SECS: u64 = 60;
/// Largest request body: a resource, a duration and a reason.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most long polls (`wait`) held open at once, whatever the clients: a tenth of the default
/// connection cap.
pub const MAX_WAITING: usize = 50;
/// How often a long poll looks at the store.
const POLL_EVERY: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct ApiState {
    pub service: Service,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<auth::Limiter>,
    /// Deadline for reading a request body.
    pub body_timeout: Duration,
    /// Long polls waiting at once (see [`MAX_WAITING`]).
    pub waiting: Arc<tokio::sync::Semaphore>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(openapi::REQUESTS, post(create))
        .route(openapi::REQUEST, get(show).delete(end))
        .route(openapi::DOCUMENT, get(document))
        .with_state(state)
}

/// An API error: an HTTP status, a stable code and a sentence.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
    request_id: Option<i32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            request_id: None,
        }
    }

    fn internal(e: anyhow::Error) -> Self {
        if e.chain().any(|c| c.is::<store::TooSlow>()) {
            tracing::error!("API call not finished: the store is too slow");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "jitbot's database is slow or unreachable; try again in a moment",
            );
        }
        tracing::error!(error = format!("{e:#}"), "API call failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "jitbot hit a problem on its side; try again, and tell the jitbot admins if it persists",
        )
    }

    fn not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no request {id} of this client"),
        )
    }

    /// A refusal of the policy, with the status that fits it.
    fn refused(refusal: Refusal) -> Self {
        let status = match refusal.code {
            "not_allowed" | "no_identity" => StatusCode::FORBIDDEN,
            "already_open" | "too_many_open" => StatusCode::CONFLICT,
            "no_provider" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self {
            request_id: refusal.request_id,
            ..Self::new(status, refusal.code, plain(&refusal.message))
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code, "message": self.message});
        if let Some(id) = self.request_id {
            body["id"] = json!(id);
        }
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
                headers.insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// A Slack-flavoured sentence without its mrkdwn emphasis, for a terminal.
fn plain(text: &str) -> String {
    text.replace('*', "")
}

/// The client whose bearer token came with the call, within its rate. A missing or unknown
/// token is 401, counted, and written to the audit trail (at a bounded rate).
async fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    what: &str,
) -> Result<Client, ApiError> {
    let policy = state.service.policy.now();
    let token = auth::bearer(headers);
    let Some(client) = token.and_then(|t| policy.client_by_token(t)) else {
        Metrics::inc(&state.metrics.api_unauthorized);
        let reason = if token.is_some() {
            "unknown token"
        } else {
            "no bearer token"
        };
        tracing::warn!(reason, call = what, "refused an API call");
        if state.limiter.audit_unauthorized(Instant::now()) {
            let event = store::audit(
                "api",
                "api_unauthorized",
                json!({"reason": reason, "call": what}),
            );
            if let Err(e) = state
                .service
                .store
                .audit(None, event, Utc::now().timestamp_millis())
                .await
            {
                tracing::error!(
                    error = format!("{e:#}"),
                    "could not write the audit event of a refused API call"
                );
            }
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a bearer token of a client in the policy's `clients:` is needed (Authorization: Bearer <token>)",
        ));
    };
    if let Err(after) = state
        .limiter
        .take(&client.name, client.requests_per_minute, Instant::now())
    {
        Metrics::inc(&state.metrics.api_rate_limited);
        tracing::warn!(client = %client.name, call = what, "API client over its rate");
        return Err(ApiError {
            retry_after: Some(after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "client `{}` may make {} calls a minute; try again in {} s",
                    client.name,
                    client.requests_per_minute,
                    after.as_secs() + 1
                ),
            )
        });
    }
    Ok(client.clone())
}

/// Counts the answer by client and status.
fn counted(state: &ApiState, client: &str, answer: Result<Response, ApiError>) -> Response {
    let response = answer.unwrap_or_else(IntoResponse::into_response);
    state.metrics.api_calls.inc(&format!(
        "client=\"{}\",status=\"{}\"",
        label(client),
        response.status().as_u16()
    ));
    response
}

/// The body of a `POST /api/v1/requests`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    resource: Option<String>,
    resources: Option<Vec<String>>,
    duration: Option<String>,
    reason: Option<String>,
    wait: Option<u64>,
}

async fn create(State(state): State<ApiState>, req: Request) -> Response {
    let client = match authenticate(&state, req.headers(), "create").await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let answer = create_for(&state, &client, req).await;
    counted(&state, &client.name, answer)
}

async fn create_for(state: &ApiState, client: &Client, req: Request) -> Result<Response, ApiError> {
    let body = read_body(req, state.body_timeout).await?;
    let ask: Ask = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body must be a JSON object {{resource, duration, reason, wait}}: {e}"),
        )
    })?;
    let resource = match (ask.resource, ask.resources) {
        (Some(r), None) => r,
        // Several resources: one request, one card, one decision, one grant each.
        (None, Some(list)) if !list.is_empty() && list.iter().all(|r| !r.contains(',')) => {
            list.join(",")
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "give `resource` or `resources`, not both",
            ));
        }
        (None, _) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "name the resource: {\"resource\": \"prod-db\", \"duration\": \"30m\", \"reason\": \"deploy 1234\"} (or \"resources\": [..] for several)",
            ));
        }
    };
    let duration = match ask.duration.as_deref().map(GrantDuration::parse) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_duration",
                format!("{e} (durations look like 90s, 15m, 1h30m)"),
            ));
        }
    };
    let created = state
        .service
        .create_request(&client.name, &resource, duration, ask.reason, Utc::now())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::refused)?;
    tracing::info!(client = %client.name, request = created.id, resource = %created.resource, auto = created.auto_approved, "API request stored");
    let wait = wait_for(ask.wait);
    if !created.auto_approved {
        let view = watch(state, created.id, "", Duration::ZERO).await?;
        return Ok((StatusCode::ACCEPTED, Json(view)).into_response());
    }
    // Approved at once: with `wait`, answer once every grant is done (or has failed).
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let current = watch(state, created.id, "", Duration::ZERO).await?;
        let granting = view::fingerprint(&current);
        if !granting.split(',').any(|s| s == "approved") || left.is_zero() {
            return Ok((StatusCode::CREATED, Json(current)).into_response());
        }
        watch(state, created.id, &granting, left).await?;
    }
}

fn wait_for(secs: Option<u64>) -> Duration {
    Duration::from_secs(secs.unwrap_or(0).min(MAX_WAIT_SECS))
}

/// The request as the API shows it, once its state is no longer `from` or `wait` has passed.
async fn watch(state: &ApiState, id: i32, from: &str, wait: Duration) -> Result<Value, ApiError> {
    // Long polls hold connections: at most `MAX_WAITING` at once, so they can never take the
    // connections Slack's requests need. Past that, the answer comes at once.
    let _held = if wait.is_zero() {
        None
    } else {
        state.waiting.clone().try_acquire_owned().ok()
    };
    let wait = if _held.is_some() {
        wait
    } else {
        Duration::ZERO
    };
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let Some((request, grant)) = state
            .service
            .store
            .request_with_grant(id)
            .await
            .map_err(ApiError::internal)?
        else {
            return Err(ApiError::not_found(&id.to_string()));
        };
        let members = if request.bundle.is_some() {
            state
                .service
                .store
                .bundle_members_with_grants(id)
                .await
                .map_err(ApiError::internal)?
        } else {
            Vec::new()
        };
        let shown = view::request(&request, grant.as_ref(), &members);
        if view::fingerprint(&shown) != from || tokio::time::Instant::now() >= deadline {
            return Ok(shown);
        }
        tokio::time::sleep(POLL_EVERY.min(deadline - tokio::time::Instant::now())).await;
    }
}

/// The request `id` if this client asked for it; another client's is "not found" too.
async fn own(state: &ApiState, client: &Client, id: &str) -> Result<store::Request, ApiError> {
    let parsed = RequestId::parse(id)
        .and_then(|r| i32::try_from(r.0).ok())
        .ok_or_else(|| ApiError::not_found(id))?;
    match state
        .service
        .store
        .request(parsed)
        .await
        .map_err(ApiError::internal)?
    {
        Some(r) if r.requester == client.name => Ok(r),
        _ => Err(ApiError::not_found(id)),
    }
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

async fn show(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Response {
    let client = match authenticate(&state, &headers, "show").await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let answer = async {
        let Ok(Query(query)) = query else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "`wait` is a whole number of seconds",
            ));
        };
        let request = own(&state, &client, &id).await?;
        let wait = wait_for(query.wait);
        let now = watch(&state, request.id, "", Duration::ZERO).await?;
        if wait.is_zero() {
            return Ok(Json(now).into_response());
        }
        let view = watch(&state, request.id, &view::fingerprint(&now), wait).await?;
        Ok(Json(view).into_response())
    }
    .await;
    counted(&state, &client.name, answer)
}

async fn end(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let client = match authenticate(&state, &headers, "end").await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let answer = async {
        let request = own(&state, &client, &id).await?;
        let ended = state
            .service
            .end_early(&client.name, &request, Utc::now())
            .await
            .map_err(ApiError::internal)?;
        if let Err(why) = ended {
            return Err(ApiError {
                request_id: Some(request.id),
                ..ApiError::new(StatusCode::CONFLICT, "not_open", plain(&why))
            });
        }
        let view = watch(&state, request.id, "", Duration::ZERO).await?;
        Ok(Json(view).into_response())
    }
    .await;
    counted(&state, &client.name, answer)
}

async fn document() -> Response {
    Json(openapi::document()).into_response()
}

/// The body, within the size limit and the deadline.
async fn read_body(req: Request, timeout: Duration) -> Result<axum::body::Bytes, ApiError> {
    match tokio::time::timeout(
        timeout,
        axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is over {MAX_BODY_BYTES} bytes"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the body did not arrive in time",
        )),
    }
}
