//! The forms: Deny opens one that asks why (the requester reads it), `/jit request` alone opens
//! the request form (errors on the field that is wrong), and the DM of active access has an
//! "I'm done" button.

use jitbot::fakes::SlackCall;
use serde_json::Value;

use crate::support::*;

const DENY_FORM: &str = "jit_deny_form";
const REQUEST_FORM: &str = "jit_request_form";

fn views(app: &TestApp) -> Vec<SlackCall> {
    app.slack.calls_to("views.open")
}

/// The view of a `views.open` call, however it was encoded.
fn view_of(call: &SlackCall) -> Value {
    match &call.body["view"] {
        Value::String(s) => serde_json::from_str(s).expect("a view"),
        v => v.clone(),
    }
}

async fn the_deny_button_asks_why(backend: Backend) {
    let (app, _hook) = spawn_hook_app(backend).await;
    let id = TestApp::id_in(
        &app.say(ALICE, "request billing-admin 20m rotate keys")
            .await,
    );

    // Someone who may not deny gets no form, only the refusal.
    let answer = app
        .sender
        .click_with_trigger(MALLORY, DENY, &id.to_string(), "C0REVIEW", "trig-1")
        .await
        .expect("answered");
    assert_eq!(answer.status, 200);
    app.wait_ephemeral(MALLORY, "not an approver").await;
    assert!(views(&app).is_empty());

    // An approver's Deny opens the form; nothing is decided yet.
    let answer = app
        .sender
        .click_with_trigger(BOB, DENY, &id.to_string(), "C0REVIEW", "trig-2")
        .await
        .expect("answered");
    assert_eq!(answer.status, 200);
    let opened = views(&app);
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].body["trigger_id"], "trig-2");
    let view = view_of(&opened[0]);
    assert_eq!(view["callback_id"], DENY_FORM);
    assert_eq!(view["private_metadata"], id.to_string());
    assert!(view.to_string().contains("rotate keys"), "{view}");
    assert_eq!(app.state(id).await, "pending");

    // The reason reaches the requester and the card.
    let answer = app
        .sender
        .submit_form(
            BOB,
            DENY_FORM,
            &id.to_string(),
            &[("reason", "not during the freeze")],
            &[],
        )
        .await
        .expect("answered");
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert!(
        answer.body.get("response_action").is_none(),
        "{:?}",
        answer.body
    );
    app.wait_state(id, "denied").await;
    app.wait_dm(ALICE, "not during the freeze").await;
    app.wait_card_update("not during the freeze").await;

    // A second submission is shown on the field, and changes nothing.
    let again = app
        .sender
        .submit_form(
            CAROL,
            DENY_FORM,
            &id.to_string(),
            &[("reason", "me too")],
            &[],
        )
        .await
        .expect("answered");
    assert_eq!(again.body["response_action"], "errors", "{:?}", again.body);
    assert!(
        again.body["errors"]["reason"]
            .as_str()
            .is_some_and(|e| e.contains("already denied")),
        "{:?}",
        again.body
    );
    app.finish().await;
}

#[tokio::test]
async fn the_deny_button_asks_why_on_sqlite() {
    the_deny_button_asks_why(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_deny_button_asks_why_on_postgres() {
    the_deny_button_asks_why(Backend::Postgres).await;
}

#[tokio::test]
async fn the_request_form_offers_what_you_may_ask_for_and_marks_the_wrong_field() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    let answer = app
        .sender
        .command_with_trigger(MALLORY, "request", "trig-3")
        .await
        .expect("answered");
    assert_eq!(answer.status, 200);
    let view = view_of(&views(&app)[0]);
    assert_eq!(view["callback_id"], REQUEST_FORM);
    let options: Vec<&str> = view["blocks"][0]["element"]["options"]
        .as_array()
        .expect("a select")
        .iter()
        .filter_map(|o| o["value"].as_str())
        .collect();
    assert!(options.contains(&"billing-admin"), "{options:?}");
    // `restricted` is for Alice and the dba group only.
    assert!(!options.contains(&"restricted"), "{options:?}");

    let submit = |values: Vec<(&'static str, &'static str)>, resource: &'static str| {
        let sender = app.sender.clone();
        async move {
            sender
                .submit_form(ALICE, REQUEST_FORM, "", &values, &[("resource", resource)])
                .await
                .expect("answered")
                .body
        }
    };
    for (values, resource, field, says) in [
        (
            vec![("duration", "soon")],
            "billing-admin",
            "duration",
            "30m or 1h30m",
        ),
        (
            vec![("duration", "9h")],
            "billing-admin",
            "duration",
            "longer than the maximum",
        ),
        (
            vec![("duration", "20m")],
            "restricted",
            "reason",
            "needs a reason",
        ),
    ] {
        let answer = submit(values, resource).await;
        assert_eq!(answer["response_action"], "errors", "{answer}");
        assert!(
            answer["errors"][field]
                .as_str()
                .is_some_and(|e| e.contains(says)),
            "{field}: {answer}"
        );
    }
    assert_eq!(
        app.store.count_requests().await.expect("store"),
        0,
        "nothing stored"
    );

    let ok = submit(
        vec![("duration", "20m"), ("reason", "INC-7")],
        "billing-admin",
    )
    .await;
    assert!(ok.get("response_action").is_none(), "{ok}");
    let dm = app.wait_dm(ALICE, "waiting for approval").await;
    let id = TestApp::id_in(dm.str("text"));
    assert_eq!(app.state(id).await, "pending");

    // A trigger Slack no longer takes: the form does not open, and the person is told.
    let answer = app
        .sender
        .command_with_trigger(ALICE, "request", "expired-4")
        .await
        .expect("answered");
    assert!(
        answer.body["text"]
            .as_str()
            .is_some_and(|t| t.contains("could not open the form")),
        "{:?}",
        answer.body
    );
    app.finish().await;
}

#[tokio::test]
async fn the_dm_of_active_access_ends_it_with_one_click() {
    let (app, hook) = spawn_hook_app(Backend::Sqlite).await;
    let id = TestApp::id_in(&app.say(ALICE, "request ci-deploy 20m deploy").await);
    app.wait_state(id, "active").await;
    let dm = app.wait_dm(ALICE, "ci-deploy").await;
    let button = dm.body["blocks"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["type"] == "actions"))
        .map(|a| a["elements"][0].clone())
        .expect("a button");
    assert_eq!(button["action_id"], "jit_done");
    assert_eq!(button["value"], id.to_string());

    // Only the requester (or an approver) ends it; a stranger's click is refused.
    app.sender
        .click_with_trigger(MALLORY, "jit_done", &id.to_string(), "D0MALLORY", "trig-5")
        .await
        .expect("answered");
    app.wait_ephemeral(MALLORY, "Only the requester").await;
    assert_eq!(app.state(id).await, "active");

    app.sender
        .click_with_trigger(ALICE, "jit_done", &id.to_string(), "D0ALICE", "trig-6")
        .await
        .expect("answered");
    app.wait_state(id, "revoked").await;
    hook.wait_for("revoke", 1, WAIT)
        .await
        .expect("revoked at the provider");
    app.finish().await;
}
