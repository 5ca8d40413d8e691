//! Providers and Slack that fail: retries, grant_failed, revokes that never give up.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::support::*;

#[tokio::test]
async fn a_grant_that_keeps_failing_becomes_grant_failed_and_is_still_revoked() {
    let (app, hook) = spawn_hook_app(Backend::Sqlite).await;
    hook.fail_next(5);
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "grant_failed").await;
    app.wait_dm(ALICE, "could not grant").await;
    app.wait_channel_note("failed").await;
    // A revoke goes out anyway, in case part of the grant took.
    let revokes = hook.wait_for("revoke", 1, WAIT).await.unwrap();
    assert_eq!(revokes[0].body["request_id"], id);
    assert!(hook.events_of("grant").is_empty(), "no grant was accepted");
    let actions = app.audit_actions(id).await;
    assert!(actions.contains(&"grant_failed".to_string()), "{actions:?}");
    assert!(
        eventually(WAIT, || async {
            app.audit_actions(id)
                .await
                .contains(&"cleanup_done".to_string())
        })
        .await
    );
    // grant_failed closes the request: Alice may ask again.
    assert!(
        app.say(ALICE, "request billing-admin 1h again")
            .await
            .contains("waiting for approval")
    );
    app.finish().await;
}

#[tokio::test]
async fn a_grant_that_fails_a_few_times_then_succeeds_is_active() {
    let (app, hook) = spawn_hook_app(Backend::Sqlite).await;
    hook.fail_next(2);
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    assert_eq!(hook.events_of("grant").len(), 1);
    app.finish().await;
}

#[tokio::test]
async fn a_failing_revoke_is_retried_until_the_provider_confirms() {
    let (app, hook) = spawn_hook_app(Backend::Postgres).await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 2s x").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    hook.wait_for("grant", 1, WAIT).await.unwrap();
    hook.fail_next(4);
    app.wait_state(id, "revoke_failed").await;
    app.wait_channel_note("keeps retrying").await;
    app.wait_state(id, "expired").await;
    assert_eq!(hook.events_of("revoke").len(), 1);
    app.wait_dm(ALICE, "has expired").await;
    app.finish().await;
}

