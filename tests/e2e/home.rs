//! The App Home tab: published when a person opens it, with their access, their waiting
//! requests and what waits for their approval, and published again after a click on it.

use jitbot::fakes::SlackCall;
use serde_json::{Value, json};

use crate::support::*;

fn view_of(call: &SlackCall) -> Value {
    match &call.body["view"] {
        Value::String(s) => serde_json::from_str(s).expect("a view"),
        v => v.clone(),
    }
}

/// The `nth` Home tab published for `user` (waits for it).
async fn home_of(app: &TestApp, user: &str, nth: usize) -> Value {
    let calls = app
        .wait_calls(&format!("Home tab #{nth} of {user}"), |calls| {
            calls
                .iter()
                .filter(|c| c.method == "views.publish" && c.str("user_id") == user)
                .count()
                > nth
        })
        .await;
    let published: Vec<_> = calls
        .iter()
        .filter(|c| c.method == "views.publish" && c.str("user_id") == user)
        .collect();
    view_of(published[nth])
}

#[tokio::test]
async fn the_home_tab_shows_access_waiting_requests_and_working_buttons() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    // Slack checks the events URL once.
    let check = app
        .sender
        .event(&json!({"type": "url_verification", "challenge": "c-123", "token": "x"}))
        .await
        .expect("answered");
    assert_eq!(check.body["challenge"], "c-123");
    // Unsigned events are refused like any other request.
    let forged = app
        .sender
        .post_raw(
            "/slack/events",
            json!({"type": "url_verification", "challenge": "x"}).to_string(),
            None,
            None,
        )
        .await
        .expect("answered");
    assert_eq!(forged.status, 401);

    let active = TestApp::id_in(&app.say(ALICE, "request ci-deploy 20m deploy").await);
    app.wait_state(active, "active").await;
    let waiting = TestApp::id_in(&app.say(ALICE, "request billing-admin 20m INC-5").await);

    app.sender.open_home(ALICE).await.expect("answered");
    let home = home_of(&app, ALICE, 0).await;
    let text = home.to_string();
    assert!(
        text.contains(&format!("*ci-deploy* (#{active}) · active until")),
        "{text}"
    );
    assert!(text.contains("I'm done"), "{text}");
    assert!(
        text.contains(&format!("#{waiting} *billing-admin*")),
        "{text}"
    );

    app.sender.open_home(BOB).await.expect("answered");
    let home = home_of(&app, BOB, 0).await;
    let text = home.to_string();
    assert!(
        text.contains(&format!("#{waiting} <@{ALICE}> wants *billing-admin*")),
        "{text}"
    );
    assert!(text.contains("\"action_id\":\"jit_approve\""), "{text}");

    // Approve from the tab: the request is approved and the tab is published again without it.
    app.sender
        .click_on_home(BOB, "jit_approve", &waiting.to_string())
        .await
        .expect("answered");
    app.wait_state(waiting, "active").await;
    let home = home_of(&app, BOB, 1).await;
    assert!(
        home.to_string().contains("Nothing is waiting for you."),
        "{home}"
    );

    // "I'm done" from Alice's tab ends her access.
    app.sender
        .click_on_home(ALICE, "jit_done", &active.to_string())
        .await
        .expect("answered");
    app.wait_state(active, "revoked").await;
    app.finish().await;
}
