//! A fake Cloud Resource Manager (v3) IAM API on 127.0.0.1, for `projects`, `folders` and
//! `organizations`: `getIamPolicy` / `setIamPolicy` as Google answers them. It enforces what
//! matters: the bearer token must be a JWT signed (RS256) by the service-account key it made (as
//! Google's client library sends it, self-signed, with the account as `iss`); a `setIamPolicy`
//! with a stale `etag` is 409 `ABORTED`; a policy with conditions must be read and written at
//! version 3. It can interfere (someone else writes the policy just before jitbot's write), be
//! down (503 `UNAVAILABLE`), and records every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self, KeyPair as _};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// The service account the fake's key belongs to.
pub const CLIENT_EMAIL: &str = "jitbot@test-project.iam.gserviceaccount.com";

/// One call as the fake received it.
#[derive(Clone, Debug)]
pub struct GcpCall {
    /// `projects/p:setIamPolicy`, say.
    pub target: String,
    pub status: u16,
}

#[derive(Default)]
struct GcpState {
    /// DER `RSAPublicKey` of the key the fake accepts.
    public_key: Vec<u8>,
    /// Resource (`projects/p`) → (policy, etag counter).
    policies: Mutex<HashMap<String, (Value, u64)>>,
    calls: Mutex<Vec<GcpCall>>,
    /// The next this many `setIamPolicy` calls find the policy changed by someone else first.
    interfere: Mutex<u32>,
    down: Mutex<bool>,
    /// Every `setIamPolicy` is answered with a 307 to `<resource>:redirected` (a proxy or a
    /// captive portal in the way).
    redirect: Mutex<bool>,
    /// The caller's permissions, once [`FakeGcp::enforce`] set them: a call needing another is
    /// 403 `PERMISSION_DENIED`, as IAM answers.
    permissions: Mutex<Option<Vec<String>>>,
}

pub struct FakeGcp {
    /// The API's base URL (a provider's `endpoint_url`).
    pub url: String,
    /// A service-account key file's JSON for the key the fake accepts.
    pub key_json: String,
    state: Arc<GcpState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeGcp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn error(status: StatusCode, name: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": status.as_u16(), "message": message, "status": name}})),
    )
        .into_response()
}

fn etag(n: u64) -> String {
    STANDARD.encode(n.to_be_bytes())
}

/// A service-account key (PKCS#8 PEM) and its public half, freshly made.
fn new_key() -> anyhow::Result<(String, Vec<u8>)> {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| anyhow::anyhow!("generating an RSA key"))?;
    let der = pair
        .as_der()
        .map_err(|_| anyhow::anyhow!("encoding the RSA key"))?;
    let body = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    Ok((pem, pair.public_key().as_ref().to_vec()))
}

/// Is `header` a bearer JWT signed by the fake's key, for its account, not expired?
fn authorized(state: &GcpState, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return false;
    };
    let Ok(sig) = URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    let key = signature::UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        &state.public_key,
    );
    if key
        .verify(format!("{header}.{claims}").as_bytes(), &sig)
        .is_err()
    {
        return false;
    }
    let Some(claims) = URL_SAFE_NO_PAD
        .decode(claims)
        .ok()
        .and_then(|c| serde_json::from_slice::<Value>(&c).ok())
    else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    claims["iss"] == CLIENT_EMAIL && claims["exp"].as_i64().is_some_and(|exp| exp > now)
}

fn has_conditions(policy: &Value) -> bool {
    policy["bindings"]
        .as_array()
        .is_some_and(|b| b.iter().any(|b| b.get("condition").is_some()))
}

