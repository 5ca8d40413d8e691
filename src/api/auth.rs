//! Who is calling the API, and whether they may call again yet: the bearer token is hashed and
//! matched against the policy's `clients:` (the token itself is never logged, stored or
//! counted), and each client has a token bucket of `requests_per_minute`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

/// Longest bearer token looked at; anything longer is not one of ours.
const MAX_TOKEN_BYTES: usize = 512;
/// Audit events for refused tokens: a steady rate and a burst, so a flood of bad tokens cannot
/// fill the audit trail (the metric still counts every one).
const UNAUTHORIZED_AUDITS_PER_SEC: f64 = 5.0;
const UNAUTHORIZED_AUDIT_BURST: f64 = 20.0;

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN_BYTES)
        .then_some(token)
}

/// Token buckets: one per client, and one for audit events of refused tokens.
pub struct Limiter {
    clients: Mutex<HashMap<String, Bucket>>,
    unauthorized: Mutex<Bucket>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Self {
        Self {
            tokens: capacity,
            at: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, capacity: f64, per_sec: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(capacity);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_sec))
        }
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl Limiter {
    pub fn new(now: Instant) -> Self {
        Self {
            clients: Mutex::new(HashMap::new()),
            unauthorized: Mutex::new(Bucket::full(UNAUTHORIZED_AUDIT_BURST, now)),
        }
    }

    /// One call of `client`, allowed `per_minute` a minute (a full minute's worth at once):
    /// `Err` holds how long until the next call is allowed.
    pub fn take(&self, client: &str, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(per_minute.max(1));
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(client.to_string())
            .or_insert_with(|| Bucket::full(capacity, now))
            .take(capacity, capacity / 60.0, now)
    }

    /// May a refused token be written to the audit trail now?
    pub fn audit_unauthorized(&self, now: Instant) -> bool {
        self.unauthorized
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(UNAUTHORIZED_AUDIT_BURST, UNAUTHORIZED_AUDITS_PER_SEC, now)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_client_gets_a_minute_of_calls_at_once_then_one_per_interval() {
        let t0 = Instant::now();
        let limiter = Limiter::new(t0);
        for _ in 0..3 {
            assert!(limiter.take("ci", 3, t0).is_ok());
        }
        let wait = limiter.take("ci", 3, t0).expect_err("over the rate");
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Another client has a bucket of its own.
        assert!(limiter.take("other", 3, t0).is_ok());
        assert!(limiter.take("ci", 3, t0 + Duration::from_secs(20)).is_ok());
        assert!(limiter.take("ci", 3, t0 + Duration::from_secs(20)).is_err());
    }

    #[test]
    fn only_a_bearer_header_names_a_token() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer", None),
        ] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&headers), token, "{value:?}");
        }
        let long = format!("Bearer {}", "x".repeat(MAX_TOKEN_BYTES + 1));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&long).expect("ascii"),
        );
        assert_eq!(bearer(&headers), None);
    }
}
