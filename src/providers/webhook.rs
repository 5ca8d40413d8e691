//! A webhook: one signed JSON POST per grant and per revoke; any 2xx answer means done.

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{GrantSpec, Provider};
use crate::config::Secret;

/// The header carrying `sha256=<hex HMAC-SHA256 of the raw body>`.
pub const SIGNATURE_HEADER: &str = "X-Jit-Signature";

pub struct WebhookProvider {
    http: reqwest::Client,
    url: String,
    secret: Secret,
    timeout: std::time::Duration,
}

/// The `X-Jit-Signature` value for a body, as a receiver recomputes it.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The JSON body of one event.
pub fn event_body(event: &str, spec: &GrantSpec) -> serde_json::Value {
    let mut body = json!({
        "event": event,
        "request_id": spec.request_id,
        "resource": spec.resource,
        "requester": spec.requester,
        "identity": spec.identity,
        "grant": spec.grant,
        "approved_by": if spec.auto_approved { Vec::new() } else { spec.approved_by.clone() },
        "expires_at": spec.expires_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        "reason": spec.reason,
    });
    if spec.auto_approved {
        body["auto_approved"] = json!(true);
    }
    body
}

/// A transport failure in words for the people it is shown to (the channel, the requester):
/// what went wrong, not the HTTP stack's chain of causes, which goes to the log.
fn transport_error(e: &reqwest::Error, timeout: std::time::Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", timeout.as_secs_f32());
    }
    let chain = {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text.to_ascii_lowercase()
    };
    if chain.contains("dns error") || chain.contains("failed to lookup address") {
        "its host name could not be resolved".into()
    } else if chain.contains("connection refused") {
        "the connection was refused".into()
    } else if chain.contains("certificate") || chain.contains("tls") {
        "its TLS certificate was not accepted".into()
    } else if e.is_connect() {
        "it could not be reached".into()
    } else {
        "the call failed before an answer".into()
    }
}

impl WebhookProvider {
    /// `http` must not follow redirects (see [`super::Providers`]).
    pub fn new(
        http: reqwest::Client,
        url: String,
        secret: Secret,
        timeout: std::time::Duration,
    ) -> Self {
        Self {
            http,
            url,
            secret,
            timeout,
        }
    }

    async fn send(&self, event: &str, spec: &GrantSpec) -> anyhow::Result<()> {
        let body = serde_json::to_vec(&event_body(event, spec))?;
        let resp = self
            .http
            .post(&self.url)
            .timeout(self.timeout)
            .header("Content-Type", "application/json")
            .header(
                SIGNATURE_HEADER,
                signature(self.secret.expose().as_bytes(), &body),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| {
                // the URL may carry a token: keep it out of errors and logs
                let e = e.without_url();
                let plain = transport_error(&e, self.timeout);
                tracing::warn!(
                    event,
                    error = format!("{:#}", anyhow::Error::from(e)),
                    "webhook call failed"
                );
                anyhow::anyhow!("webhook {event}: {plain}")
            })?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            anyhow::bail!(
                "webhook {event}: HTTP {} (a redirect is not a confirmation; point the provider's url at the receiver itself)",
                status.as_u16()
            )
        } else {
            anyhow::bail!("webhook {event}: HTTP {}", status.as_u16())
        }
    }
}

#[async_trait]
impl Provider for WebhookProvider {
    async fn holds(&self, _spec: &GrantSpec) -> anyhow::Result<bool> {
        // A webhook cannot say; whatever the receiver did before is its own business.
        Ok(false)
    }

    async fn grant(&self, spec: &GrantSpec) -> anyhow::Result<()> {
        self.send("grant", spec).await
    }

    async fn revoke(&self, spec: &GrantSpec) -> anyhow::Result<()> {
        self.send("revoke", spec).await
    }
}
