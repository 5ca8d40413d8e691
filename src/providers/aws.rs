//! What the AWS providers (`aws_iam`, `aws_sso`) share: the SDK's configuration with its
//! credential chain, and how an SDK error is told.

use std::time::Duration;

use anyhow::anyhow;
use aws_sdk_iam::error::ProvideErrorMetadata;

use crate::config::Env;

/// IAM is global; its endpoint is in us-east-1 unless the provider names a region.
const DEFAULT_REGION: &str = "us-east-1";

/// The SDK's configuration for one provider: its region and endpoint, a deadline per call, and
/// the credential chain. Keys in jitbot's own environment (or their `_FILE`s) come first, as they
/// do for the SDK; without them, the rest of the chain (profile, SSO, web identity, ECS, EC2).
pub(super) async fn sdk_config(
    env: &Env,
    region: Option<&str>,
    endpoint_url: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<aws_config::SdkConfig> {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(super::CONNECT_TIMEOUT)
        .operation_timeout(timeout)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(
            region.unwrap_or(DEFAULT_REGION).to_string(),
        ))
        .timeout_config(timeouts);
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let (Some(id), Some(secret)) = (
        env.secret("AWS_ACCESS_KEY_ID")?,
        env.secret("AWS_SECRET_ACCESS_KEY")?,
    ) {
        let token = env.secret("AWS_SESSION_TOKEN")?;
        loader = loader.credentials_provider(aws_sdk_iam::config::Credentials::new(
            id.expose(),
            secret.expose(),
            token.map(|t| t.expose().to_string()),
            None,
            "jitbot-environment",
        ));
    }
    Ok(loader.load().await)
}

/// The error an SDK call (`call`: service and action, "IAM PutUserPolicy") gave, with AWS's
/// code.
pub(super) fn describe<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    call: &str,
    e: &aws_sdk_iam::error::SdkError<E>,
) -> anyhow::Error {
    match e.as_service_error() {
        Some(s) if s.code().is_some() => anyhow!(
            "{call}: {} ({})",
            s.code().unwrap_or("error"),
            s.message().unwrap_or("no message")
        ),
        // An answer the SDK could not read as an IAM error: its status, and the code in it.
        Some(_) => {
            let raw = e.raw_response();
            let status = raw.map(|r| r.status().as_u16()).unwrap_or_default();
            let body = raw
                .and_then(|r| r.body().bytes())
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let code = body
                .split("<Code>")
                .nth(1)
                .and_then(|rest| rest.split("</Code>").next())
                .filter(|c| c.len() < 64 && c.chars().all(|ch| ch.is_ascii_alphanumeric()))
                .unwrap_or("no error code");
            anyhow!("{call}: HTTP {status} ({code})")
        }
        None => anyhow!("{call}: {}", aws_sdk_iam::error::DisplayErrorContext(e)),
    }
}
