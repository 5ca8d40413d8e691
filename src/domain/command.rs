//! The text after `/jit`, parsed into a [`Command`] or a [`CommandError`] whose message is the hint.

use super::duration::{DurationError, GrantDuration};

/// A request number as people see it: `#42`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub i64);

impl RequestId {
    /// Accepts `42` and `#42`.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.trim().trim_start_matches('#');
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i64>().ok().filter(|n| *n > 0).map(Self)
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Request {
        resource: String,
        duration: Option<GrantDuration>,
        reason: Option<String>,
    },
    List,
    Pending,
    Resources,
    Explain {
        resource: String,
    },
    Help,
    Approve {
        id: RequestId,
    },
    Deny {
        id: RequestId,
        reason: Option<String>,
    },
    Cancel {
        id: RequestId,
    },
    Revoke {
        id: RequestId,
    },
    Extend {
        id: RequestId,
        duration: GrantDuration,
    },
    /// The weekly digest of the current period, for operators.
    Digest,
}

/// The commands, for "did you mean".
const VERBS: [&str; 12] = [
    "request",
    "list",
    "pending",
    "approve",
    "deny",
    "cancel",
    "revoke",
    "extend",
    "resources",
    "explain",
    "help",
    "digest",
];

/// A command that could not be understood; `Display` is the one-line answer with a hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("Unknown command `{word}`.{} Try `/jit help`.", suggestion.map(|s| format!(" Did you mean `/jit {s}`?")).unwrap_or_default())]
    Unknown {
        word: String,
        suggestion: Option<&'static str>,
    },
    #[error("Usage: `{0}`")]
    Usage(&'static str),
    #[error("`{0}` is not a request number. Use the number shown on the card, like `42` or `#42`.")]
    BadId(String),
    #[error("{0}. Example: `/jit request prod-db 1h INC-4312`")]
    BadDuration(DurationError),
}

const REQUEST_USAGE: &str = "/jit request <resource> [duration] [reason…]";

fn rest_as_reason(words: &[&str]) -> Option<String> {
    let reason = words.join(" ");
    let reason = reason.trim();
    (!reason.is_empty()).then(|| reason.to_string())
}

/// Does this word look like an attempt at a duration (starts with a digit or `-digit`)?
fn looks_like_duration(word: &str) -> bool {
    let w = word.strip_prefix('-').unwrap_or(word);
    w.chars().next().is_some_and(|c| c.is_ascii_digit())
}

fn parse_id(word: Option<&&str>, usage: &'static str) -> Result<RequestId, CommandError> {
    let word = word.ok_or(CommandError::Usage(usage))?;
    RequestId::parse(word).ok_or_else(|| CommandError::BadId((*word).to_string()))
}

impl Command {
    pub fn parse(text: &str) -> Result<Self, CommandError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let Some((verb, args)) = words.split_first() else {
            return Ok(Command::Help);
        };
        match verb.to_ascii_lowercase().as_str() {
            "request" | "req" => {
                let resource = args.first().ok_or(CommandError::Usage(REQUEST_USAGE))?;
                let rest = &args[1..];
                let (duration, reason_words) = match rest.first() {
                    Some(word) if looks_like_duration(word) => (
                        Some(GrantDuration::parse(word).map_err(CommandError::BadDuration)?),
                        &rest[1..],
                    ),
                    _ => (None, rest),
                };
                Ok(Command::Request {
                    resource: (*resource).to_string(),
                    duration,
                    reason: rest_as_reason(reason_words),
                })
            }
            "list" | "ls" => Ok(Command::List),
            "pending" => Ok(Command::Pending),
            "resources" => Ok(Command::Resources),
            "explain" => match args.first() {
                Some(resource) => Ok(Command::Explain {
                    resource: (*resource).to_string(),
                }),
                None => Err(CommandError::Usage("/jit explain <resource>")),
            },
            "help" => Ok(Command::Help),
            "digest" => Ok(Command::Digest),
            "approve" => Ok(Command::Approve {
                id: parse_id(args.first(), "/jit approve <id>")?,
            }),
            "deny" => Ok(Command::Deny {
                id: parse_id(args.first(), "/jit deny <id> [reason…]")?,
                reason: rest_as_reason(args.get(1..).unwrap_or_default()),
            }),
            "cancel" => Ok(Command::Cancel {
                id: parse_id(args.first(), "/jit cancel <id>")?,
            }),
            "revoke" => Ok(Command::Revoke {
                id: parse_id(args.first(), "/jit revoke <id>")?,
            }),
            "extend" => {
                let id = parse_id(args.first(), "/jit extend <id> <duration>")?;
                let duration = args
                    .get(1)
                    .ok_or(CommandError::Usage("/jit extend <id> <duration>"))?;
                let duration = GrantDuration::parse(duration).map_err(CommandError::BadDuration)?;
                Ok(Command::Extend { id, duration })
            }
            other => Err(CommandError::Unknown {
                word: other.chars().take(40).collect(),
                suggestion: crate::domain::Policy::closest(
                    &other.to_lowercase(),
                    VERBS.iter().copied(),
                ),
            }),
        }
    }
}