#[tokio::test]
async fn slack_errors_are_retried_and_the_card_still_arrives() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    app.slack.fail_next("chat.postMessage", 2);
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.wait_calls("the card", |calls| {
        calls
            .iter()
            .any(|c| c.method == "chat.postMessage" && c.str("channel") == "C0REVIEW")
    })
    .await;
    assert!(
        eventually(WAIT, || async {
            app.store
                .request(id)
                .await
                .unwrap()
                .unwrap()
                .card_ts
                .is_some()
        })
        .await
    );
    assert_eq!(
        app.slack.calls_to("chat.postMessage").len(),
        1,
        "posted once after two failures"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_webhook_receiver_can_check_the_signature() {
    let ((app, hook), secret) = spawn_hook_app_with(Backend::Sqlite, |p| p).await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h INC-4312").await);
    app.click(BOB, APPROVE, id).await;
    let event = hook.wait_for("grant", 1, WAIT).await.unwrap().remove(0);
    // Recompute as a receiver would, independently of jitbot's code.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&event.raw);
    assert_eq!(
        event.signature,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    let body = &event.body;
    assert_eq!(body["event"], "grant");
    assert_eq!(body["request_id"], id);
    assert_eq!(body["resource"], "billing-admin");
    assert_eq!(body["requester"], ALICE);
    assert_eq!(body["identity"]["email"], "alice@example.com");
    assert_eq!(
        body["grant"],
        serde_json::json!({"app": "billing", "level": "admin"})
    );
    assert_eq!(body["approved_by"], serde_json::json!([BOB]));
    assert_eq!(body["reason"], "INC-4312");
    assert!(
        body["expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    app.finish().await;
}

#[tokio::test]
async fn a_webhook_gets_the_slack_profile_email_of_someone_without_an_identity() {
    let (app, hook) = spawn_hook_app(Backend::Sqlite).await;
    app.slack.set_email(MALLORY, "mallory@example.com");
    let id = TestApp::id_in(&app.say(MALLORY, "request billing-admin 1h x").await);
    app.click(BOB, APPROVE, id).await;
    let grant = hook.wait_for("grant", 1, WAIT).await.unwrap().remove(0);
    assert_eq!(
        grant.body["identity"],
        serde_json::json!({"email": "mallory@example.com"})
    );
    app.wait_state(id, "active").await;
    assert!(
        app.say(MALLORY, &format!("revoke {id}"))
            .await
            .contains("being revoked")
    );
    let revoke = hook.wait_for("revoke", 1, WAIT).await.unwrap().remove(0);
    assert_eq!(
        revoke.body["identity"]["email"], "mallory@example.com",
        "the revoke names the same person"
    );
    assert_eq!(app.slack.calls_to("users.info").len(), 1);
    app.finish().await;
}

#[tokio::test]
async fn a_grant_is_revoked_as_granted_even_after_its_resource_leaves_the_policy() {
    let secret = format!("hook-{}", suffix());
    let hook = jitbot::fakes::WebhookReceiver::start(&secret)
        .await
        .unwrap();
    let env_name = format!("JIT_HOOK_{}", suffix().to_uppercase());
    let env = std::collections::HashMap::from([
        (env_name.clone(), secret.clone()),
        (
            format!("{env_name}_PG"),
            "postgres://nobody@127.0.0.1:1/none".to_string(),
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("jitbot.db").display()
    );
    let first = spawn_with(
        db_url.clone(),
        &hook_policy(&hook.url, &env_name),
        env.clone(),
        jitbot::fakes::FakeSlack::start().await.unwrap(),
        None,
        tempfile::tempdir().unwrap(),
    )
    .await;
    let id = TestApp::id_in(&first.say(ALICE, "request billing-admin 3s x").await);
    first.click(BOB, APPROVE, id).await;
    first.wait_state(id, "active").await;
    hook.wait_for("grant", 1, WAIT).await.unwrap();
    first.finish().await;

    // The policy changes: the resource and its provider are gone.
    let changed = format!(
        "groups:\n  dba: {{ members: [{BOB}] }}\nproviders:\n  other: {{ kind: webhook, url: \"http://127.0.0.1:1/nowhere\", secret_env: {env_name} }}\n\
         resources:\n  something-else:\n    provider: other\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n"
    );
    let second = spawn_with(
        db_url,
        &changed,
        env,
        jitbot::fakes::FakeSlack::start().await.unwrap(),
        None,
        dir,
    )
    .await;
    second.wait_state(id, "expired").await;
    let revoke = hook.wait_for("revoke", 1, WAIT).await.unwrap().remove(0);
    assert_eq!(revoke.body["resource"], "billing-admin");
    assert_eq!(
        revoke.body["grant"],
        serde_json::json!({"app": "billing", "level": "admin"})
    );
    second.finish().await;
}

#[tokio::test]
async fn a_grant_that_cannot_connect_says_so_in_words_not_a_transport_trace() {
    let ((app, _hook), _) = spawn_hook_app_with(Backend::Sqlite, |p| {
        // Nothing listens on port 1: every call is refused.
        let start = p.find("url: \"").expect("a hook url") + "url: \"".len();
        let end = start + p[start..].find('"').expect("the url's end");
        format!("{}http://127.0.0.1:1/hook{}", &p[..start], &p[end..])
    })
    .await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "grant_failed").await;
    let note = app.wait_channel_note("failed").await;
    let text = note.str("text");
    assert!(text.contains("the connection was refused"), "{text}");
    for trace in ["error sending request", "client error", "os error", "hyper"] {
        assert!(!text.contains(trace), "{trace:?} in {text}");
    }
    app.finish().await;
}
