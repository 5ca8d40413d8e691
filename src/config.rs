//! Configuration from the environment, secrets that never print, and process-wide setup.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use crate::http::serve::EdgeLimits;

/// A secret value: `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An error the operator must fix (bad config, missing variable, unreachable database): the
/// binary exits 1 with one line on stderr.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// Environment variables, with overrides (the demo and tests name their own variables without
/// touching the process environment).
#[derive(Clone, Default)]
pub struct Env {
    overrides: Arc<HashMap<String, String>>,
}

impl Env {
    pub fn with_overrides(overrides: HashMap<String, String>) -> Self {
        Self {
            overrides: Arc::new(overrides),
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.overrides
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .filter(|v| !v.is_empty())
    }

    /// A secret from `name`, or from the file `name_FILE` names (Docker and Kubernetes secrets);
    /// `None` when neither is set. Setting both is an error, as is a file that cannot be read or
    /// is empty. The value never appears in an error.
    pub fn secret(&self, name: &str) -> anyhow::Result<Option<Secret>> {
        let file_var = format!("{name}_FILE");
        match (self.get(name), self.get(&file_var)) {
            (Some(_), Some(_)) => Err(UserError(format!(
                "both {name} and {file_var} are set; set only one of them"
            ))
            .into()),
            (Some(value), None) => Ok(Some(Secret(value))),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    UserError(format!("{file_var}: cannot read {path}: {}", e.kind()))
                })?;
                // Files written by editors and `echo` end with a newline; the secret does not.
                let value = text.trim_end_matches(['\n', '\r']);
                if value.is_empty() {
                    return Err(UserError(format!("{file_var}: {path} is empty")).into());
                }
                Ok(Some(Secret(value.to_string())))
            }
            (None, None) => Ok(None),
        }
    }

    /// Is `name` (or its `_FILE` twin) set?
    pub fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some() || self.get(&format!("{name}_FILE")).is_some()
    }

    /// A secret that must be set (directly or through `name_FILE`).
    pub fn require(&self, name: &str) -> anyhow::Result<Secret> {
        self.secret(name)?.ok_or_else(|| {
            UserError(format!(
                "environment variable {name} (or {name}_FILE) is not set"
            ))
            .into()
        })
    }

    /// A whole number from `name`, or `default` when unset; a value that is not one (or is out
    /// of `range`) is an error the operator must fix, never silently ignored.
    pub fn number(
        &self,
        name: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> anyhow::Result<u64> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        match text.trim().parse::<u64>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(UserError(format!(
                "{name}={text:?} is not a whole number from {} to {}",
                range.start(),
                range.end()
            ))
            .into()),
        }
    }
}

/// Timings and limits that have good defaults; tests and the demo shorten some.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// First retry delay of a failed job (`JIT_RETRY_BASE_MS`).
    pub retry_base: Duration,
    /// Deadline of one Slack Web API call (`JIT_SLACK_TIMEOUT_MS`).
    pub slack_timeout: Duration,
    /// Deadlines and the connection cap of the HTTP edge (`JIT_MAX_CONNECTIONS`).
    pub edge: EdgeLimits,
    /// Gap between posts to one Slack channel once its burst is spent.
    pub post_interval: Duration,
    /// Posts a quiet channel takes at once.
    pub post_burst: u32,
    /// How long a finished job is kept (`JIT_JOB_RETENTION`); the audit trail is kept for ever.
    pub job_retention: Duration,
}

/// Default `JIT_JOB_RETENTION`: a week of finished jobs to look at when something went wrong.
pub const DEFAULT_JOB_RETENTION: Duration = Duration::from_secs(7 * 24 * 3_600);

impl Default for Tuning {
    fn default() -> Self {
        Self {
            retry_base: crate::scheduler::BACKOFF_START,
            slack_timeout: crate::slack::client::DEFAULT_CALL_TIMEOUT,
            edge: EdgeLimits::default(),
            post_interval: crate::scheduler::pace::POST_INTERVAL,
            post_burst: crate::scheduler::pace::POST_BURST,
            job_retention: DEFAULT_JOB_RETENTION,
        }
    }
}

impl Tuning {
    pub fn from_env(env: &Env) -> anyhow::Result<Tuning> {
        let d = Tuning::default();
        Ok(Tuning {
            retry_base: Duration::from_millis(env.number(
                "JIT_RETRY_BASE_MS",
                d.retry_base.as_millis() as u64,
                1..=600_000,
            )?),
            slack_timeout: Duration::from_millis(env.number(
                "JIT_SLACK_TIMEOUT_MS",
                d.slack_timeout.as_millis() as u64,
                100..=120_000,
            )?),
            edge: EdgeLimits {
                max_connections: env.number(
                    "JIT_MAX_CONNECTIONS",
                    d.edge.max_connections as u64,
                    1..=100_000,
                )? as usize,
                ..d.edge
            },
            job_retention: match env.get("JIT_JOB_RETENTION") {
                None => d.job_retention,
                Some(text) => crate::domain::GrantDuration::parse(&text)
                    .map(|r| r.std())
                    .map_err(|e| UserError(format!("JIT_JOB_RETENTION={text:?}: {e}")))?,
            },
            ..d
        })
    }
}

/// Default `JIT_DATABASE_URL`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://jitbot.db?mode=rwc";
/// Default `JIT_POLICY`.
pub const DEFAULT_POLICY: &str = "manifest/policy.yaml";
/// Default `JIT_LISTEN`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
/// Default `SLACK_API_URL`.
pub const DEFAULT_SLACK_API_URL: &str = "https://slack.com/api/";

/// What `serve` needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub policy: PathBuf,
    pub listen: String,
    pub signing_secret: Secret,
    pub bot_token: Secret,
    pub slack_api_url: String,
    /// `SLACK_TEAM_ID`: the one workspace (`T…`) or Enterprise Grid org (`E…`) served; when
    /// unset, the team `auth.test` names at start.
    pub team_id: Option<String>,
    pub tuning: Tuning,
}

impl Config {
    pub fn from_env(env: &Env) -> anyhow::Result<Config> {
        Ok(Config {
            database_url: env
                .secret("JIT_DATABASE_URL")?
                .map(|s| s.0)
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            policy: env
                .get("JIT_POLICY")
                .unwrap_or_else(|| DEFAULT_POLICY.into())
                .into(),
            listen: env
                .get("JIT_LISTEN")
                .unwrap_or_else(|| DEFAULT_LISTEN.into()),
            signing_secret: env.require("SLACK_SIGNING_SECRET")?,
            bot_token: env.require("SLACK_BOT_TOKEN")?,
            slack_api_url: env
                .get("SLACK_API_URL")
                .unwrap_or_else(|| DEFAULT_SLACK_API_URL.into()),
            team_id: env.get("SLACK_TEAM_ID"),
            tuning: Tuning::from_env(env)?,
        })
    }
}

/// reqwest (aws-lc-rs) and slack-morphism's hyper-rustls both link rustls: pick one provider
/// before either builds a TLS config, or rustls panics.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}
