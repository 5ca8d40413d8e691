//! The HTTP edge: signatures, refusals that store nothing, health and metrics.

use jitbot::fakes::SlackSender;
use jitbot::slack::verify::sign;

use crate::support::*;

async fn assert_nothing_happened(app: &TestApp) {
    assert_eq!(
        app.store.count_requests().await.unwrap(),
        0,
        "a request was stored"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        app.slack.calls().is_empty(),
        "something was posted: {:?}",
        app.slack.calls()
    );
}

#[tokio::test]
async fn bad_missing_and_stale_signatures_get_401_and_change_nothing() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    let body = SlackSender::command_body(ALICE, "request billing-admin 1h reason");
    let now = chrono::Utc::now().timestamp();
    let good_ts = now.to_string();
    let stale_ts = (now - 301).to_string();
    let cases = [
        (
            "bad signature",
            Some(good_ts.clone()),
            Some(sign(b"wrong secret", &good_ts, body.as_bytes())),
        ),
        ("missing signature", Some(good_ts.clone()), None),
        (
            "missing timestamp",
            None,
            Some(sign(
                app.signing_secret.as_bytes(),
                &good_ts,
                body.as_bytes(),
            )),
        ),
        (
            "stale timestamp",
            Some(stale_ts.clone()),
            Some(sign(
                app.signing_secret.as_bytes(),
                &stale_ts,
                body.as_bytes(),
            )),
        ),
        (
            "garbage signature",
            Some(good_ts.clone()),
            Some("v0=zz".to_string()),
        ),
    ];
    for (what, ts, sig) in cases {
        let answer = app
            .sender
            .post_raw("/slack/commands", body.clone(), ts.clone(), sig.clone())
            .await
            .unwrap();
        assert_eq!(answer.status, 401, "{what}");
        let click = SlackSender::click_body(BOB, APPROVE, "1");
        let answer = app
            .sender
            .post_raw("/slack/interactions", click, ts, sig)
            .await
            .unwrap();
        assert_eq!(answer.status, 401, "{what} (interaction)");
    }
    // A body changed after signing is refused too.
    let ts = now.to_string();
    let sig = sign(app.signing_secret.as_bytes(), &ts, body.as_bytes());
    let tampered = body.replace("billing-admin", "two-keys");
    assert_eq!(
        app.sender
            .post_raw("/slack/commands", tampered, Some(ts), Some(sig))
            .await
            .unwrap()
            .status,
        401
    );
    assert_nothing_happened(&app).await;
    let metrics = reqwest::get(format!("{}/metrics", app.running.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("jitbot_signature_failures_total 11"),
        "{metrics}"
    );
    assert!(!metrics.contains(&app.signing_secret));
    app.finish().await;
}

#[tokio::test]
async fn every_refusal_answers_with_a_hint_and_stores_nothing() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    let cases = [
        (
            ALICE,
            "request billing-admn 1h x",
            "Did you mean `billing-admin`",
        ),
        (ALICE, "request nothing-like-it 1h x", "Unknown resource"),
        (
            ALICE,
            "request billing-admin 1s x",
            "shorter than the minimum",
        ),
        (
            ALICE,
            "request restricted 5m fixing",
            "shorter than the minimum of 10m",
        ),
        (
            ALICE,
            "request billing-admin 3h x",
            "longer than the maximum of 2h",
        ),
        (ALICE, "request restricted 15m", "needs a reason"),
        (
            MALLORY,
            "request restricted 15m payroll run",
            "may not request",
        ),
        (
            MALLORY,
            "request prod-db 15m looking",
            "no postgres identity",
        ),
        (ALICE, "request billing-admin 0m x", "longer than zero"),
        (ALICE, "request billing-admin 1x x", "not a duration"),
        (ALICE, "request", "Usage"),
        (ALICE, "frobnicate", "Unknown command"),
        (ALICE, "approve abc", "not a request number"),
    ];
    for (user, text, expected) in cases {
        let answer = app.sender.command(user, text).await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["response_type"], "ephemeral", "{text}");
        let reply = answer.body["text"].as_str().unwrap();
        assert!(
            reply.contains(expected),
            "/jit {text} → {reply:?}, expected {expected:?}"
        );
        assert!(!reply.contains('\n'), "refusals are one line: {reply:?}");
        assert!(
            !reply.contains("Request #"),
            "a refusal carries no request id: {reply:?}"
        );
    }
    assert_nothing_happened(&app).await;
    app.finish().await;
}

#[tokio::test]
async fn a_second_request_for_the_same_access_is_refused_and_points_to_extend() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    let first = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h first").await);
    let again = app.say(ALICE, "request billing-admin 30m again").await;
    assert!(
        again.contains(&format!("#{first}")) && again.contains("/jit extend"),
        "{again}"
    );
    assert_eq!(app.store.count_requests().await.unwrap(), 1);
    // Also while the grant is active.
    app.click(BOB, APPROVE, first).await;
    app.wait_state(first, "active").await;
    let again = app.say(ALICE, "request billing-admin 30m again").await;
    assert!(
        again.contains("active") && again.contains("/jit extend"),
        "{again}"
    );
    assert_eq!(app.store.count_requests().await.unwrap(), 1);
    app.finish().await;
}

#[tokio::test]
async fn help_resources_list_and_explain_answer_ephemerally() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    assert!(app.say(ALICE, "help").await.contains("/jit request"));
    let resources = app.say(MALLORY, "resources").await;
    assert!(
        resources.contains("billing-admin") && !resources.contains("restricted"),
        "{resources}"
    );
    assert!(app.say(ALICE, "list").await.contains("no requests"));
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    assert!(
        app.say(ALICE, "list")
            .await
            .contains(&format!("#{id} *billing-admin* · pending"))
    );
    let pending = app.say(BOB, "pending").await;
    assert!(pending.contains(&format!("#{id}")), "{pending}");
    assert!(!app.say(ALICE, "pending").await.contains(&format!("#{id}")));
    let explain = app.say(ALICE, "explain two-keys").await;
    assert!(
        explain.contains("2 needed") && explain.contains(&format!("<@{BOB}>")),
        "{explain}"
    );
    app.finish().await;
}

#[tokio::test]
async fn health_and_metrics_answer() {
    let (app, _hook) = spawn_hook_app(Backend::Postgres).await;
    let health = reqwest::get(format!("{}/healthz", app.running.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    app.say(ALICE, "request billing-admin 1h x").await;
    let metrics = reqwest::get(format!("{}/metrics", app.running.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("# TYPE jitbot_requests_created_total counter"));
    assert!(
        metrics.contains("jitbot_requests_created_total 1"),
        "{metrics}"
    );
    app.finish().await;
}

#[tokio::test]
async fn text_from_a_requester_cannot_ping_the_channel() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    app.say(
        ALICE,
        "request billing-admin 1h <!channel> look <https://evil.example|here>",
    )
    .await;
    let calls = app
        .wait_calls("the card", |c| {
            c.iter().any(|c| c.method == "chat.postMessage")
        })
        .await;
    let card = calls
        .iter()
        .find(|c| c.method == "chat.postMessage")
        .unwrap()
        .body
        .to_string();
    assert!(!card.contains("<!channel>"), "{card}");
    assert!(card.contains("&lt;!channel&gt;"), "{card}");
    app.finish().await;
}
