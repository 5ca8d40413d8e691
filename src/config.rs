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
    /// How long before its end a grant's requester is offered to extend it (`JIT_ENDING_SOON`).
    pub ending_soon: Duration,
    /// Most pending requests `/jit pending` and the Home tab read for one answer.
    pub pending_read_at_most: usize,
}

/// Default `JIT_ENDING_SOON`: ten minutes to finish, or to ask for more.
pub const DEFAULT_ENDING_SOON: Duration = Duration::from_secs(10 * 60);

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
            ending_soon: DEFAULT_ENDING_SOON,
            pending_read_at_most: crate::service::PENDING_READ_AT_MOST,
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
            ending_soon: match env.get("JIT_ENDING_SOON") {
                None => d.ending_soon,
                Some(text) => crate::domain::GrantDuration::parse(&text)
                    .map(|r| r.std())
                    .map_err(|e| UserError(format!("JIT_ENDING_SOON={text:?}: {e}")))?,
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
    /// `SLACK_APP_TOKEN` (`xapp-…`): when set, `serve` also takes Slack's payloads over Socket
    /// Mode.
    pub app_token: Option<Secret>,
    pub tuning: Tuning,
}

impl Config {
    /// Reads and checks every setting `serve` needs, before anything touches the database; a
    /// configuration with several problems names all of them (one line each).
    pub fn from_env(env: &Env) -> anyhow::Result<Config> {
        let mut problems: Vec<String> = Vec::new();
        let take = |name: &str| match env.secret(name) {
            Ok(value) => (value, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let mut secrets = Vec::new();
        for name in [
            "JIT_DATABASE_URL",
            "SLACK_SIGNING_SECRET",
            "SLACK_BOT_TOKEN",
            "SLACK_APP_TOKEN",
        ] {
            let (value, problem) = take(name);
            problems.extend(problem);
            secrets.push(value);
        }
        let mut secrets = secrets.into_iter();
        let database_url = secrets.next().flatten();
        let signing_secret = secrets.next().flatten();
        let bot_token = secrets.next().flatten();
        let app_token = secrets.next().flatten();
        if let Some(token) = &app_token
            && !token.expose().starts_with("xapp-")
        {
            problems.push(
                "SLACK_APP_TOKEN is not an app-level token: it must start with xapp- (Basic Information → App-Level Tokens, with the connections:write scope)".into(),
            );
        }
        if signing_secret.is_none() && !env.is_set("SLACK_SIGNING_SECRET") {
            problems.push(
                "environment variable SLACK_SIGNING_SECRET (or SLACK_SIGNING_SECRET_FILE) is not set: the Signing Secret from the Slack app's Basic Information".into(),
            );
        }
        match &bot_token {
            None if !env.is_set("SLACK_BOT_TOKEN") => problems.push(
                "environment variable SLACK_BOT_TOKEN (or SLACK_BOT_TOKEN_FILE) is not set: the app's Bot User OAuth Token (xoxb-…)".into(),
            ),
            Some(token) if !token.expose().starts_with("xoxb-") => problems.push(
                "SLACK_BOT_TOKEN is not a bot token: it must start with xoxb- (the Bot User OAuth Token, not a user or app token)".into(),
            ),
            _ => {}
        }
        let listen = listen_address(
            &env.get("JIT_LISTEN")
                .unwrap_or_else(|| DEFAULT_LISTEN.into()),
        )
        .unwrap_or_else(|e| {
            problems.push(e);
            String::new()
        });
        let slack_api_url = env
            .get("SLACK_API_URL")
            .unwrap_or_else(|| DEFAULT_SLACK_API_URL.into());
        match reqwest::Url::parse(&slack_api_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
            _ => problems.push(format!(
                "SLACK_API_URL={slack_api_url:?} is not an http(s) URL (default {DEFAULT_SLACK_API_URL})"
            )),
        }
        if let Err(e) = log_format(env) {
            problems.push(e);
        }
        let tuning = Tuning::from_env(env).unwrap_or_else(|e| {
            problems.push(e.to_string());
            Tuning::default()
        });
        match (signing_secret, bot_token) {
            (Some(signing_secret), Some(bot_token)) if problems.is_empty() => Ok(Config {
                database_url: database_url
                    .map(|s| s.0)
                    .unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
                policy: env
                    .get("JIT_POLICY")
                    .unwrap_or_else(|| DEFAULT_POLICY.into())
                    .into(),
                listen,
                signing_secret,
                bot_token,
                slack_api_url,
                team_id: env.get("SLACK_TEAM_ID"),
                app_token,
                tuning,
            }),
            _ => Err(UserError(problems.join("\n")).into()),
        }
    }
}

/// `JIT_LOG_FORMAT`: `text` (the default) or `json`; anything else is a mistake to report.
pub fn log_format(env: &Env) -> Result<LogFormat, String> {
    match env.get("JIT_LOG_FORMAT").as_deref() {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(format!(
            "JIT_LOG_FORMAT={other:?} is not a log format: use text (the default) or json"
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `JIT_LISTEN` as an address to bind: `host:port`, `[v6]:port`, or `:port` for every interface
/// (`:0` picks a free port, which the log names).
pub fn listen_address(text: &str) -> Result<String, String> {
    let text = text.trim();
    let full = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_string()
    };
    let port_ok = full
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if port_ok {
        Ok(full)
    } else {
        Err(format!(
            "JIT_LISTEN={text:?} is not an address to listen on: use host:port (127.0.0.1:3000), or :port for every interface"
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listen_address_may_leave_out_the_host() {
        assert_eq!(listen_address(":0").as_deref(), Ok("0.0.0.0:0"));
        assert_eq!(listen_address(":3000").as_deref(), Ok("0.0.0.0:3000"));
        assert_eq!(
            listen_address("127.0.0.1:3000").as_deref(),
            Ok("127.0.0.1:3000")
        );
        assert_eq!(listen_address("[::1]:3000").as_deref(), Ok("[::1]:3000"));
        for bad in ["", "3000", "host:", "host:99999", ":port"] {
            assert!(listen_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_secret_file_loses_its_trailing_newline_and_both_forms_are_refused() {
        let dir = std::env::temp_dir().join(format!("jit-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "xoxb-1\r\n").unwrap();
        let env = Env::with_overrides(HashMap::from([(
            "T_FILE".to_string(),
            file.display().to_string(),
        )]));
        assert_eq!(env.secret("T").unwrap().unwrap().expose(), "xoxb-1");
        std::fs::write(&file, "\n").unwrap();
        assert!(env.secret("T").is_err(), "an empty file is an error");
        let both = Env::with_overrides(HashMap::from([
            ("T".to_string(), "a".to_string()),
            ("T_FILE".to_string(), file.display().to_string()),
        ]));
        assert!(both.secret("T").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