/// The answer to `/jit help`.
pub const HELP: &str = "\
*jitbot*: just-in-time access.
• `/jit request <resource> [duration] [reason…]`: ask for access, e.g. `/jit request prod-db 1h INC-4312`; several at once with `prod-db,billing-admin` or a bundle's name
• `/jit list`: your requests and grants
• `/jit pending`: requests you can approve
• `/jit resources`: what you can ask for
• `/jit explain <resource>`: limits and approvers of one resource
• `/jit approve <id>` · `/jit deny <id> [reason…]`: decide a request
• `/jit cancel <id>`: withdraw your pending request
• `/jit revoke <id>`: end a grant early
• `/jit extend <id> <duration>`: more time on your active access (approved like a request, within the resource's maximum)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_request_parses() {
        assert_eq!(
            Command::parse("request prod-db 1h debugging INC-4312").unwrap(),
            Command::Request {
                resource: "prod-db".into(),
                duration: GrantDuration::from_secs(3600),
                reason: Some("debugging INC-4312".into()),
            }
        );
    }

    #[test]
    fn a_request_without_duration_keeps_the_reason() {
        assert_eq!(
            Command::parse("request prod-db looking at locks").unwrap(),
            Command::Request {
                resource: "prod-db".into(),
                duration: None,
                reason: Some("looking at locks".into()),
            }
        );
    }

    #[test]
    fn bad_input_gets_a_hint() {
        assert!(matches!(
            Command::parse("request prod-db 0h x"),
            Err(CommandError::BadDuration(DurationError::Zero))
        ));
        assert!(matches!(
            Command::parse("request prod-db -1h x"),
            Err(CommandError::BadDuration(_))
        ));
        assert!(matches!(
            Command::parse("request"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            Command::parse("approve abc"),
            Err(CommandError::BadId(_))
        ));
        assert!(matches!(
            Command::parse("frobnicate"),
            Err(CommandError::Unknown {
                suggestion: None,
                ..
            })
        ));
        let typo = Command::parse("reqest prod-db 1h").unwrap_err();
        assert_eq!(
            typo.to_string(),
            "Unknown command `reqest`. Did you mean `/jit request`? Try `/jit help`."
        );
        assert!(
            Command::parse("pendng")
                .unwrap_err()
                .to_string()
                .contains("`/jit pending`")
        );
        assert_eq!(Command::parse("").unwrap(), Command::Help);
    }

    #[test]
    fn ids_take_both_spellings() {
        assert_eq!(RequestId::parse("#42"), Some(RequestId(42)));
        assert_eq!(RequestId::parse("42"), Some(RequestId(42)));
        assert_eq!(RequestId::parse("#"), None);
        assert_eq!(RequestId::parse("0"), None);
        assert_eq!(RequestId::parse("99999999999999999999"), None);
    }
}
