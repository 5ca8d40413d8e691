//! Who may decide, how many must, and what each decision does.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn a_requester_cannot_approve_their_own_request_and_a_stranger_cannot_either() {
    let (app, hook) = spawn_hook_app(Backend::Sqlite).await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.click(ALICE, APPROVE, id).await;
    app.wait_ephemeral(ALICE, "your own request").await;
    app.click(MALLORY, APPROVE, id).await;
    app.wait_ephemeral(MALLORY, "not an approver").await;
    app.click(MALLORY, DENY, id).await;
    app.wait_ephemeral(MALLORY, "not an approver").await;
    // The command counts exactly like the button.
    let answer = app.say(ALICE, &format!("approve #{id}")).await;
    assert!(answer.contains("your own request"), "{answer}");
    assert_eq!(app.state(id).await, "pending");
    let refused = app
        .audit_actions(id)
        .await
        .iter()
        .filter(|a| *a == "decision_refused")
        .count();
    assert_eq!(refused, 4, "each refused click is audited");
    assert!(hook.events().is_empty());
    assert!(
        app.slack.calls_to("chat.update").is_empty(),
        "a refused click changed the card"
    );
    app.finish().await;
}

#[tokio::test]
async fn self_approval_counts_where_the_resource_allows_it() {
    let (app, hook) = spawn_hook_app(Backend::Sqlite).await;
    let id = TestApp::id_in(&app.say(ALICE, "request self-serve 1h docs").await);
    app.click(ALICE, APPROVE, id).await;
    app.wait_state(id, "active").await;
    hook.wait_for("grant", 1, WAIT).await.unwrap();
    app.finish().await;
}

#[tokio::test]
async fn two_approvals_need_two_different_people() {
    let (app, hook) = spawn_hook_app(Backend::Postgres).await;
    let id = TestApp::id_in(&app.say(ALICE, "request two-keys 1h rotation").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_card_update("1 of 2").await;
    // Bob again, by button and by command: counted once.
    app.click(BOB, APPROVE, id).await;
    app.wait_ephemeral(BOB, "already approved").await;
    assert!(
        app.say(BOB, &format!("approve {id}"))
            .await
            .contains("already approved")
    );
    assert_eq!(app.state(id).await, "pending");
    assert!(hook.events().is_empty());
    let answer = app.say(CAROL, &format!("approve #{id}")).await;
    assert!(answer.contains("approved"), "{answer}");
    app.wait_state(id, "active").await;
    let grants = hook.wait_for("grant", 1, WAIT).await.unwrap();
    let mut approvers: Vec<String> =
        serde_json::from_value(grants[0].body["approved_by"].clone()).unwrap();
    approvers.sort();
    assert_eq!(approvers, vec![BOB.to_string(), CAROL.to_string()]);
    app.finish().await;
}

async fn fifty_clicks(backend: Backend) {
    let (app, hook) = spawn_hook_app(backend).await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h race").await);
    let app = Arc::new(app);
    let mut clicks = Vec::new();
    for i in 0..50 {
        let app = app.clone();
        let user = if i % 2 == 0 { BOB } else { CAROL };
        clicks.push(tokio::spawn(async move {
            app.sender
                .click(user, APPROVE, &id.to_string())
                .await
                .unwrap()
                .status
        }));
    }
    for click in clicks {
        assert_eq!(click.await.unwrap(), 200);
    }
    app.wait_state(id, "active").await;
    hook.wait_for("grant", 1, WAIT).await.unwrap();
    // Give any second grant time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hook.events_of("grant").len(),
        1,
        "exactly one grant reaches the provider"
    );
    let approved = app
        .audit_actions(id)
        .await
        .iter()
        .filter(|a| *a == "approved")
        .count();
    assert_eq!(approved, 1);
    let decisions = app.store.decisions(id).await.unwrap();
    // At most one decision per person (Carol's clicks may all have come after Bob's won).
    let mut people: Vec<&str> = decisions.iter().map(|d| d.approver.as_str()).collect();
    people.sort();
    people.dedup();
    assert_eq!(
        people.len(),
        decisions.len(),
        "one decision per person: {decisions:?}"
    );
    assert!(!decisions.is_empty());
    match Arc::try_unwrap(app) {
        Ok(app) => app.finish().await,
        Err(_) => panic!("app still shared"),
    }
}

#[tokio::test]
async fn fifty_simultaneous_clicks_make_one_grant_on_sqlite() {
    fifty_clicks(Backend::Sqlite).await;
}

