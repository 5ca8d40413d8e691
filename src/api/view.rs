//! A request as the API shows it (the `Request` schema of the OpenAPI document).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::domain::{GrantDuration, State};
use crate::store::{Grant, Request};

fn time(ms: Option<i64>) -> Value {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// Is this state the end of the request's life (nothing more will happen to it)?
pub fn is_final(state: &str) -> bool {
    State::parse(state).is_some_and(|s| !s.is_open())
}

pub fn request(request: &Request, grant: Option<&Grant>) -> Value {
    let duration = GrantDuration::from_secs(request.duration_secs.max(0) as u64)
        .map(|d| d.to_string())
        .unwrap_or_else(|| format!("{}s", request.duration_secs));
    let approved_by: Vec<&str> = grant
        .and_then(|g| g.approved_by.as_deref())
        .map(|list| list.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let error = grant
        .and_then(|g| g.last_error.clone())
        .filter(|_| {
            matches!(
                State::parse(&request.state),
                Some(State::GrantFailed | State::RevokeFailed | State::Approved)
            )
        })
        .map(Value::String)
        .unwrap_or(Value::Null);
    json!({
        "id": request.id,
        "resource": request.resource,
        "state": request.state,
        "final": is_final(&request.state),
        "requester": request.requester,
        "duration": duration,
        "duration_secs": request.duration_secs,
        "reason": request.reason,
        "auto_approved": request.auto_approved,
        "approvals_needed": request.approvals_needed,
        "approved_by": approved_by,
        "decided_by": request.decided_by,
        "note": request.decision_note,
        "created_at": time(Some(request.created_at)),
        "decided_at": time(request.decided_at),
        "granted_at": time(grant.and_then(|g| g.granted_at)),
        "expires_at": time(grant.and_then(|g| g.expires_at)),
        "ended_at": time(grant.and_then(|g| g.ended_at)),
        "error": error,
    })
}
