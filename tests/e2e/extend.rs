//! `/jit extend`: more time on active access, approved like a request unless an auto-approve rule
//! covers the whole new length, never past the resource's maximum, and the revoke waits for the
//! new end.

use std::time::Duration;

use crate::support::*;

/// When the revoke of `id` reached `hook`, and the grant's end as stored.
async fn revoked_at(
    app: &TestApp,
    hook: &jitbot::fakes::WebhookReceiver,
    id: i32,
) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
    let ok = eventually(WAIT, || async {
        hook.events_of("revoke")
            .iter()
            .any(|e| e.body["request_id"] == id)
    })
    .await;
    assert!(ok, "no revoke of #{id}");
    let revoke = hook
        .events_of("revoke")
        .into_iter()
        .find(|e| e.body["request_id"] == id)
        .expect("found above");
    (revoke.received_at, expires_at(app, id).await)
}

async fn expires_at(app: &TestApp, id: i32) -> chrono::DateTime<chrono::Utc> {
    app.store
        .grant(id)
        .await
        .expect("store")
        .and_then(|g| g.expires_at)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .expect("an end")
}

async fn an_auto_approved_extension_moves_the_end(backend: Backend) {
    let (app, hook) = spawn_hook_app(backend).await;
    // ci-deploy: auto-approved for Alice up to 30m.
    let answer = app.say(ALICE, "request ci-deploy 3s deploy").await;
    let id = TestApp::id_in(&answer);
    app.wait_state(id, "active").await;
    let first_end = expires_at(&app, id).await;

    let answer = app.say(ALICE, &format!("extend {id} 3s")).await;
    assert!(answer.contains("auto-approved by policy"), "{answer}");
    let moved = expires_at(&app, id).await;
    assert_eq!(moved - first_end, chrono::TimeDelta::seconds(3));
    app.wait_dm(ALICE, "is extended by 3s").await;
    app.wait_card_update("⏩ Extended by 3s").await;

    // The revoke queued for the first end waits for the new one.
    let (revoked, end) = revoked_at(&app, &hook, id).await;
    assert_eq!(end, moved);
    assert!(
        revoked >= moved,
        "revoked at {revoked}, before the new end {moved}"
    );
    assert!(
        revoked - moved < chrono::TimeDelta::seconds(3),
        "{revoked} vs {moved}"
    );
    app.wait_state(id, "expired").await;
    app.finish().await;
}

