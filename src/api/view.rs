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

/// How a shown request stands, as one string: its state and each resource's (a long poll
/// answers when this changes).
pub fn fingerprint(shown: &Value) -> String {
    let mut parts = vec![shown["state"].as_str().unwrap_or("").to_string()];
    for r in shown["resources"].as_array().into_iter().flatten() {
        parts.push(r["state"].as_str().unwrap_or("").to_string());
    }
    parts.join(",")
}

/// A resource of the request: the request's own, or a bundle's other one.
fn resource(name: &str, request: Option<&Request>, grant: Option<&Grant>) -> Value {
    json!({
        "id": request.map(|r| r.id),
        "resource": name,
        "state": request.map(|r| r.state.as_str()),
        "expires_at": time(grant.and_then(|g| g.expires_at)),
        "error": error(request, grant),
    })
}

fn error(request: Option<&Request>, grant: Option<&Grant>) -> Value {
    grant
        .and_then(|g| g.last_error.clone())
        .filter(|_| {
            matches!(
                request.and_then(|r| State::parse(&r.state)),
                Some(State::GrantFailed | State::RevokeFailed | State::Approved)
            )
        })
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// The request as the API shows it; `members` are a bundle's other resources' requests.
pub fn request(
    request: &Request,
    grant: Option<&Grant>,
    members: &[(Request, Option<Grant>)],
) -> Value {
    let spec = crate::store::BundleSpec::of(request);
    let resources: Vec<Value> = match &spec {
        None => vec![resource(&request.resource, Some(request), grant)],
        Some(spec) => spec
            .resources
            .iter()
            .map(|name| {
                if *name == request.resource {
                    resource(name, Some(request), grant)
                } else {
                    match members.iter().find(|(m, _)| m.resource == *name) {
                        Some((m, g)) => resource(name, Some(m), g.as_ref()),
                        None => resource(name, None, None),
                    }
                }
            })
            .collect(),
    };
    let duration = GrantDuration::from_secs(request.duration_secs.max(0) as u64)
        .map(|d| d.to_string())
        .unwrap_or_else(|| format!("{}s", request.duration_secs));
    let approved_by: Vec<&str> = grant
        .and_then(|g| g.approved_by.as_deref())
        .map(|list| list.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let error = error(Some(request), grant);
    json!({
        "id": request.id,
        "resource": request.resource,
        "bundle": spec.and_then(|s| s.name),
        "resources": resources,
        "active": resources.iter().all(|r| r["state"] == "active"),
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
