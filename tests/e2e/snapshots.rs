//! What people read, pinned: the approval card in its main states.

use chrono::{TimeZone, Utc};
use jitbot::domain::State;
use jitbot::slack::blocks::{CardView, Part, card};

fn view(state: State) -> CardView {
    CardView {
        id: 42,
        requester: "U0ALICE".into(),
        resource: "prod-db".into(),
        description: "Production PostgreSQL, read-write".into(),
        duration: "1h".into(),
        reason: "debugging INC-4312".into(),
        state,
        approvals_needed: 2,
        approved_by: vec![],
        decided_by: None,
        decided_at: None,
        expires_at: None,
        ended_at: None,
        auto_approved: false,
        note: None,
        parts: vec![],
        extends: None,
        extensions: vec![],
        at_target: jitbot::slack::texts::AtTarget::Confirmed,
    }
}

#[test]
fn the_pending_card() {
    let (text, blocks) = card(&view(State::Pending));
    insta::assert_snapshot!("pending_text", text);
    insta::assert_json_snapshot!("pending_blocks", blocks);
}

#[test]
fn the_card_halfway_through_two_approvals() {
    let mut v = view(State::Pending);
    v.approved_by = vec!["U0BOB".into()];
    insta::assert_snapshot!("one_of_two_text", card(&v).0);
}

#[test]
fn the_active_card() {
    let mut v = view(State::Active);
    v.approved_by = vec!["U0BOB".into(), "U0CAROL".into()];
    v.decided_at = Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).single();
    v.expires_at = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).single();
    let (text, blocks) = card(&v);
    insta::assert_snapshot!("active_text", text);
    insta::assert_json_snapshot!("active_blocks", blocks);
}

#[test]
fn the_denied_card() {
    let mut v = view(State::Denied);
    v.decided_by = Some("U0BOB".into());
    v.decided_at = Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).single();
    v.note = Some("not during the freeze".into());
    insta::assert_snapshot!("denied_text", card(&v).0);
}

#[test]
fn the_card_of_a_bundle_with_one_failed_grant() {
    let mut v = view(State::Active);
    v.resource = "incident (prod-db, billing-admin, wiki)".into();
    v.description = String::new();
    v.approved_by = vec!["U0BOB".into()];
    v.decided_at = Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).single();
    let ends = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).single();
    v.parts = vec![
        Part {
            id: Some(42),
            resource: "prod-db".into(),
            state: Some(State::Active),
            expires_at: ends,
            error: None,
        },
        Part {
            id: Some(43),
            resource: "billing-admin".into(),
            state: Some(State::GrantFailed),
            expires_at: None,
            error: Some("the webhook answered HTTP 500".into()),
        },
        Part {
            id: None,
            resource: "wiki".into(),
            state: None,
            expires_at: None,
            error: None,
        },
    ];
    insta::assert_json_snapshot!("bundle_blocks", card(&v).1);
}

/// Every DM and channel note, each with the inputs a real request would give it.
#[test]
fn every_dm_and_note() {
    use jitbot::domain::GrantDuration;
    use jitbot::slack::texts::*;
    let ends = Utc
        .with_ymd_and_hms(2026, 11, 24, 10, 0, 0)
        .single()
        .expect("a time");
    let approvers = vec!["U0BOB".to_string(), "U0CAROL".to_string()];
    let texts = [
        (
            "dm_approved",
            dm_approved(42, "prod-db", &approvers, false, ends),
        ),
        (
            "dm_approved (auto)",
            dm_approved(42, "prod-db", &[], true, ends),
        ),
        (
            "dm_denied",
            dm_denied(
                42,
                "prod-db",
                "U0BOB",
                Some("not during the <!channel> freeze"),
            ),
        ),
        (
            "dm_denied (no reason)",
            dm_denied(42, "prod-db", "U0BOB", None),
        ),
        ("dm_cancelled", dm_cancelled(42, "prod-db")),
        (
            "dm_policy_cancelled",
            dm_policy_cancelled(42, "prod-db", "prod-db is no longer in the policy"),
        ),
        (
            "dm_cancelled_after_approval",
            dm_cancelled_after_approval(42, "prod-db"),
        ),
        (
            "dm_card_failed",
            dm_card_failed(42, "prod-db", "C0REVIEW", "channel_not_found"),
        ),
        (
            "note_card_failed",
            note_card_failed(42, "prod-db", "U0ALICE", "invalid_blocks"),
        ),
        ("dm_timed_out", dm_timed_out(42, "prod-db", "2h")),
        ("dm_expired", dm_expired(42, "prod-db", AtTarget::Confirmed)),
        (
            "dm_expired_held_before",
            dm_expired(42, "prod-db", AtTarget::HeldBefore),
        ),
        (
            "dm_expired_still_held_by_another_grant",
            dm_expired(42, "prod-db", AtTarget::StillHeldBy(43)),
        ),
        (
            "dm_revoked (by someone)",
            dm_revoked(42, "prod-db", Some("U0BOB"), AtTarget::Confirmed),
        ),
        (
            "dm_revoked (by the requester)",
            dm_revoked(42, "prod-db", None, AtTarget::Confirmed),
        ),
        (
            "dm_grant_failed",
            dm_grant_failed(42, "prod-db", "the webhook answered HTTP 500"),
        ),
        (
            "note_grant_failed",
            note_grant_failed(42, "prod-db", "connection refused"),
        ),
        (
            "note_revoke_failed",
            note_revoke_failed(42, "prod-db", "connection refused"),
        ),
        ("dm_extended", dm_extended(42, "prod-db", "30m", 43)),
        (
            "break_glass_alert",
            break_glass_alert(42, "U0ALICE", "prod-db", "1h", "INC-99 payments down"),
        ),
        (
            "dm_ending_soon",
            dm_ending_soon(42, "prod-db", ends, GrantDuration::from_secs(3_600)),
        ),
        (
            "dm_ending_soon (at its maximum)",
            dm_ending_soon(42, "prod-db", ends, None),
        ),
    ];
    let all: Vec<String> = texts
        .iter()
        .map(|(name, text)| format!("{name}:\n{text}"))
        .collect();
    insta::assert_snapshot!("every_dm_and_note", all.join("\n\n"));
}

