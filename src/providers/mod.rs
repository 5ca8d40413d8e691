//! Where access is granted and revoked. One file per kind behind [`Provider`]; both operations
//! are idempotent ("already granted" / "already gone" are successes).

#[cfg(feature = "aws")]
mod aws;
#[cfg(feature = "aws")]
pub mod aws_iam;
#[cfg(feature = "aws")]
pub mod aws_sso;
#[cfg(feature = "gcp")]
pub mod gcp_iam;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod postgres;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::Env;
use crate::domain::ProviderConfig;

/// Everything a provider may need to know about one grant.
#[derive(Clone, Debug)]
pub struct GrantSpec {
    pub request_id: i32,
    pub resource: String,
    pub requester: String,
    /// What the person is called at this provider (and, for webhooks, every known field).
    pub identity: BTreeMap<String, String>,
    /// The resource's `grant` shape, copied when the request was approved.
    pub grant: serde_json::Map<String, serde_json::Value>,
    pub approved_by: Vec<String>,
    pub auto_approved: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: String,
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// Does the identity already hold this access, given by someone other than jitbot? Checked
    /// once before the first grant, so the revoke can leave such access alone.
    async fn holds(&self, spec: &GrantSpec) -> anyhow::Result<bool>;
    /// What this grant gives at the target, when another grant may give the very same thing
    /// (one role named by two resources): such grants are counted, and only the last to end
    /// removes it. `None` where each grant is its own object at the target (a binding or an
    /// inline policy named after the request), or where the identity is not known yet.
    fn access_key(&self, _spec: &GrantSpec) -> Option<String> {
        None
    }
    /// Why this grant must never be made, if it must not: it would give the principal jitbot
    /// itself runs as at the target (or the target's own admin) more access. Asked by `serve`,
    /// `check` and each reload for the identities the policy names, and by each grant for the
    /// rest (an identity taken from a Slack profile's email).
    async fn refuses(&self, _spec: &GrantSpec) -> anyhow::Result<Option<String>> {
        Ok(None)
    }
    async fn grant(&self, spec: &GrantSpec) -> anyhow::Result<()>;
    async fn revoke(&self, spec: &GrantSpec) -> anyhow::Result<()>;
}

/// Deadline for a provider's TCP (and TLS) connection.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Builds providers from their configuration (a grant's stored copy) and keeps them, so each
/// PostgreSQL admin pool is opened once.
pub struct Providers {
    env: Env,
    http: reqwest::Client,
    built: Mutex<HashMap<String, Arc<dyn Provider>>>,
}

impl Providers {
    pub fn new(env: Env) -> anyhow::Result<Self> {
        crate::config::install_crypto_provider();
        // Only a 2xx from the URL itself counts: a redirect (to a login page, say) is not done.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(std::time::Duration::from_secs(
                crate::domain::policy::DEFAULT_PROVIDER_TIMEOUT_SECS,
            ))
            .user_agent(concat!("jitbot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            env,
            http,
            built: Mutex::new(HashMap::new()),
        })
    }

    /// The provider for a grant's stored config; `timeout` bounds each of its calls (the
    /// scheduler also holds every call to it).
    pub fn get(
        &self,
        config: &ProviderConfig,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Arc<dyn Provider>> {
        let key = serde_json::to_string(config)?;
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = built.get(&key) {
            return Ok(p.clone());
        }
        let provider: Arc<dyn Provider> = match config {
            ProviderConfig::Postgres { url_env } => {
                let url = self.env.require(url_env)?;
                Arc::new(postgres::PostgresProvider::new(url.expose(), timeout)?)
            }
            ProviderConfig::Webhook { url, secret_env } => {
                let secret = self.env.require(secret_env)?;
                Arc::new(webhook::WebhookProvider::new(
                    self.http.clone(),
                    url.clone(),
                    secret,
                    timeout,
                ))
            }
            #[cfg(feature = "kubernetes")]
            ProviderConfig::Kubernetes { kubeconfig_env } => {
                Arc::new(kubernetes::KubernetesProvider::new(
                    self.env.clone(),
                    kubeconfig_env.clone(),
                    timeout,
                ))
            }
            #[cfg(feature = "aws")]
            ProviderConfig::AwsIam {
                region,
                endpoint_url,
            } => Arc::new(aws_iam::AwsIamProvider::new(
                self.env.clone(),
                region.clone(),
                endpoint_url.clone(),
                timeout,
            )),
            #[cfg(feature = "aws")]
            ProviderConfig::AwsSso {
                region,
                endpoint_url,
                instance_arn,
                identity_store_id,
            } => Arc::new(aws_sso::AwsSsoProvider::new(
                self.env.clone(),
                region.clone(),
                endpoint_url.clone(),
                instance_arn.clone(),
                identity_store_id.clone(),
                timeout,
            )),
            #[cfg(not(feature = "aws"))]
            ProviderConfig::AwsIam { .. } | ProviderConfig::AwsSso { .. } => anyhow::bail!(
                "this jitbot was built without the `aws` feature; run a build with default features to grant and revoke this access"
            ),
            #[cfg(feature = "gcp")]
            ProviderConfig::GcpIam {
                credentials_env,
                endpoint_url,
            } => Arc::new(gcp_iam::GcpIamProvider::new(
                self.env.clone(),
                credentials_env.clone(),
                endpoint_url.clone(),
                timeout,
            )),
            #[cfg(not(feature = "gcp"))]
            ProviderConfig::GcpIam { .. } => anyhow::bail!(
                "this jitbot was built without the `gcp` feature; run a build with default features to grant and revoke this access"
            ),
            #[cfg(not(feature = "kubernetes"))]
            ProviderConfig::Kubernetes { .. } => anyhow::bail!(
                "this jitbot was built without the `kubernetes` feature; run a build with default features to grant and revoke this access"
            ),
        };
        built.insert(key, provider.clone());
        Ok(provider)
    }
}
