//! Kubernetes RBAC: a grant is a RoleBinding (in a namespace) or a ClusterRoleBinding named after
//! the request (`jitbot-<id>`), labelled as jitbot's, binding the person's user (or, for group
//! access, the group the resource names) to the role; the revoke deletes it. Each grant is its own object, so two grants of the same role to one person
//! never take each other's access, and access given outside jitbot is never touched.
//!
//! Receipts: after creating, the binding is read back (it must name the role and the user);
//! after deleting, it is read back and must be gone (a binding held by a finalizer is not ended).
//! A 404 on delete counts as gone; a 409 on create is fine only when the existing binding is this
//! grant's own (a retried grant), never someone else's object of that name.
//!
//! The client comes from the kubeconfig file named by the provider's `kubeconfig_env`, else
//! `kube`'s inference (`KUBECONFIG`, `~/.kube/config`, or the pod's service account, whose token
//! it re-reads as the kubelet rotates it).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use super::{GrantSpec, Provider};
use crate::config::Env;

/// The label every binding jitbot makes carries, and the one naming its request.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "jitbot");
pub const REQUEST_LABEL: &str = "jitbot.dev/request";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// What a `kubernetes` grant binds: `{ cluster_role }` (cluster-wide), `{ cluster_role,
/// namespace }` or `{ role, namespace }` (in one namespace); with `group`, to that group instead
/// of the requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// `ClusterRole` or `Role`.
    pub role_kind: &'static str,
    pub role: String,
    pub namespace: Option<String>,
    /// Group access: the Kubernetes group bound, whoever asked.
    pub group: Option<String>,
}

/// Why a user or group name must never be bound, if it must not: Kubernetes' own identities
/// (`system:masters`, `system:authenticated`, `system:serviceaccount:…`).
pub fn system_identity(name: &str) -> Option<&'static str> {
    name.to_ascii_lowercase()
        .starts_with("system:")
        .then_some("is a Kubernetes system identity")
}

/// A lowercase RFC 1123 label, as a namespace name must be.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A role name as RBAC takes it (path segment: no `/`, no `%`, not `.` or `..`).
fn is_role_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && !s.contains('/')
        && !s.contains('%')
        && !s.chars().any(char::is_whitespace)
}

impl Binding {
    /// Reads a resource's `grant`; the error says what a grant looks like.
    pub fn parse(grant: &serde_json::Map<String, serde_json::Value>) -> Result<Binding, String> {
        const SHAPE: &str = "a kubernetes grant is `{ cluster_role: <name> }`, `{ cluster_role: <name>, namespace: <ns> }` or `{ role: <name>, namespace: <ns> }`, with `group: <name>` to bind a group instead of the requester";
        let text = |key: &str| -> Result<Option<String>, String> {
            match grant.get(key) {
                None => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("`{key}` must be a string; {SHAPE}")),
            }
        };
        if let Some(other) = grant
            .keys()
            .find(|k| !matches!(k.as_str(), "cluster_role" | "role" | "namespace" | "group"))
        {
            return Err(format!("unknown key `{other}`; {SHAPE}"));
        }
        let namespace = text("namespace")?;
        if let Some(ns) = &namespace
            && !is_dns_label(ns)
        {
            return Err(format!(
                "namespace `{ns}` is not a namespace name (lowercase letters, digits and `-`, at most 63)"
            ));
        }
        let (role_kind, role) = match (text("cluster_role")?, text("role")?) {
            (Some(r), None) => ("ClusterRole", r),
            (None, Some(r)) if namespace.is_some() => ("Role", r),
            (None, Some(_)) => return Err(format!("a `role` lives in a namespace; {SHAPE}")),
            _ => return Err(SHAPE.to_string()),
        };
        if !is_role_name(&role) {
            return Err(format!("`{role}` is not a role name"));
        }
        let group = text("group")?;
        if let Some(g) = &group {
            if g.trim().is_empty() || g.len() > 253 || g.chars().any(char::is_control) {
                return Err(format!("`{g}` is not a group name"));
            }
            if let Some(why) = system_identity(g) {
                return Err(format!("group `{g}` {why}: jitbot never binds roles to it"));
            }
        }
        Ok(Binding {
            role_kind,
            role,
            namespace,
            group,
        })
    }
}

