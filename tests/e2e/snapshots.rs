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