#[tokio::test]
async fn fifty_simultaneous_clicks_make_one_grant_on_postgres() {
    fifty_clicks(Backend::Postgres).await;
}

#[tokio::test]
async fn a_deny_ends_the_request_and_tells_the_requester() {
    let (app, hook) = spawn_hook_app(Backend::Sqlite).await;
    let id = TestApp::id_in(&app.say(ALICE, "request two-keys 1h x").await);
    app.click(BOB, APPROVE, id).await;
    app.click(CAROL, DENY, id).await;
    app.wait_state(id, "denied").await;
    let card = app.wait_card_update("Denied by").await;
    assert!(card.body.to_string().contains(&format!("<@{CAROL}>")));
    assert!(!has_buttons(&card));
    app.wait_dm(ALICE, "was denied").await;
    // The denial closes the request: a new one may be made.
    assert!(
        app.say(ALICE, "request two-keys 1h again")
            .await
            .contains("waiting for approval")
    );
    assert!(hook.events().is_empty());
    // A deny with a reason by command.
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h y").await);
    assert!(
        app.say(BOB, &format!("deny {id} not during the freeze"))
            .await
            .contains("denied")
    );
    app.wait_dm(ALICE, "not during the freeze").await;
    app.finish().await;
}

#[tokio::test]
async fn a_requester_can_cancel_only_their_own_pending_request() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    assert!(
        app.say(BOB, &format!("cancel {id}"))
            .await
            .contains("not yours")
    );
    assert!(
        app.say(ALICE, &format!("cancel #{id}"))
            .await
            .contains("cancelled")
    );
    app.wait_state(id, "cancelled").await;
    app.wait_card_update("Cancelled").await;
    app.wait_dm(ALICE, "cancelled").await;
    assert!(
        app.say(ALICE, &format!("cancel {id}"))
            .await
            .contains("only a pending or approved request")
    );
    app.click(BOB, APPROVE, id).await;
    app.wait_ephemeral(BOB, "already cancelled").await;
    app.finish().await;
}

#[tokio::test]
async fn revoke_ends_a_grant_early() {
    let (app, hook) = spawn_hook_app(Backend::Sqlite).await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    assert!(
        app.say(MALLORY, &format!("revoke {id}"))
            .await
            .contains("Only the requester, an approver")
    );
    assert!(
        app.say(ALICE, &format!("revoke {id}"))
            .await
            .contains("not active")
    );
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    assert!(
        app.say(CAROL, &format!("revoke {id}"))
            .await
            .contains("being revoked")
    );
    app.wait_state(id, "revoked").await;
    let revokes = hook.wait_for("revoke", 1, WAIT).await.unwrap();
    assert_eq!(revokes[0].body["request_id"], id);
    app.wait_dm(ALICE, "was revoked").await;
    app.wait_card_update("revoked early").await;
    app.finish().await;
}

#[tokio::test]
async fn auto_approval_grants_without_a_click_and_the_card_says_so() {
    let (app, hook) = spawn_hook_app(Backend::Sqlite).await;
    let answer = app.say(ALICE, "request ci-deploy 10m release").await;
    assert!(answer.contains("auto-approved"), "{answer}");
    let id = TestApp::id_in(&answer);
    app.wait_state(id, "active").await;
    let grants = hook.wait_for("grant", 1, WAIT).await.unwrap();
    assert_eq!(grants[0].body["auto_approved"], true);
    assert_eq!(grants[0].body["approved_by"], serde_json::json!([]));
    app.wait_calls("an auto-approved card", |calls| {
        calls
            .iter()
            .any(|c| c.body.to_string().contains("Auto-approved by policy"))
    })
    .await;
    // Over the rule's limit it waits for a person.
    assert!(
        app.say(BOB, "request ci-deploy 10m x")
            .await
            .contains("waiting for approval")
    );
    app.finish().await;
}

#[tokio::test]
async fn a_request_nobody_decides_times_out() {
    let ((app, hook), _) = spawn_hook_app_with(Backend::Sqlite, |p| {
        p.replace("request_ttl: 1h", "request_ttl: 2s")
    })
    .await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.wait_state(id, "timed_out").await;
    app.wait_dm(ALICE, "timed out").await;
    app.wait_card_update("Timed out").await;
    app.click(BOB, APPROVE, id).await;
    app.wait_ephemeral(BOB, "already timed out").await;
    assert!(hook.events().is_empty());
    app.finish().await;
}