/// The Kubernetes user a grant binds: `k8s_user`, else the email.
fn user_of(spec: &GrantSpec) -> anyhow::Result<String> {
    let user = spec
        .identity
        .get("k8s_user")
        .or_else(|| spec.identity.get("email"))
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "{} has no Kubernetes user: add `k8s_user` (or `email`) under identities",
                spec.requester
            )
        })?;
    if let Some(why) = system_identity(user) {
        bail!("`{user}` {why}: jitbot never binds roles to it");
    }
    Ok(user.clone())
}

/// Who a grant binds: the resource's group, else the person's user.
fn subject_of(b: &Binding, spec: &GrantSpec) -> anyhow::Result<Subject> {
    let (kind, name) = match &b.group {
        Some(group) => ("Group", group.clone()),
        None => ("User", user_of(spec)?),
    };
    Ok(Subject {
        api_group: Some(RBAC_GROUP.into()),
        kind: kind.into(),
        name,
        namespace: None,
    })
}

pub fn binding_name(request_id: i32) -> String {
    format!("jitbot-{request_id}")
}

pub struct KubernetesProvider {
    env: Env,
    kubeconfig_env: Option<String>,
    timeout: Duration,
    client: tokio::sync::OnceCell<Client>,
}

impl KubernetesProvider {
    pub fn new(env: Env, kubeconfig_env: Option<String>, timeout: Duration) -> Self {
        Self {
            env,
            kubeconfig_env,
            timeout,
            client: tokio::sync::OnceCell::new(),
        }
    }

    async fn client(&self) -> anyhow::Result<Client> {
        let client = self
            .client
            .get_or_try_init(|| async {
                let mut config = match &self.kubeconfig_env {
                    Some(var) => {
                        let path = self.env.require(var)?;
                        let file = kube::config::Kubeconfig::read_from(path.expose())
                            .with_context(|| format!("reading the kubeconfig named by {var}"))?;
                        kube::Config::from_custom_kubeconfig(
                            file,
                            &kube::config::KubeConfigOptions::default(),
                        )
                        .await
                        .with_context(|| format!("the kubeconfig named by {var}"))?
                    }
                    None => kube::Config::infer()
                        .await
                        .context("no kubeconfig (KUBECONFIG, ~/.kube/config) and not in a pod")?,
                };
                config.connect_timeout = Some(super::CONNECT_TIMEOUT);
                config.read_timeout = Some(self.timeout);
                config.write_timeout = Some(self.timeout);
                Client::try_from(config).context("building the Kubernetes client")
            })
            .await?;
        Ok(client.clone())
    }

    fn meta(spec: &GrantSpec) -> ObjectMeta {
        let mut annotations = BTreeMap::from([
            ("jitbot.dev/resource".to_string(), spec.resource.clone()),
            ("jitbot.dev/requester".to_string(), spec.requester.clone()),
        ]);
        if let Some(end) = spec.expires_at {
            annotations.insert("jitbot.dev/expires-at".into(), end.to_rfc3339());
        }
        ObjectMeta {
            name: Some(binding_name(spec.request_id)),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                (REQUEST_LABEL.to_string(), spec.request_id.to_string()),
            ])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }
    }
}

/// A binding as read back: whose it is, what role and which subjects.
struct Seen {
    request: Option<String>,
    role_ref: RoleRef,
    subjects: Vec<Subject>,
}

fn seen(meta: &ObjectMeta, role_ref: &RoleRef, subjects: &Option<Vec<Subject>>) -> Seen {
    Seen {
        request: meta
            .labels
            .as_ref()
            .and_then(|l| l.get(REQUEST_LABEL).cloned()),
        role_ref: role_ref.clone(),
        subjects: subjects.clone().unwrap_or_default(),
    }
}

fn describe(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(status) => anyhow!(
            "the Kubernetes API answered {} {}: {}",
            status.code,
            status.reason,
            status.message
        ),
        other => anyhow!("the Kubernetes API: {other}"),
    }
}

