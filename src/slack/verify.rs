//! Slack request signatures: `v0=` + hex HMAC-SHA256(secret, `v0:{timestamp}:{raw body}`).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Slack's own limit: a request older (or newer) than this is a replay.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing signature headers")]
    Missing,
    #[error("timestamp is not a number")]
    BadTimestamp,
    #[error("timestamp is more than five minutes away from now")]
    Stale,
    #[error("signature does not match")]
    Mismatch,
}

/// The `v0=…` signature of a body, as Slack computes it.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a request from Slack; `now` is Unix seconds. Comparison is constant-time.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(VerifyError::Missing);
    };
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::BadTimestamp)?;
    // `abs_diff`, not `(now - ts).abs()`: a timestamp far from now must not overflow (a panic in
    // a debug build, a wrap past the window in a release build).
    if now.abs_diff(ts) > MAX_CLOCK_SKEW_SECS as u64 {
        return Err(VerifyError::Stale);
    }
    let expected = sign(secret, timestamp, body);
    let equal: bool =
        subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), signature.trim().as_bytes()).into();
    if equal {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Header carrying the request's timestamp (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// Header carrying `v0=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-slack-signature";

/// Checks a request as it arrived: its headers (any bytes at all: a value that is not visible
/// ASCII counts as missing) and its raw body.
pub fn verify_headers(
    secret: &[u8],
    headers: &axum::http::HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    verify(
        secret,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        body,
        now,
    )
}

/// The body length a request announces, if it announces a readable one.
pub fn announced_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's published example ("Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_published_example_verifies() {
        assert_eq!(sign(SECRET.as_bytes(), TS, BODY.as_bytes()), SIG);
        assert_eq!(
            verify(
                SECRET.as_bytes(),
                Some(TS),
                Some(SIG),
                BODY.as_bytes(),
                1531420618 + 10
            ),
            Ok(())
        );
    }

    #[test]
    fn a_timestamp_at_the_ends_of_i64_is_stale_not_an_overflow() {
        let now = 1_800_000_000;
        for ts in [i64::MIN, i64::MAX, i64::MIN + now] {
            let ts = ts.to_string();
            let sig = sign(SECRET.as_bytes(), &ts, BODY.as_bytes());
            assert_eq!(
                verify(
                    SECRET.as_bytes(),
                    Some(&ts),
                    Some(&sig),
                    BODY.as_bytes(),
                    now
                ),
                Err(VerifyError::Stale),
                "{ts}"
            );
        }
    }

    #[test]
    fn tampering_staleness_and_absence_are_refused() {
        let now = 1531420618;
        let tampered = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            verify(
                SECRET.as_bytes(),
                Some(TS),
                Some(SIG),
                tampered.as_bytes(),
                now
            ),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(
                SECRET.as_bytes(),
                Some(TS),
                Some(SIG),
                BODY.as_bytes(),
                now + 301
            ),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(SECRET.as_bytes(), None, Some(SIG), BODY.as_bytes(), now),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            verify(
                SECRET.as_bytes(),
                Some("soon"),
                Some(SIG),
                BODY.as_bytes(),
                now
            ),
            Err(VerifyError::BadTimestamp)
        );
    }
}
