//! A fake Kubernetes API server (RBAC bindings only) on 127.0.0.1, answering as the real one
//! does: a bearer token or 401; `Status` bodies with their codes (404 `NotFound`, 409
//! `AlreadyExists`, 422 `Invalid` for a ClusterRoleBinding to a `Role` or a bad name); objects
//! with a `resourceVersion` and `uid`. It can be down (503), hang, or keep bindings after a DELETE
//! (a finalizer that never finishes), and records every call.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::pagerduty::PagerDutyMode as Mode;

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

/// One call as the fake received it.
#[derive(Clone, Debug)]
pub struct KubeCall {
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Default)]
struct KubeState {
    token: String,
    mode: Mutex<Mode>,
    /// (namespace or "" for cluster-wide, name) → the stored binding.
    bindings: Mutex<BTreeMap<(String, String), Value>>,
    version: Mutex<u64>,
    calls: Mutex<Vec<KubeCall>>,
    /// A finalizer that never finishes: a DELETE is accepted (200) and the binding stays.
    sticky: Mutex<bool>,
    /// The caller's RBAC rules (a ClusterRole's `rules`), once [`FakeKubernetes::enforce`] set
    /// them: a call they do not allow is 403, as the API server answers.
    rules: Mutex<Option<Vec<Value>>>,
}

/// Do `rules` allow `verb` on `resource` (plural, in the RBAC API group), named `name`?
fn allowed(rules: &[Value], verb: &str, resource: &str, name: Option<&str>) -> bool {
    let has = |rule: &Value, key: &str, want: &str| {
        rule.get(key)
            .and_then(Value::as_array)
            .is_some_and(|list| list.iter().any(|v| v == want || v == "*"))
    };
    rules.iter().any(|rule| {
        has(rule, "apiGroups", "rbac.authorization.k8s.io")
            && has(rule, "resources", resource)
            && has(rule, "verbs", verb)
            && match (rule.get("resourceNames").and_then(Value::as_array), name) {
                (None, _) => true,
                (Some(names), Some(name)) => names.iter().any(|n| n == name),
                // A rule limited to names never allows a call without one (create, list).
                (Some(_), None) => false,
            }
    })
}

fn forbidden(verb: &str, resource: &str, name: Option<&str>) -> Response {
    status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "{resource}.rbac.authorization.k8s.io \"{}\" is forbidden: User \"system:serviceaccount:jitbot:jitbot\" cannot {verb} resource \"{resource}\"",
            name.unwrap_or_default()
        ),
    )
}

pub struct FakeKubernetes {
    /// The API server's URL (a kubeconfig's `server`).
    pub url: String,
    state: Arc<KubeState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeKubernetes {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    (
        code,
        axum::Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Failure", "message": message, "reason": reason,
                          "code": code.as_u16()})),
    )
        .into_response()
}

/// A DNS subdomain, as object names must be.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Why Kubernetes would refuse this binding, if it would.
fn invalid(kind: &str, body: &Value) -> Option<String> {
    let name = body.pointer("/metadata/name").and_then(Value::as_str)?;
    if !valid_name(name) {
        return Some(format!("metadata.name: Invalid value: {name:?}"));
    }
    let role_kind = body.pointer("/roleRef/kind").and_then(Value::as_str);
    let group = body.pointer("/roleRef/apiGroup").and_then(Value::as_str);
    if group != Some("rbac.authorization.k8s.io") {
        return Some("roleRef.apiGroup: Unsupported value".into());
    }
    match (kind, role_kind) {
        ("ClusterRoleBinding", Some("ClusterRole")) => {}
        ("RoleBinding", Some("Role" | "ClusterRole")) => {}
        _ => return Some("roleRef.kind: Unsupported value".into()),
    }
    if body
        .pointer("/roleRef/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Some("roleRef.name: Required value".into());
    }
    for subject in body
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match subject.get("kind").and_then(Value::as_str) {
            Some("User" | "Group")
                if subject.get("apiGroup").and_then(Value::as_str)
                    != Some("rbac.authorization.k8s.io") =>
            {
                return Some("subjects[0].apiGroup: Unsupported value".into());
            }
            Some("User" | "Group" | "ServiceAccount") => {}
            _ => return Some("subjects[0].kind: Unsupported value".into()),
        }
        if subject
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Some("subjects[0].name: Required value".into());
        }
    }
    None
}

