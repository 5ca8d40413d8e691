//! `jitbot request`: a pipeline step that asks over the API and waits. Exit 0 once access is
//! active; 1 if the request is refused, denied, times out or fails, or the API cannot be
//! reached; 2 if jitbot answers with an error of its own. Progress goes to stderr, the request as
//! JSON to stdout (its `id` ends it early: `DELETE /api/v1/requests/{id}`).

use std::time::Duration;

use serde_json::{Value, json};

/// How long one long poll asks the server to hold the answer.
const POLL_WAIT_SECS: u64 = 30;
/// Connecting to the API.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Beyond the long poll itself, how long one call may take.
const CALL_SLACK: Duration = Duration::from_secs(15);
/// Transient failures (a restart, a proxy's 502) tolerated in a row while waiting.
const MAX_TRANSIENT: u32 = 10;

/// What to ask for.
pub struct Ask {
    /// The API's base URL, such as `https://jitbot.internal` (the `/api/v1` is added).
    pub url: String,
    pub token: String,
    pub resources: Vec<String>,
    pub duration: String,
    pub reason: String,
    /// Give up waiting (exit 1) after this long.
    pub timeout: Duration,
}

/// How `jitbot request` ends.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Access is active.
    Active,
    /// Refused, denied, failed, or still waiting at the timeout: exit 1.
    NotGranted,
    /// jitbot or the network broke: exit 2.
    Broken,
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Active => 0,
            Outcome::NotGranted => 1,
            Outcome::Broken => 2,
        }
    }
}

/// Asks, then follows the request until it is active or over.
pub async fn run(ask: Ask) -> anyhow::Result<Outcome> {
    let http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = format!("{}/api/v1/requests", ask.url.trim_end_matches('/'));
    let deadline = tokio::time::Instant::now() + ask.timeout;
    let mut body = json!({"duration": ask.duration, "wait": POLL_WAIT_SECS});
    if ask.resources.len() == 1 {
        body["resource"] = json!(ask.resources[0]);
    } else {
        body["resources"] = json!(ask.resources);
    }
    if !ask.reason.is_empty() {
        body["reason"] = json!(ask.reason);
    }
    let sent = http
        .post(&base)
        .bearer_auth(&ask.token)
        .timeout(Duration::from_secs(POLL_WAIT_SECS) + CALL_SLACK)
        .json(&body)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot reach jitbot at {base}: {}", transport(&e));
            return Ok(Outcome::NotGranted);
        }
    };
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let Ok(request) = serde_json::from_str::<Value>(&text) else {
        eprintln!(
            "error: jitbot at {base} answered HTTP {status} without JSON (is JIT_API_URL the jitbot server?)"
        );
        return Ok(if status >= 500 {
            Outcome::Broken
        } else {
            Outcome::NotGranted
        });
    };
    match status {
        201 | 202 => {}
        400..=499 => {
            eprintln!(
                "refused: {} ({})",
                request["message"].as_str().unwrap_or("no reason given"),
                request["code"].as_str().unwrap_or("?")
            );
            return Ok(Outcome::NotGranted);
        }
        _ => {
            eprintln!(
                "error: jitbot answered HTTP {status}: {}",
                request["message"].as_str().unwrap_or(&text)
            );
            return Ok(Outcome::Broken);
        }
    }
    let Some(id) = request["id"].as_i64() else {
        eprintln!("error: jitbot's answer names no request id");
        return Ok(Outcome::Broken);
    };
    if status == 202 {
        eprintln!("request #{id} is waiting for approval in Slack");
    } else {
        eprintln!("request #{id} is auto-approved by policy");
    }
    let mut request = request;
    let mut transient = 0;
    loop {
        let state = request["state"].as_str().unwrap_or("").to_string();
        let resources = request["resources"].as_array().cloned().unwrap_or_default();
        if request["active"].as_bool() == Some(true) {
            for r in &resources {
                eprintln!(
                    "access to {} is active until {}",
                    r["resource"].as_str().unwrap_or("?"),
                    r["expires_at"].as_str().unwrap_or("?")
                );
            }
            println!("{request}");
            return Ok(Outcome::Active);
        }
        // Settled: decided, and every grant done one way or the other.
        let settled = !resources.is_empty()
            && resources
                .iter()
                .all(|r| !matches!(r["state"].as_str(), Some("pending" | "approved")));
        if settled || (resources.is_empty() && request["final"].as_bool() == Some(true)) {
            let why = request["note"]
                .as_str()
                .map(|w| format!(": {w}"))
                .unwrap_or_default();
            eprintln!("request #{id} is {state}{why}; access is not active:");
            for r in &resources {
                eprintln!(
                    "  {}: {}{}",
                    r["resource"].as_str().unwrap_or("?"),
                    r["state"]
                        .as_str()
                        .unwrap_or("left out (already open in another request)"),
                    r["error"]
                        .as_str()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                );
            }
            println!("{request}");
            return Ok(Outcome::NotGranted);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            eprintln!(
                "request #{id} is still {state} after {}s; giving up waiting (it stays open: end it with DELETE {base}/{id})",
                ask.timeout.as_secs()
            );
            println!("{request}");
            return Ok(Outcome::NotGranted);
        }
        let wait = (deadline - now).as_secs().clamp(1, POLL_WAIT_SECS);
        let polled = http
            .get(format!("{base}/{id}?wait={wait}"))
            .bearer_auth(&ask.token)
            .timeout(Duration::from_secs(wait) + CALL_SLACK)
            .send()
            .await;
        let failure = match polled {
            Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                Ok(next) => {
                    if next["state"] != request["state"] {
                        eprintln!("request #{id} is {}", next["state"].as_str().unwrap_or("?"));
                    }
                    request = next;
                    transient = 0;
                    continue;
                }
                Err(e) => format!("an unreadable answer ({e})"),
            },
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                eprintln!(
                    "error: jitbot answered HTTP {status} about request #{id}: {}",
                    body["message"].as_str().unwrap_or("no reason given")
                );
                return Ok(Outcome::NotGranted);
            }
            Ok(r) => format!("HTTP {}", r.status().as_u16()),
            Err(e) => transport(&e),
        };
        transient += 1;
        if transient > MAX_TRANSIENT {
            eprintln!("error: lost jitbot while waiting for request #{id}: {failure}");
            return Ok(Outcome::Broken);
        }
        eprintln!("jitbot did not answer ({failure}); asking again");
        tokio::time::sleep(Duration::from_secs(u64::from(transient).min(5))).await;
    }
}

/// A transport error in words, without the URL's secrets (there are none in ours, but the
/// token travels in a header reqwest never prints).
fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        "the connection failed".into()
    }
}
