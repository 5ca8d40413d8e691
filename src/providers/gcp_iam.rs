//! GCP IAM, with Google's official client (Cloud Resource Manager v3) and Application Default
//! Credentials (a service-account key file, workload identity, the metadata server), or the key
//! file whose path is in the variable named by `credentials_env`.
//!
//! A grant is a conditional role binding on a project, folder or organization, titled after the
//! request (`jitbot-<id>`), with the condition `request.time < timestamp("<end>")`: the access
//! ends at the end even if jitbot is down (layer a); the revoke removes the binding (layer b).
//! Both are a read-modify-write of the whole policy at version 3 with its `etag`, redone when
//! someone else wrote in between (409 `ABORTED`); each write also sweeps jitbot's bindings whose
//! end has passed, so the policy does not grow without bound. Receipts: the policy is read back
//! after each write: the binding must be there after a grant and gone after a revoke. Each grant
//! has its own binding, so two grants of one role end independently, and bindings made outside
//! jitbot are never touched.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use google_cloud_gax::error::rpc::Code;
use google_cloud_iam_v1::model::{Binding, GetPolicyOptions, Policy};
use google_cloud_resourcemanager_v3::client::{Folders, Organizations, Projects};
use google_cloud_type::model::Expr;

use super::{GrantSpec, Provider};
use crate::config::Env;

/// Read-modify-write rounds before a run of conflicting writes is a failure (retried later).
const ROUNDS: usize = 5;
/// Titles of jitbot's bindings start with this.
const TITLE_PREFIX: &str = "jitbot-";

/// What a `gcp_iam` grant binds: a role on one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub role: String,
    /// `projects/<id>`, `folders/<id>` or `organizations/<id>`.
    pub resource: String,
}

const SHAPE: &str = "a gcp_iam grant is `{ role: roles/<name>, project: <id> }` (or `folder:` / `organization:` instead of `project:`)";

impl Target {
    pub fn parse(grant: &serde_json::Map<String, serde_json::Value>) -> Result<Target, String> {
        if let Some(other) = grant
            .keys()
            .find(|k| !matches!(k.as_str(), "role" | "project" | "folder" | "organization"))
        {
            return Err(format!("unknown key `{other}`; {SHAPE}"));
        }
        let text = |key: &str| {
            grant
                .get(key)
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("`{key}` must be a string; {SHAPE}"))
                })
                .transpose()
        };
        let role = text("role")?.ok_or_else(|| SHAPE.to_string())?;
        let custom = role.starts_with("projects/") || role.starts_with("organizations/");
        if !(role.starts_with("roles/") || custom && role.contains("/roles/"))
            || role.chars().any(char::is_whitespace)
        {
            return Err(format!(
                "`{role}` is not a role such as roles/viewer or projects/<id>/roles/<name>"
            ));
        }
        let places: Vec<(&str, String)> = [
            ("projects", text("project")?),
            ("folders", text("folder")?),
            ("organizations", text("organization")?),
        ]
        .into_iter()
        .filter_map(|(kind, id)| id.map(|id| (kind, id)))
        .collect();
        let [(kind, id)] = places.as_slice() else {
            return Err(format!(
                "name exactly one of project, folder, organization; {SHAPE}"
            ));
        };
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!("`{id}` is not a {} ID", kind.trim_end_matches('s')));
        }
        Ok(Target {
            role,
            resource: format!("{kind}/{id}"),
        })
    }
}

/// The person as an IAM member: `gcp_member` (`user:…`, `group:…`, `serviceAccount:…`), else
/// `user:<email>`.
fn member_of(spec: &GrantSpec) -> anyhow::Result<String> {
    if let Some(member) = spec.identity.get("gcp_member").filter(|m| !m.is_empty()) {
        let ok = [
            "user:",
            "group:",
            "serviceAccount:",
            "principal:",
            "principalSet:",
        ]
        .iter()
        .any(|p| member.starts_with(p));
        if !ok {
            bail!("gcp_member `{member}` needs a type, such as user:{member}");
        }
        return Ok(member.clone());
    }
    match spec.identity.get("email").filter(|e| e.contains('@')) {
        Some(email) => Ok(format!("user:{email}")),
        None => bail!(
            "{} has no GCP identity: add `gcp_member` (or `email`) under identities",
            spec.requester
        ),
    }
}