async fn handle(
    state: Arc<KubeState>,
    method: Method,
    headers: HeaderMap,
    namespace: String,
    name: Option<String>,
    body: Bytes,
) -> Response {
    let path = match (&namespace, &name) {
        (ns, n) if ns.is_empty() => format!(
            "{RBAC}/clusterrolebindings/{}",
            n.clone().unwrap_or_default()
        ),
        (ns, n) => format!(
            "{RBAC}/namespaces/{ns}/rolebindings/{}",
            n.clone().unwrap_or_default()
        ),
    };
    let answer = answer(&state, &method, &headers, &namespace, name, &body).await;
    state
        .calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(KubeCall {
            method: method.to_string(),
            path,
            status: answer.status().as_u16(),
        });
    answer
}

async fn answer(
    state: &KubeState,
    method: &Method,
    headers: &HeaderMap,
    namespace: &str,
    name: Option<String>,
    body: &[u8],
) -> Response {
    let mode = *state.mode.lock().unwrap_or_else(|e| e.into_inner());
    match mode {
        Mode::Up => {}
        Mode::Down => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3_600)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
    }
    let expected = format!("Bearer {}", state.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".into(),
        );
    }
    let kind = if namespace.is_empty() {
        "ClusterRoleBinding"
    } else {
        "RoleBinding"
    };
    let resource = if namespace.is_empty() {
        "clusterrolebindings.rbac.authorization.k8s.io"
    } else {
        "rolebindings.rbac.authorization.k8s.io"
    };
    let rules = state
        .rules
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(rules) = &rules {
        let plural = if namespace.is_empty() {
            "clusterrolebindings"
        } else {
            "rolebindings"
        };
        let verb = match *method {
            Method::POST => "create",
            Method::GET => "get",
            Method::DELETE => "delete",
            Method::PUT => "update",
            _ => "patch",
        };
        if !allowed(rules, verb, plural, name.as_deref()) {
            return forbidden(verb, plural, name.as_deref());
        }
    }
    let mut bindings = state.bindings.lock().unwrap_or_else(|e| e.into_inner());
    match (method.clone(), name) {
        (Method::POST, None) => {
            let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
                return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON".into());
            };
            // Binding a role takes `bind` on it (short of holding all its permissions, which
            // jitbot's account does not).
            if let Some(rules) = &rules {
                let role_kind = object.pointer("/roleRef/kind").and_then(Value::as_str);
                let role = object.pointer("/roleRef/name").and_then(Value::as_str);
                let plural = if role_kind == Some("Role") {
                    "roles"
                } else {
                    "clusterroles"
                };
                if !allowed(rules, "bind", plural, role) {
                    return forbidden("bind", plural, role);
                }
            }
            if let Some(why) = invalid(kind, &object) {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("{kind} is invalid: {why}"),
                );
            }
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let key = (namespace.to_string(), name.clone());
            if bindings.contains_key(&key) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{resource} \"{name}\" already exists"),
                );
            }
            let version = {
                let mut v = state.version.lock().unwrap_or_else(|e| e.into_inner());
                *v += 1;
                *v
            };
            if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), json!(version.to_string()));
                meta.insert("uid".into(), json!(format!("uid-{version}")));
                meta.insert("creationTimestamp".into(), json!("2026-12-05T00:00:00Z"));
                if !namespace.is_empty() {
                    meta.insert("namespace".into(), json!(namespace));
                }
            }
            if let Some(o) = object.as_object_mut() {
                o.insert("kind".into(), json!(kind));
                o.insert("apiVersion".into(), json!("rbac.authorization.k8s.io/v1"));
            }
            bindings.insert(key, object.clone());
            (StatusCode::CREATED, axum::Json(object)).into_response()
        }
        (Method::GET, Some(name)) => match bindings.get(&(namespace.to_string(), name.clone())) {
            Some(object) => axum::Json(object.clone()).into_response(),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{resource} \"{name}\" not found"),
            ),
        },
        (Method::DELETE, Some(name)) if *state.sticky.lock().unwrap_or_else(|e| e.into_inner()) => {
            match bindings.get_mut(&(namespace.to_string(), name.clone())) {
                Some(object) => {
                    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.insert("deletionTimestamp".into(), json!("2026-12-05T00:00:00Z"));
                        meta.insert("finalizers".into(), json!(["example.com/hold"]));
                    }
                    axum::Json(object.clone()).into_response()
                }
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{resource} \"{name}\" not found"),
                ),
            }
        }
        (Method::DELETE, Some(name)) => {
            match bindings.remove(&(namespace.to_string(), name.clone())) {
                Some(object) => axum::Json(object).into_response(),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{resource} \"{name}\" not found"),
                ),
            }
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not served by the fake".into(),
        ),
    }
}

