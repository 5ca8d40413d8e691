//! What the AWS providers (`aws_iam`, `aws_sso`) share: the SDK's configuration with its
//! credential chain, who that chain makes jitbot at AWS, and how an SDK error is told.

use std::time::Duration;

use anyhow::anyhow;
use aws_sdk_iam::error::ProvideErrorMetadata;

use crate::config::Env;

/// IAM is global; its endpoint is in us-east-1 unless the provider names a region.
const DEFAULT_REGION: &str = "us-east-1";

/// The SDK's configuration for one provider: its region and endpoint, a deadline per call, and
/// the credential chain. Keys in jitbot's own environment (or their `_FILE`s) come first, as they
/// do for the SDK; without them, the rest of the chain (profile, SSO, web identity, ECS, EC2).
async fn sdk_config(
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

/// The principal jitbot runs as at AWS, as STS `GetCallerIdentity` names it: no grant may ever
/// give it (or take from it) anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub account: String,
    pub arn: String,
}

impl Caller {
    /// The IAM user's name, when jitbot runs as an IAM user (`arn:aws:iam::<acct>:user/<path>/<name>`).
    pub fn user(&self) -> Option<&str> {
        let rest = self.arn.split_once(":user/")?.1;
        rest.rsplit('/').next().filter(|n| !n.is_empty())
    }

    /// The role's name and the session's, when jitbot runs as an assumed role
    /// (`arn:aws:sts::<acct>:assumed-role/<role>/<session>`).
    pub fn role(&self) -> Option<(&str, &str)> {
        let rest = self.arn.split_once(":assumed-role/")?.1;
        rest.split_once('/')
    }

    /// Is `arn` (a role ARN) the role jitbot runs as? Compared by account and name: a role
    /// session's ARN carries no path.
    pub fn is_role(&self, arn: &str) -> bool {
        let Some((role, _)) = self.role() else {
            return false;
        };
        let Some((head, rest)) = arn.split_once(":role/") else {
            return false;
        };
        head.rsplit(':').next() == Some(self.account.as_str())
            && rest.rsplit('/').next() == Some(role)
    }
}

/// What both AWS providers keep: where and how to reach AWS, the SDK's configuration (loaded
/// once, with its credential chain) and who that makes jitbot there (asked once).
pub(super) struct AwsBase {
    env: Env,
    region: Option<String>,
    endpoint_url: Option<String>,
    timeout: Duration,
    config: tokio::sync::OnceCell<aws_config::SdkConfig>,
    me: tokio::sync::OnceCell<Caller>,
}

impl AwsBase {
    pub(super) fn new(
        env: Env,
        region: Option<String>,
        endpoint_url: Option<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            env,
            region,
            endpoint_url,
            timeout,
            config: tokio::sync::OnceCell::new(),
            me: tokio::sync::OnceCell::new(),
        }
    }

    pub(super) async fn config(&self) -> anyhow::Result<&aws_config::SdkConfig> {
        self.config
            .get_or_try_init(|| {
                sdk_config(
                    &self.env,
                    self.region.as_deref(),
                    self.endpoint_url.as_deref(),
                    self.timeout,
                )
            })
            .await
    }

    /// The principal jitbot runs as, as STS says (asked once).
    pub(super) async fn me(&self) -> anyhow::Result<Caller> {
        let config = self.config().await?;
        let me = self.me.get_or_try_init(|| caller(config)).await?;
        Ok(me.clone())
    }
}

/// Asks STS who this configuration's credentials are.
async fn caller(config: &aws_config::SdkConfig) -> anyhow::Result<Caller> {
    let answer = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| describe("STS GetCallerIdentity", &e))?;
    match (answer.account(), answer.arn()) {
        (Some(account), Some(arn)) => Ok(Caller {
            account: account.to_string(),
            arn: arn.to_string(),
        }),
        _ => Err(anyhow!(
            "STS GetCallerIdentity: no account or ARN in the answer"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::Caller;

    #[test]
    fn a_caller_is_an_iam_user_or_an_assumed_role() {
        let user = Caller {
            account: "123456789012".into(),
            arn: "arn:aws:iam::123456789012:user/ops/jitbot".into(),
        };
        assert_eq!(user.user(), Some("jitbot"));
        assert_eq!(user.role(), None);
        assert!(!user.is_role("arn:aws:iam::123456789012:role/jitbot"));
        let role = Caller {
            account: "123456789012".into(),
            arn: "arn:aws:sts::123456789012:assumed-role/jitbot-bot/i-0abc".into(),
        };
        assert_eq!(role.user(), None);
        assert_eq!(role.role(), Some(("jitbot-bot", "i-0abc")));
        assert!(role.is_role("arn:aws:iam::123456789012:role/service/jitbot-bot"));
        assert!(!role.is_role("arn:aws:iam::999999999999:role/jitbot-bot"));
        assert!(!role.is_role("arn:aws:iam::123456789012:role/jitbot-bot-2"));
    }
}
