//! Whatever arrives, nothing panics: the slash-command and duration parsers, the signature check,
//! the interaction payload, Slack's form bodies, the policy loader and the text cutter, fed
//! arbitrary strings and bytes as well as near-valid shapes.
//!
//! CI runs proptest's default number of cases per target. For a long run:
//! `PROPTEST_CASES=2000000 cargo test --release --test fuzz` (cases per target).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use jitbot::domain::{Command, GrantDuration, Policy};
use jitbot::slack::blocks::{cut, escape};
use jitbot::slack::payload::{SlashCommand, parse_click};
use jitbot::slack::verify::{announced_length, sign, verify, verify_headers};
use proptest::prelude::*;

/// Strings that look like what people type after `/jit`.
fn command_like() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("request".to_string()),
        Just("approve".to_string()),
        Just("deny".to_string()),
        Just("revoke".to_string()),
        Just("extend".to_string()),
        Just("#".to_string()),
        "[a-z-]{0,12}",
        "[0-9]{0,25}[smhdSMHD]?",
        "#?-?[0-9]{1,40}",
        "\\PC{0,8}",
    ];
    prop::collection::vec(word, 0..8).prop_map(|w| w.join(" "))
}

proptest! {
    #[test]
    fn commands_never_panic(text in "\\PC{0,200}") {
        let _ = Command::parse(&text);
    }

    #[test]
    fn command_like_text_never_panics(text in command_like()) {
        let _ = Command::parse(&text);
    }

    #[test]
    fn durations_never_panic_and_what_parses_prints_back(text in "[0-9smhdSMHD +-]{0,30}") {
        if let Ok(d) = GrantDuration::parse(&text) {
            prop_assert_eq!(GrantDuration::parse(&d.to_string()).ok(), Some(d));
        }
    }

    #[test]
    fn signature_checks_never_panic(
        ts in prop_oneof!["-?[0-9]{0,25}", "\\PC{0,20}", Just(i64::MIN.to_string()), Just(i64::MAX.to_string())],
        sig in "\\PC{0,80}",
        body in prop::collection::vec(any::<u8>(), 0..300),
        now in any::<i64>(),
    ) {
        let _ = verify(b"secret", Some(&ts), Some(&sig), &body, now);
        // A correctly signed body whose timestamp is far from now is refused, however far.
        let signed = sign(b"secret", &ts, &body);
        if let Ok(t) = ts.trim().parse::<i64>() {
            let accepted = verify(b"secret", Some(&ts), Some(&signed), &body, now).is_ok();
            prop_assert_eq!(accepted, now.abs_diff(t) <= 300);
        }
    }

    #[test]
    fn arbitrary_headers_never_panic_and_only_a_good_signature_passes(
        headers in prop::collection::vec(
            (
                prop_oneof![
                    Just("x-slack-request-timestamp".to_string()),
                    Just("x-slack-signature".to_string()),
                    Just("content-length".to_string()),
                    "[a-z-]{1,20}",
                ],
                prop::collection::vec(any::<u8>(), 0..64),
            ),
            0..8,
        ),
        body in prop::collection::vec(any::<u8>(), 0..200),
        now in any::<i64>(),
    ) {
        let mut map = HeaderMap::new();
        for (name, value) in &headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                map.append(name, value);
            }
        }
        let _ = announced_length(&map);
        let accepted = verify_headers(b"secret", &map, &body, now).is_ok();
        // Accepted only when the first timestamp and signature headers sign this body within
        // five minutes of now.
        let first = |name: &str| map.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let expected = match (first("x-slack-request-timestamp"), first("x-slack-signature")) {
            (Some(ts), Some(sig)) => ts.trim().parse::<i64>().is_ok_and(|t| now.abs_diff(t) <= 300)
                && sig.trim() == sign(b"secret", &ts, &body),
            _ => false,
        };
        prop_assert_eq!(accepted, expected);
    }

    #[test]
    fn signed_headers_at_the_ends_of_time_are_refused(
        ts in prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(i64::MIN + 1), Just(i64::MAX - 1), any::<i64>()],
        body in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let now = 1_800_000_000_i64;
        let ts_text = ts.to_string();
        let mut map = HeaderMap::new();
        map.insert("x-slack-request-timestamp", HeaderValue::from_str(&ts_text).unwrap());
        map.insert("x-slack-signature", HeaderValue::from_str(&sign(b"secret", &ts_text, &body)).unwrap());
        prop_assert_eq!(verify_headers(b"secret", &map, &body, now).is_ok(), now.abs_diff(ts) <= 300);
    }

    #[test]
    fn interaction_payloads_never_panic(payload in "\\PC{0,300}") {
        let _ = parse_click(&payload);
    }

    #[test]
    fn interaction_shaped_json_never_panics(
        kind in prop_oneof![Just("block_actions".to_string()), "\\PC{0,12}"],
        user in prop_oneof![Just(serde_json::json!({"id": "U1"})), Just(serde_json::json!(null)), Just(serde_json::json!(7)), Just(serde_json::json!({}))],
        actions in prop::collection::vec(
            (prop_oneof![Just("jit_approve".to_string()), Just("jit_deny".to_string()), "\\PC{0,300}"], "\\PC{0,60}"),
            0..3,
        ),
    ) {
        let actions: Vec<_> = actions
            .into_iter()
            .map(|(id, value)| serde_json::json!({"action_id": id, "value": value}))
            .collect();
        let payload = serde_json::json!({"type": kind, "user": user, "channel": {"id": "C1"}, "actions": actions});
        let _ = parse_click(&payload.to_string());
    }

    #[test]
    fn slash_command_forms_never_panic(body in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = serde_urlencoded::from_bytes::<SlashCommand>(&body);
    }

    #[test]
    fn policies_never_panic(text in "\\PC{0,400}") {
        let _ = Policy::parse("fuzz.yaml", &text);
    }

    #[test]
    fn policy_shaped_yaml_never_panics(
        duration in "[0-9a-z]{0,6}",
        approvals in "-?[0-9]{0,12}|[a-z]{0,4}",
        channel in "[A-Z0-9#]{0,12}",
        kind in prop_oneof![Just("webhook"), Just("postgres"), Just("aws_iam"), Just("x")],
        concurrency in "-?[0-9]{0,12}",
        timeout in "[0-9a-z]{0,6}",
    ) {
        let text = format!(
            "settings: {{ request_ttl: {duration} }}\ngroups:\n  dba: {{ members: [U0A] }}\nproviders:\n  p: {{ kind: {kind}, url: \"http://x\", secret_env: S, url_env: U, concurrency: {concurrency}, timeout: {timeout} }}\n\
             resources:\n  r:\n    provider: p\n    max_duration: {duration}\n    channel: {channel}\n    approvers: [dba]\n    approvals: {approvals}\n"
        );
        let _ = Policy::parse("fuzz.yaml", &text);
    }

    #[test]
    fn cut_text_fits_and_never_panics(text in "\\PC{0,600}", max in 0usize..700) {
        let escaped = escape(&text);
        let out = cut(&escaped, max);
        prop_assert!(out.chars().count() <= max.max(1));
    }
}