pub fn title(request_id: i32) -> String {
    format!("{TITLE_PREFIX}{request_id}")
}

/// The end in a jitbot condition (`request.time < timestamp("…")`), if it has one.
fn end_of(expression: &str) -> Option<DateTime<Utc>> {
    let inner = expression.split("timestamp(\"").nth(1)?.split('"').next()?;
    DateTime::parse_from_rfc3339(inner)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A binding of jitbot's whose end has passed: it grants nothing any more.
fn expired(binding: &Binding, now: DateTime<Utc>) -> bool {
    binding.condition.as_ref().is_some_and(|c| {
        c.title.starts_with(TITLE_PREFIX) && end_of(&c.expression).is_some_and(|end| end <= now)
    })
}

fn ours(binding: &Binding, request_id: i32) -> bool {
    binding
        .condition
        .as_ref()
        .is_some_and(|c| c.title == title(request_id))
}

fn describe(call: &str, e: &google_cloud_gax::error::Error) -> anyhow::Error {
    match (e.status(), e.http_status_code()) {
        (Some(s), _) => anyhow!("GCP {call}: {:?} ({})", s.code, s.message),
        (None, Some(code)) => anyhow!("GCP {call}: HTTP {code}"),
        (None, None) if e.is_timeout() => anyhow!("GCP {call}: no answer in time"),
        (None, None) => anyhow!("GCP {call}: {e}"),
    }
}

fn conflict(e: &google_cloud_gax::error::Error) -> bool {
    e.status().is_some_and(|s| s.code == Code::Aborted) || e.http_status_code() == Some(409)
}

#[derive(Clone)]
struct Clients {
    projects: Projects,
    folders: Folders,
    organizations: Organizations,
}

pub struct GcpIamProvider {
    env: Env,
    credentials_env: Option<String>,
    endpoint_url: Option<String>,
    timeout: Duration,
    clients: tokio::sync::OnceCell<Clients>,
    /// The service account jitbot runs as, once a source said (`None`: a person's credentials).
    me: tokio::sync::OnceCell<Option<String>>,
}

/// Where the metadata server is: `GCE_METADATA_HOST` (as Google's libraries read it), else its
/// well-known name.
const METADATA_HOST: &str = "metadata.google.internal";
/// How long the metadata server may take to say which service account jitbot runs as.
const METADATA_DEADLINE: Duration = Duration::from_secs(2);

impl GcpIamProvider {
    pub fn new(
        env: Env,
        credentials_env: Option<String>,
        endpoint_url: Option<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            env,
            credentials_env,
            endpoint_url,
            timeout,
            clients: tokio::sync::OnceCell::new(),
            me: tokio::sync::OnceCell::new(),
        }
    }

    /// The key file the provider names (`credentials_env`), read.
    fn key_file(&self) -> anyhow::Result<Option<(&str, serde_json::Value)>> {
        let Some(var) = &self.credentials_env else {
            return Ok(None);
        };
        let path = self.env.require(var)?;
        let text = std::fs::read(path.expose())
            .with_context(|| format!("reading the key file named by {var}"))?;
        let json: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("the key file named by {var} is not JSON"))?;
        Ok(Some((var, json)))
    }

    /// The service account jitbot runs as: the named key file's `client_email`, else that of
    /// Application Default Credentials' file (`GOOGLE_APPLICATION_CREDENTIALS`), else the
    /// metadata server's default account. `None` for a person's credentials, or when no source
    /// answers (then the GCP calls themselves fail, and are retried).
    async fn me(&self) -> anyhow::Result<Option<String>> {
        if let Some(me) = self.me.get() {
            return Ok(me.clone());
        }
        let from_file = |json: &serde_json::Value| {
            json.get("client_email")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        let found = if let Some((_, json)) = self.key_file()? {
            from_file(&json)
        } else if let Some(path) = self.env.get("GOOGLE_APPLICATION_CREDENTIALS") {
            let text = std::fs::read(&path)
                .with_context(|| format!("reading GOOGLE_APPLICATION_CREDENTIALS ({path})"))?;
            let json: serde_json::Value = serde_json::from_slice(&text)
                .context("GOOGLE_APPLICATION_CREDENTIALS does not name a JSON file")?;
            from_file(&json)
        } else {
            match self.metadata_email().await {
                Ok(email) => Some(email),
                Err(e) => {
                    tracing::debug!(
                        error = format!("{e:#}"),
                        "the metadata server did not say which service account jitbot runs as"
                    );
                    return Ok(None);
                }
            }
        };
        let _ = self.me.set(found.clone());
        Ok(found)
    }

    /// The metadata server's default service account (on GCE, GKE, Cloud Run).
    async fn metadata_email(&self) -> anyhow::Result<String> {
        let host = self
            .env
            .get("GCE_METADATA_HOST")
            .unwrap_or_else(|| METADATA_HOST.to_string());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(METADATA_DEADLINE)
            .build()?;
        let answer = http
            .get(format!(
                "http://{host}/computeMetadata/v1/instance/service-accounts/default/email"
            ))
            .header("Metadata-Flavor", "Google")
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!("the metadata server answered {}", answer.status());
        }
        let email = answer.text().await?.trim().to_string();
        if !email.contains('@') || email.len() > 320 {
            bail!("the metadata server's answer is not an email");
        }
        Ok(email)
    }

    fn credentials(&self) -> anyhow::Result<Option<google_cloud_auth::credentials::Credentials>> {
        let Some((var, json)) = self.key_file()? else {
            return Ok(None);
        };
        let credentials = match json.get("type").and_then(serde_json::Value::as_str) {
            Some("service_account") => {
                google_cloud_auth::credentials::service_account::Builder::new(json)
                    .build()
                    .map_err(|e| anyhow!("the service-account key named by {var}: {e}"))?
            }
            Some("authorized_user") => {
                google_cloud_auth::credentials::user_account::Builder::new(json)
                    .build()
                    .map_err(|e| anyhow!("the user credentials named by {var}: {e}"))?
            }
            other => bail!(
                "the key file named by {var} has type {other:?}; expected service_account or authorized_user"
            ),
        };
        Ok(Some(credentials))
    }

    async fn clients(&self) -> anyhow::Result<Clients> {
        let clients = self
            .clients
            .get_or_try_init(|| async {
                let credentials = self.credentials()?;
                macro_rules! build {
                    ($client:ty) => {{
                        let mut builder = <$client>::builder().with_attempt_timeout(self.timeout);
                        if let Some(url) = &self.endpoint_url {
                            builder = builder.with_endpoint(url);
                        }
                        // A redirect is not an answer: a 307 would resend a setIamPolicy to
                        // wherever it points, and a 2xx from there would read as done. (The
                        // switch is the library's own, not yet in its documented surface.)
                        builder = google_cloud_gax::client_builder::internal::with_follow_redirects(
                            builder, false,
                        );
                        if let Some(c) = &credentials {
                            builder = builder.with_credentials(c.clone());
                        }
                        builder
                            .build()
                            .await
                            .map_err(|e| anyhow!("building the GCP client: {e}"))?
                    }};
                }
                anyhow::Ok(Clients {
                    projects: build!(Projects),
                    folders: build!(Folders),
                    organizations: build!(Organizations),
                })
            })
            .await?;
        Ok(clients.clone())
    }

    async fn read(&self, c: &Clients, resource: &str) -> anyhow::Result<Policy> {
        let options = GetPolicyOptions::new().set_requested_policy_version(3);
        let answer = if resource.starts_with("projects/") {
            c.projects
                .get_iam_policy()
                .set_resource(resource)
                .set_options(options)
                .send()
                .await
        } else if resource.starts_with("folders/") {
            c.folders
                .get_iam_policy()
                .set_resource(resource)
                .set_options(options)
                .send()
                .await
        } else {
            c.organizations
                .get_iam_policy()
                .set_resource(resource)
                .set_options(options)
                .send()
                .await
        };
        answer.map_err(|e| describe("getIamPolicy", &e))
    }

    /// Writes `policy`; `Ok(false)` when someone else wrote first (a stale etag).
    async fn write(&self, c: &Clients, resource: &str, policy: Policy) -> anyhow::Result<bool> {
        let answer = if resource.starts_with("projects/") {
            c.projects
                .set_iam_policy()
                .set_resource(resource)
                .set_policy(policy)
                .send()
                .await
        } else if resource.starts_with("folders/") {
            c.folders
                .set_iam_policy()
                .set_resource(resource)
                .set_policy(policy)
                .send()
                .await
        } else {
            c.organizations
                .set_iam_policy()
                .set_resource(resource)
                .set_policy(policy)
                .send()
                .await
        };
        match answer {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(describe("setIamPolicy", &e)),
        }
    }

    /// Read, `change`, write at version 3 with the etag read; again when the etag went stale.
    /// `change` says whether there is anything to write.
    async fn modify(
        &self,
        c: &Clients,
        resource: &str,
        change: impl Fn(&mut Policy) -> bool,
    ) -> anyhow::Result<()> {
        for _ in 0..ROUNDS {
            let mut policy = self.read(c, resource).await?;
            if !change(&mut policy) {
                return Ok(());
            }
            policy.version = 3;
            if self.write(c, resource, policy).await? {
                return Ok(());
            }
        }
        bail!(
            "GCP setIamPolicy: the policy of {resource} kept changing under jitbot ({ROUNDS} tries); will try again"
        )
    }
}

