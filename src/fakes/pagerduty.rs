//! A fake PagerDuty REST API: `GET /oncalls` as PagerDuty answers it. It checks the API token
//! (`Authorization: Token token=…`, else 401), filters by `schedule_ids[]`, returns the person's
//! email only with `include[]=users` (otherwise a user reference, as PagerDuty does), pages with
//! `offset`/`limit`, and can be down (503) or hang. Every call is recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// How PagerDuty is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PagerDutyMode {
    #[default]
    Up,
    /// HTTP 503 to every call.
    Down,
    /// No answer at all.
    Hang,
}

/// One call as the fake received it.
#[derive(Clone, Debug)]
pub struct PagerDutyCall {
    /// The query string's pairs, in order.
    pub query: Vec<(String, String)>,
    /// The HTTP status answered.
    pub status: u16,
}

struct OnCallEntry {
    level: i64,
    user_id: String,
    email: String,
}

#[derive(Default)]
struct PdState {
    token: String,
    mode: Mutex<PagerDutyMode>,
    /// Schedule ID → who is on call on it, per escalation level.
    schedules: Mutex<HashMap<String, Vec<OnCallEntry>>>,
    calls: Mutex<Vec<PagerDutyCall>>,
}

pub struct FakePagerDuty {
    /// The API's base URL (what a group's `api_url` names).
    pub url: String,
    state: Arc<PdState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakePagerDuty {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "code": code}})),
    )
        .into_response()
}

async fn oncalls(
    State(state): State<Arc<PdState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let record = |status: StatusCode| {
        state
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(PagerDutyCall {
                query: query.clone(),
                status: status.as_u16(),
            });
    };
    let mode = *state.mode.lock().unwrap_or_else(|e| e.into_inner());
    match mode {
        PagerDutyMode::Up => {}
        PagerDutyMode::Down => {
            record(StatusCode::SERVICE_UNAVAILABLE);
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        PagerDutyMode::Hang => {
            record(StatusCode::GATEWAY_TIMEOUT);
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
    }
    let expected = format!("Token token={}", state.token);
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !authorized {
        record(StatusCode::UNAUTHORIZED);
        return error(StatusCode::UNAUTHORIZED, 2006, "Unauthenticated");
    }
    let values = |key: &str| -> Vec<&str> {
        query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let number = |key: &str, default: usize| -> Result<usize, ()> {
        match values(key).first() {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| ()),
        }
    };
    let (Ok(offset), Ok(limit)) = (number("offset", 0), number("limit", 25)) else {
        record(StatusCode::BAD_REQUEST);
        return error(StatusCode::BAD_REQUEST, 2001, "Invalid Input Provided");
    };
    let with_users = values("include[]").contains(&"users");
    let wanted = values("schedule_ids[]");
    let schedules = state.schedules.lock().unwrap_or_else(|e| e.into_inner());
    let mut all: Vec<Value> = Vec::new();
    let mut ids: Vec<&String> = schedules.keys().collect();
    ids.sort();
    for id in ids {
        if !wanted.is_empty() && !wanted.contains(&id.as_str()) {
            continue;
        }
        for entry in &schedules[id] {
            let user = if with_users {
                json!({"id": entry.user_id, "type": "user", "email": entry.email,
                       "summary": entry.email})
            } else {
                json!({"id": entry.user_id, "type": "user_reference", "summary": entry.email})
            };
            all.push(json!({"escalation_level": entry.level, "user": user,
                            "schedule": {"id": id, "type": "schedule_reference"}}));
        }
    }
    drop(schedules);
    let page: Vec<Value> = all.iter().skip(offset).take(limit).cloned().collect();
    let more = offset + page.len() < all.len();
    record(StatusCode::OK);
    axum::Json(
        json!({"oncalls": page, "limit": limit, "offset": offset, "more": more,
                      "total": null}),
    )
    .into_response()
}

impl FakePagerDuty {
    /// A fake PagerDuty that accepts only `token`.
    pub async fn start(token: &str) -> anyhow::Result<FakePagerDuty> {
        let state = Arc::new(PdState {
            token: token.to_string(),
            ..PdState::default()
        });
        let app = Router::new()
            .route("/oncalls", get(oncalls))
            .with_state(state.clone());
        let (addr, stop) = super::serve_apart("fake-pagerduty", app)?;
        Ok(FakePagerDuty {
            url: format!("http://{addr}"),
            state,
            stop: Some(stop),
        })
    }

    /// Puts the person with `email` (PagerDuty user `user_id`) on call on `schedule` at
    /// escalation `level`, replacing whoever held that level.
    pub fn set_on_call(&self, schedule: &str, level: i64, user_id: &str, email: &str) {
        let mut schedules = self
            .state
            .schedules
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let entries = schedules.entry(schedule.to_string()).or_default();
        entries.retain(|e| e.level != level);
        entries.push(OnCallEntry {
            level,
            user_id: user_id.to_string(),
            email: email.to_string(),
        });
    }

    pub fn set_mode(&self, mode: PagerDutyMode) {
        *self.state.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    pub fn calls(&self) -> Vec<PagerDutyCall> {
        self.state
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