async fn cluster_collection(
    State(state): State<Arc<KubeState>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state, method, headers, String::new(), None, body).await
}

async fn cluster_item(
    State(state): State<Arc<KubeState>>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state, method, headers, String::new(), Some(name), body).await
}

async fn namespaced_collection(
    State(state): State<Arc<KubeState>>,
    Path(namespace): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state, method, headers, namespace, None, body).await
}

async fn namespaced_item(
    State(state): State<Arc<KubeState>>,
    Path((namespace, name)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state, method, headers, namespace, Some(name), body).await
}

impl FakeKubernetes {
    /// A fake API server that accepts only `token`.
    pub async fn start(token: &str) -> anyhow::Result<FakeKubernetes> {
        let state = Arc::new(KubeState {
            token: token.to_string(),
            ..KubeState::default()
        });
        let app = Router::new()
            .route(
                &format!("{RBAC}/clusterrolebindings"),
                post(cluster_collection),
            )
            .route(
                &format!("{RBAC}/clusterrolebindings/{{name}}"),
                get(cluster_item).delete(cluster_item),
            )
            .route(
                &format!("{RBAC}/namespaces/{{namespace}}/rolebindings"),
                post(namespaced_collection),
            )
            .route(
                &format!("{RBAC}/namespaces/{{namespace}}/rolebindings/{{name}}"),
                get(namespaced_item).delete(namespaced_item),
            )
            .with_state(state.clone());
        let (addr, stop) = super::serve_apart("fake-kubernetes", app)?;
        Ok(FakeKubernetes {
            url: format!("http://{addr}"),
            state,
            stop: Some(stop),
        })
    }

    /// A kubeconfig for this server, with `token`.
    pub fn kubeconfig(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: \"{}\"\nusers:\n- name: jitbot\n  user:\n    token: \"{token}\"\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: jitbot\ncurrent-context: fake\n",
            self.url
        )
    }

    /// The binding `name` (in `namespace`, or cluster-wide for `None`), if the cluster has it.
    pub fn binding(&self, namespace: Option<&str>, name: &str) -> Option<Value> {
        self.state
            .bindings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(namespace.unwrap_or("").to_string(), name.to_string()))
            .cloned()
    }

    /// Puts a binding there as someone else would (a `kubectl apply`).
    pub fn put_binding(&self, namespace: Option<&str>, name: &str, object: Value) {
        self.state
            .bindings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                (namespace.unwrap_or("").to_string(), name.to_string()),
                object,
            );
    }

    /// Deletes a binding as someone else would.
    pub fn remove_binding(&self, namespace: Option<&str>, name: &str) {
        self.state
            .bindings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(namespace.unwrap_or("").to_string(), name.to_string()));
    }

    /// Bindings are kept after a DELETE (a finalizer that never finishes), or not.
    pub fn set_sticky(&self, sticky: bool) {
        *self.state.sticky.lock().unwrap_or_else(|e| e.into_inner()) = sticky;
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    /// From now on, answers as the API server does for an account holding `rules` (a
    /// ClusterRole's): 403 for anything they do not allow, `bind` included.
    pub fn enforce(&self, rules: Vec<Value>) {
        *self.state.rules.lock().unwrap_or_else(|e| e.into_inner()) = Some(rules);
    }

    pub fn calls(&self) -> Vec<KubeCall> {
        self.state
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