impl KubernetesProvider {
    /// The binding of request `id`, as the cluster has it now (`None`: not there).
    async fn read(&self, client: &Client, b: &Binding, name: &str) -> anyhow::Result<Option<Seen>> {
        Ok(match &b.namespace {
            None => Api::<ClusterRoleBinding>::all(client.clone())
                .get_opt(name)
                .await
                .map_err(describe)?
                .map(|x| seen(&x.metadata, &x.role_ref, &x.subjects)),
            Some(ns) => Api::<RoleBinding>::namespaced(client.clone(), ns)
                .get_opt(name)
                .await
                .map_err(describe)?
                .map(|x| seen(&x.metadata, &x.role_ref, &x.subjects)),
        })
    }
}

#[async_trait]
impl Provider for KubernetesProvider {
    /// A binding of jitbot's own never overlaps access given otherwise: deleting it removes only
    /// what it added, so there is nothing to leave alone.
    async fn holds(&self, _spec: &GrantSpec) -> anyhow::Result<bool> {
        Ok(false)
    }

    async fn grant(&self, spec: &GrantSpec) -> anyhow::Result<()> {
        let b = Binding::parse(&spec.grant).map_err(|e| anyhow!(e))?;
        let subject = subject_of(&b, spec)?;
        let client = self.client().await?;
        let name = binding_name(spec.request_id);
        let role_ref = RoleRef {
            api_group: RBAC_GROUP.into(),
            kind: b.role_kind.into(),
            name: b.role.clone(),
        };
        let subjects = Some(vec![subject.clone()]);
        let created = match &b.namespace {
            None => Api::<ClusterRoleBinding>::all(client.clone())
                .create(
                    &PostParams::default(),
                    &ClusterRoleBinding {
                        metadata: Self::meta(spec),
                        role_ref: role_ref.clone(),
                        subjects: subjects.clone(),
                    },
                )
                .await
                .map(|_| ()),
            Some(ns) => Api::<RoleBinding>::namespaced(client.clone(), ns)
                .create(
                    &PostParams::default(),
                    &RoleBinding {
                        metadata: Self::meta(spec),
                        role_ref: role_ref.clone(),
                        subjects: subjects.clone(),
                    },
                )
                .await
                .map(|_| ()),
        };
        match created {
            Ok(()) => {}
            // A retried grant finds its own binding; anything else of that name is not ours.
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(e) => return Err(describe(e)),
        }
        // The receipt: the binding is there, this grant's, for this role and subject.
        let Some(now) = self.read(&client, &b, &name).await? else {
            bail!("binding {name} is not there after it was created");
        };
        if now.request.as_deref() != Some(&spec.request_id.to_string()) {
            bail!("a binding named {name} exists and is not this grant's; it was left alone");
        }
        let binds = |s: &Subject| s.kind == subject.kind && s.name == subject.name;
        if now.role_ref != role_ref || !now.subjects.iter().any(binds) {
            bail!(
                "binding {name} does not bind {} {} to {} {} as this grant asks",
                b.role_kind,
                b.role,
                subject.kind,
                subject.name
            );
        }
        Ok(())
    }

    async fn revoke(&self, spec: &GrantSpec) -> anyhow::Result<()> {
        let b = Binding::parse(&spec.grant).map_err(|e| anyhow!(e))?;
        let client = self.client().await?;
        let name = binding_name(spec.request_id);
        // Only our own binding is deleted: one of that name that is not this grant's stays.
        match self.read(&client, &b, &name).await? {
            None => return Ok(()),
            Some(now) if now.request.as_deref() != Some(&spec.request_id.to_string()) => {
                return Ok(());
            }
            Some(_) => {}
        }
        let deleted = match &b.namespace {
            None => Api::<ClusterRoleBinding>::all(client.clone())
                .delete(&name, &DeleteParams::default())
                .await
                .map(|_| ()),
            Some(ns) => Api::<RoleBinding>::namespaced(client.clone(), ns)
                .delete(&name, &DeleteParams::default())
                .await
                .map(|_| ()),
        };
        match deleted {
            Ok(()) => {}
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => return Err(describe(e)),
        }
        // The receipt: the binding is gone (one kept by a finalizer still grants).
        if self.read(&client, &b, &name).await?.is_some() {
            bail!("binding {name} is still there after it was deleted");
        }
        Ok(())
    }
}
