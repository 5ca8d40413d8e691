//! Why a Slack call failed, in the classes the scheduler acts on: rate limits and server trouble
//! are retried, errors that retrying cannot fix are not.

use std::time::Duration;

use slack_morphism::errors::SlackClientError;

/// Wait after a 429 that names no `Retry-After`.
pub(super) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Slack error codes that mean "try again later". Every other `ok: false` code is about the
/// request itself (a channel that does not exist, blocks over a limit, a revoked token), so
/// sending it again would fail the same way.
const TRANSIENT_CODES: &[&str] = &[
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "ratelimited",
    "team_added_to_org",
];

/// Why a Slack call failed.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error("Slack {method}: rate limited, retry after {}s", retry_after.as_secs())]
    RateLimited {
        method: &'static str,
        retry_after: Duration,
    },
    #[error("Slack {method} is held back for {}s after a rate limit", wait.as_secs_f32().ceil())]
    HeldBack {
        method: &'static str,
        wait: Duration,
    },
    /// Retrying cannot help: `code` is Slack's error (`channel_not_found`) or `HTTP <status>`.
    #[error("Slack {method}: {code}")]
    Permanent { method: &'static str, code: String },
    #[error("Slack {method}: {detail}")]
    Transient {
        method: &'static str,
        detail: String,
    },
}

impl SlackError {
    /// The Slack error of an error chain, if it has one.
    pub fn find(error: &anyhow::Error) -> Option<&SlackError> {
        error.chain().find_map(|c| c.downcast_ref::<SlackError>())
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, SlackError::Permanent { .. })
    }

    /// How long to wait before the next try, when Slack (or our own hold) says.
    pub fn wait(&self) -> Option<Duration> {
        match self {
            SlackError::RateLimited { retry_after, .. } => Some(*retry_after),
            SlackError::HeldBack { wait, .. } => Some(*wait),
            _ => None,
        }
    }

    /// Errors about a channel: a note in that channel would fail too.
    pub fn is_about_the_channel(&self) -> bool {
        matches!(self, SlackError::Permanent { code, .. } if matches!(code.as_str(),
            "channel_not_found" | "not_in_channel" | "is_archived" | "restricted_action"
            | "invalid_auth" | "token_revoked" | "account_inactive" | "not_authed"))
    }

    /// The short code people and metrics see.
    pub fn code(&self) -> String {
        match self {
            SlackError::RateLimited { .. } | SlackError::HeldBack { .. } => "ratelimited".into(),
            SlackError::Permanent { code, .. } => code.clone(),
            SlackError::Transient { detail, .. } => detail.clone(),
        }
    }
}

pub(super) fn classify(method: &'static str, error: SlackClientError) -> SlackError {
    match error {
        SlackClientError::RateLimitError(limit) => SlackError::RateLimited {
            method,
            retry_after: limit.retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        },
        SlackClientError::ApiError(api) if TRANSIENT_CODES.contains(&api.code.as_str()) => {
            SlackError::Transient {
                method,
                detail: api.code,
            }
        }
        SlackClientError::ApiError(api) => SlackError::Permanent {
            method,
            code: api.code,
        },
        SlackClientError::HttpError(http)
            if http.status_code.is_server_error() || http.status_code.as_u16() == 408 =>
        {
            SlackError::Transient {
                method,
                detail: format!("HTTP {}", http.status_code.as_u16()),
            }
        }
        SlackClientError::HttpError(http) => SlackError::Permanent {
            method,
            code: format!("HTTP {}", http.status_code.as_u16()),
        },
        // connection refused or reset, a body that is not JSON: the call may be retried
        other => SlackError::Transient {
            method,
            detail: first_line(&other.to_string()),
        },
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}