/// The buttons of DMs, the forms and the Home tab.
#[test]
fn buttons_forms_and_the_home_tab() {
    use jitbot::domain::GrantDuration;
    use jitbot::slack::home::{ForMe, MyGrant, MyWait, home_view};
    use jitbot::slack::modals::{deny_form, request_form};
    use jitbot::slack::texts::ending_soon_blocks;
    let ends = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).single();
    insta::assert_json_snapshot!(
        "ending_soon_blocks",
        ending_soon_blocks("ends soon", 42, GrantDuration::from_secs(1_800))
    );
    insta::assert_json_snapshot!(
        "deny_form",
        deny_form(42, "U0ALICE", "prod-db", "1h", "debugging INC-4312")
    );
    insta::assert_json_snapshot!(
        "request_form",
        request_form(
            &[
                ("prod-db".into(), "prod-db: Production PostgreSQL".into()),
                ("incident".into(), "incident (prod-db, wiki)".into()),
            ],
            1_000
        )
    );
    insta::assert_json_snapshot!(
        "home_tab",
        home_view(
            &[MyGrant {
                id: 41,
                what: "wiki".into(),
                state: "active".into(),
                ends,
            }],
            &[MyWait {
                id: 42,
                what: "prod-db".into(),
                duration: "1h".into(),
            }],
            &[ForMe {
                id: 43,
                requester: "U0BOB".into(),
                what: "billing-admin".into(),
                duration: "30m".into(),
                reason: "INC-7".into(),
                mine: true,
            }],
            true,
        )
    );
}

/// The weekly digest, with something of everything, problems first.
#[test]
fn the_weekly_digest() {
    use jitbot::slack::digest::{Digest, digest_message, digest_text};
    let d = Digest {
        from: Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single(),
        to: Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).single(),
        requests: 12,
        outcomes: vec![
            ("expired".into(), 6),
            ("denied".into(), 2),
            ("grant_failed".into(), 1),
            ("revoke_failed".into(), 1),
            ("timed_out".into(), 1),
            ("cancelled".into(), 1),
        ],
        decision_median: Some("4m".into()),
        decision_p95: Some("1h12m".into()),
        top_resources: vec![("prod-db".into(), 7), ("billing-admin".into(), 5)],
        top_requesters: vec![("U0ALICE".into(), 8), ("ci-deploy".into(), 4)],
        auto_approved: 4,
        self_approved: 1,
        break_glass: vec![(44, "U0ALICE".into(), "prod-db".into())],
        active_now: 2,
        escalations: vec![(48, vec!["U0DAVE".into()], "active by <@U0DAVE>".into())],
        problems: vec![
            "#45 *prod-db*: removing access is failing and being retried (connection refused)"
                .into(),
            "#46 *billing-admin*: the grant failed (the webhook answered HTTP 500)".into(),
            "a Slack message about #47 was refused for good: `channel_not_found` (post_card)"
                .into(),
        ],
        chain_ok: true,
        chain: "Audit chain verified: 212 links, head `3f5a0c1d2e4b6a7c`".into(),
    };
    insta::assert_snapshot!("digest_text", digest_text(&d));
    insta::assert_json_snapshot!("digest_blocks", digest_message(&d).1);
}