#[tokio::test]
async fn an_auto_approved_extension_moves_the_end_on_sqlite() {
    an_auto_approved_extension_moves_the_end(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_auto_approved_extension_moves_the_end_on_postgres() {
    an_auto_approved_extension_moves_the_end(Backend::Postgres).await;
}

async fn an_extension_is_approved_like_a_request(backend: Backend) {
    let (app, hook) = spawn_hook_app(backend).await;
    // billing-admin: up to 2h, approved by dba.
    let answer = app.say(ALICE, "request billing-admin 4s rotate").await;
    let id = TestApp::id_in(&answer);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    let first_end = expires_at(&app, id).await;

    // Never past max_duration from the start of the grant.
    let over = app.say(ALICE, &format!("extend {id} 2h")).await;
    assert!(
        over.contains("at most 2h") && over.contains("up to 1h59m"),
        "{over}"
    );
    let theirs = app.say(BOB, &format!("extend {id} 3s")).await;
    assert!(theirs.contains("not yours"), "{theirs}");

    let answer = app.say(ALICE, &format!("extend {id} 3s")).await;
    assert!(answer.contains("waiting for approval"), "{answer}");
    let ext = TestApp::id_in(&answer);
    assert_ne!(ext, id);
    let again = app.say(ALICE, &format!("extend {id} 3s")).await;
    assert!(again.contains(&format!("#{ext} is waiting")), "{again}");
    // Its own card, with buttons, saying what it extends.
    let card = app
        .wait_calls("the extension's card", |calls| {
            calls.iter().any(|c| {
                c.method == "chat.postMessage"
                    && c.body.to_string().contains(&format!("extending #{id}"))
            })
        })
        .await
        .into_iter()
        .find(|c| c.method == "chat.postMessage" && c.body.to_string().contains("extending"))
        .expect("found above");
    assert!(has_buttons(&card));
    assert_eq!(
        expires_at(&app, id).await,
        first_end,
        "nothing moves before the approval"
    );

    app.click(ALICE, APPROVE, ext).await;
    app.wait_ephemeral(ALICE, "your own request").await;
    app.click(CAROL, APPROVE, ext).await;
    app.wait_state(ext, "extended").await;
    let moved = expires_at(&app, id).await;
    assert_eq!(moved - first_end, chrono::TimeDelta::seconds(3));
    app.wait_card_update(&format!(
        "⏩ Extended by 3s (#{ext}, approved by <@{CAROL}>)"
    ))
    .await;
    app.wait_dm(ALICE, &format!("is extended by 3s (#{ext})"))
        .await;
    let list = app.say(ALICE, "list").await;
    assert!(list.contains(&format!("(+3s on #{id})")), "{list}");

    let (revoked, end) = revoked_at(&app, &hook, id).await;
    assert_eq!(end, moved);
    assert!(
        revoked >= moved,
        "revoked at {revoked}, before the new end {moved}"
    );
    app.wait_state(id, "expired").await;
    let late = app.say(ALICE, &format!("extend {id} 3s")).await;
    assert!(late.contains("only active access"), "{late}");
    app.finish().await;
}

#[tokio::test]
async fn an_extension_is_approved_like_a_request_on_sqlite() {
    an_extension_is_approved_like_a_request(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_extension_is_approved_like_a_request_on_postgres() {
    an_extension_is_approved_like_a_request(Backend::Postgres).await;
}

#[tokio::test]
async fn an_extension_of_access_that_ended_is_cancelled_at_the_click() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    let answer = app.say(ALICE, "request billing-admin 2s x").await;
    let id = TestApp::id_in(&answer);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    let answer = app.say(ALICE, &format!("extend {id} 10s")).await;
    let ext = TestApp::id_in(&answer);
    app.wait_state(id, "expired").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let approve = app.say(BOB, &format!("approve {ext}")).await;
    assert!(approve.contains("no longer active"), "{approve}");
    assert_eq!(app.state(ext).await, "cancelled");
    app.finish().await;
}

/// The button of `action` in a DM's blocks.
fn button(dm: &jitbot::fakes::SlackCall, action: &str) -> Option<serde_json::Value> {
    dm.body["blocks"]
        .as_array()?
        .iter()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == action)
}

#[tokio::test]
async fn access_that_ends_soon_offers_extend_and_one_click_extends_it() {
    let env =
        std::collections::HashMap::from([(TEST_ENDING_SOON_MS.to_string(), "2000".to_string())]);
    let ((app, hook), _) = spawn_hook_app_env(Backend::Sqlite, |p| p, env).await;
    // ci-deploy is auto-approved for Alice up to 30m: one click extends it at once.
    let id = TestApp::id_in(&app.say(ALICE, "request ci-deploy 4s deploy").await);
    app.wait_state(id, "active").await;
    let first_end = expires_at(&app, id).await;
    let dm = app.wait_dm(ALICE, "ends").await;
    let extend = button(&dm, "jit_extend").expect("an Extend button");
    assert_eq!(extend["value"], format!("{id}:4"));
    assert!(button(&dm, "jit_done").is_some(), "and I'm done");
    // Sent about 2 s before the end, not at the grant.
    let before_end = first_end - chrono::Utc::now();
    assert!(
        before_end < chrono::TimeDelta::milliseconds(2_500),
        "reminded {before_end} before the end"
    );

    app.sender
        .click_with_trigger(ALICE, "jit_extend", &format!("{id}:4"), "D0ALICE", "trig-7")
        .await
        .expect("answered");
    app.wait_ephemeral(ALICE, "Extended by 4s").await;
    assert_eq!(
        expires_at(&app, id).await - first_end,
        chrono::TimeDelta::seconds(4)
    );
    let (revoked, end) = revoked_at(&app, &hook, id).await;
    assert!(
        revoked >= end,
        "revoked at {revoked}, before the new end {end}"
    );

    // Without auto-approval the click asks the approvers, and says so.
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 4s rotate").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    let dm = app.wait_dm(ALICE, &format!("(#{id}) ends")).await;
    let value = button(&dm, "jit_extend").expect("Extend")["value"].clone();
    app.sender
        .click_with_trigger(
            ALICE,
            "jit_extend",
            value.as_str().unwrap_or(""),
            "D0ALICE",
            "trig-8",
        )
        .await
        .expect("answered");
    app.wait_ephemeral(ALICE, "waiting for approval").await;
    app.finish().await;
}