#[async_trait]
impl Provider for GcpIamProvider {
    /// jitbot's binding is its own (titled after the request): access given otherwise is never
    /// touched, so there is nothing to leave alone.
    async fn holds(&self, _spec: &GrantSpec) -> anyhow::Result<bool> {
        Ok(false)
    }

    /// The service account jitbot runs as is never bound to anything.
    async fn refuses(&self, spec: &GrantSpec) -> anyhow::Result<Option<String>> {
        let member = member_of(spec)?;
        let Some(email) = member.strip_prefix("serviceAccount:") else {
            return Ok(None);
        };
        Ok(self
            .me()
            .await?
            .filter(|me| me.eq_ignore_ascii_case(email))
            .map(|me| format!("`{member}` is the service account jitbot itself runs as ({me})")))
    }

    async fn grant(&self, spec: &GrantSpec) -> anyhow::Result<()> {
        let target = Target::parse(&spec.grant).map_err(|e| anyhow!(e))?;
        let member = member_of(spec)?;
        if let Some(why) = self.refuses(spec).await? {
            bail!("refusing to grant: {why}");
        }
        let end = spec.expires_at.context("a grant without its end")?;
        let end_text = end.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let c = self.clients().await?;
        let id = spec.request_id;
        let binding = Binding::new()
            .set_role(target.role.clone())
            .set_members([member.clone()])
            .set_condition(
                Expr::new()
                    .set_title(title(id))
                    .set_description(format!(
                        "jitbot request #{id}: {} for {}, until {end_text}",
                        spec.resource, spec.requester
                    ))
                    .set_expression(format!("request.time < timestamp(\"{end_text}\")")),
            );
        self.modify(&c, &target.resource, |policy| {
            let now = Utc::now();
            policy.bindings.retain(|b| !ours(b, id) && !expired(b, now));
            policy.bindings.push(binding.clone());
            true
        })
        .await?;
        // The receipt.
        let policy = self.read(&c, &target.resource).await?;
        let there = policy
            .bindings
            .iter()
            .any(|b| ours(b, id) && b.role == target.role && b.members.contains(&member));
        if !there {
            bail!(
                "the binding of request #{id} is not in the policy of {} after it was written",
                target.resource
            );
        }
        Ok(())
    }

    async fn revoke(&self, spec: &GrantSpec) -> anyhow::Result<()> {
        let target = Target::parse(&spec.grant).map_err(|e| anyhow!(e))?;
        let c = self.clients().await?;
        let id = spec.request_id;
        self.modify(&c, &target.resource, |policy| {
            let now = Utc::now();
            let before = policy.bindings.len();
            policy.bindings.retain(|b| !ours(b, id) && !expired(b, now));
            policy.bindings.len() != before
        })
        .await?;
        // The receipt.
        let policy = self.read(&c, &target.resource).await?;
        if policy.bindings.iter().any(|b| ours(b, id)) {
            bail!(
                "the binding of request #{id} is still in the policy of {} after the revoke",
                target.resource
            );
        }
        Ok(())
    }
}