async fn iam(
    State(state): State<Arc<GcpState>>,
    Path((kind, rest)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = answer(&state, &kind, &rest, &headers, &body);
    state
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(GcpCall {
            target: format!("{kind}/{rest}"),
            status: answer.status().as_u16(),
        });
    answer
}

fn answer(state: &GcpState, kind: &str, rest: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    if *state.down.lock().unwrap_or_else(|e| e.into_inner()) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the service is unavailable",
        );
    }
    if !authorized(state, headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    if !matches!(kind, "projects" | "folders" | "organizations") {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "unknown resource kind");
    }
    let Some((id, method)) = rest.split_once(':') else {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "no method");
    };
    let resource = format!("{kind}/{id}");
    if method == "setIamPolicy" && *state.redirect.lock().unwrap_or_else(|e| e.into_inner()) {
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", format!("/v3/{resource}:redirected"))],
        )
            .into_response();
    }
    let needed = format!("resourcemanager.{kind}.{method}");
    if let Some(held) = &*state.permissions.lock().unwrap_or_else(|e| e.into_inner())
        && !held.contains(&needed)
    {
        return error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            &format!("Permission '{needed}' denied on resource '{resource}'"),
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "not JSON");
    };
    let mut policies = state.policies.lock().unwrap_or_else(|e| e.into_inner());
    let (policy, counter) = policies
        .entry(resource.clone())
        .or_insert_with(|| (json!({"version": 1, "bindings": []}), 1));
    match method {
        "getIamPolicy" => {
            let version = request
                .pointer("/options/requestedPolicyVersion")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            if has_conditions(policy) && version < 3 {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "the policy has conditions: request policy version 3",
                );
            }
            let mut out = policy.clone();
            out["etag"] = json!(etag(*counter));
            axum::Json(out).into_response()
        }
        "setIamPolicy" => {
            {
                let mut interfere = state.interfere.lock().unwrap_or_else(|e| e.into_inner());
                if *interfere > 0 {
                    *interfere -= 1;
                    // Someone else's write lands first.
                    if let Some(b) = policy["bindings"].as_array_mut() {
                        b.push(json!({"role": "roles/viewer",
                                      "members": [format!("user:someone{counter}@example.com")]}));
                    }
                    *counter += 1;
                }
            }
            let new = request.get("policy").cloned().unwrap_or(Value::Null);
            if new.get("etag").and_then(Value::as_str) != Some(etag(*counter).as_str()) {
                return error(
                    StatusCode::CONFLICT,
                    "ABORTED",
                    "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff.",
                );
            }
            if has_conditions(&new) && new["version"].as_i64() != Some(3) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "a policy with conditions must be version 3",
                );
            }
            let mut stored = new.clone();
            if let Some(o) = stored.as_object_mut() {
                o.remove("etag");
                o.entry("bindings").or_insert_with(|| json!([]));
            }
            *policy = stored;
            *counter += 1;
            let mut out = policy.clone();
            out["etag"] = json!(etag(*counter));
            axum::Json(out).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "NOT_FOUND", "unknown method"),
    }
}

/// The metadata server's answer to "which service account is this": only with the header the
/// real one requires (it refuses requests without it, so a browser-side request cannot ask).
async fn metadata_email(headers: HeaderMap) -> Response {
    if headers
        .get("Metadata-Flavor")
        .is_none_or(|v| v.as_bytes() != b"Google")
    {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header",
        )
            .into_response();
    }
    CLIENT_EMAIL.into_response()
}

impl FakeGcp {
    pub async fn start() -> anyhow::Result<FakeGcp> {
        let (pem, public_key) = new_key()?;
        let state = Arc::new(GcpState {
            public_key,
            ..GcpState::default()
        });
        let app = Router::new()
            .route("/v3/{kind}/{rest}", post(iam))
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/email",
                axum::routing::get(metadata_email),
            )
            .with_state(state.clone());
        let (addr, stop) = super::serve_apart("fake-gcp", app)?;
        let key_json = json!({
            "type": "service_account", "project_id": "test-project",
            "private_key_id": "fake-key-1", "private_key": pem,
            "client_email": CLIENT_EMAIL, "client_id": "1234567890",
            "token_uri": format!("http://{addr}/token"),
        })
        .to_string();
        Ok(FakeGcp {
            url: format!("http://{addr}"),
            key_json,
            state,
            stop: Some(stop),
        })
    }

    /// A key file's JSON for a key the fake does not accept (same account, other key).
    pub fn stranger_key_json() -> anyhow::Result<String> {
        let (pem, _) = new_key()?;
        Ok(
            json!({"type": "service_account", "project_id": "test-project",
                  "private_key_id": "stranger", "private_key": pem,
                  "client_email": CLIENT_EMAIL, "client_id": "1"})
            .to_string(),
        )
    }

    /// From now on, the caller holds only `permissions` (`resourcemanager.projects.getIamPolicy`…).
    pub fn enforce(&self, permissions: Vec<String>) {
        *self
            .state
            .permissions
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(permissions);
    }

    /// The policy of `resource` (`projects/p`) as stored.
    pub fn policy(&self, resource: &str) -> Value {
        self.state
            .policies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(resource)
            .map(|(p, _)| p.clone())
            .unwrap_or_else(|| json!({"version": 1, "bindings": []}))
    }

    /// Sets the policy of `resource` as someone else would.
    pub fn put_policy(&self, resource: &str, policy: Value) {
        let mut policies = self
            .state
            .policies
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let counter = policies.get(resource).map(|(_, c)| c + 1).unwrap_or(1);
        policies.insert(resource.to_string(), (policy, counter));
    }

    /// The next `n` writes find the policy changed by someone else just before (a stale etag).
    pub fn interfere_next(&self, n: u32) {
        *self
            .state
            .interfere
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = n;
    }

    pub fn set_redirect(&self, redirect: bool) {
        *self
            .state
            .redirect
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = redirect;
    }

    pub fn set_down(&self, down: bool) {
        *self.state.down.lock().unwrap_or_else(|e| e.into_inner()) = down;
    }

    pub fn calls(&self) -> Vec<GcpCall> {
        self.state
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
