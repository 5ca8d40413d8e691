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
    // `auth.test` (which workspace to serve) is asked at start; nothing else may go out.
    let sent: Vec<_> = app
        .slack
        .calls()
        .into_iter()
        .filter(|c| c.method != "auth.test")
        .collect();
    assert!(sent.is_empty(), "something was posted: {sent:?}");
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
    // Answered for the asker: Alice may ask for ci-deploy and is auto-approved up to 30m;
    // Mallory may not ask for restricted; Bob approves it.
    let alice = app.say(ALICE, "explain ci-deploy").await;
    assert!(
        alice.contains("you may request it") && alice.contains("auto-approved* up to 30m"),
        "{alice}"
    );
    let mallory = app.say(MALLORY, "explain restricted").await;
    assert!(mallory.contains("you may not request it"), "{mallory}");
    let bob = app.say(BOB, "explain restricted").await;
    assert!(bob.contains("you are one of them"), "{bob}");
    let typo = app.say(ALICE, "explian ci-deploy").await;
    assert!(typo.contains("Did you mean `/jit explain`?"), "{typo}");
    app.finish().await;
}

#[tokio::test]
async fn a_reason_must_match_the_resources_pattern() {
    let ((app, _hook), _) = spawn_hook_app_with(Backend::Sqlite, |p| {
        p.replacen(
            "    reason_required: true
",
            "    reason_required: true
    reason_pattern: '^(INC|CHG)-[0-9]+'
",
            1,
        )
    })
    .await;
    for bad in [".", "fixing things", "inc-12", "see INC-12"] {
        let answer = app
            .say(ALICE, &format!("request restricted 30m {bad}"))
            .await;
        assert!(answer.contains("must match"), "{bad:?}: {answer}");
    }
    assert_eq!(
        app.store.count_requests().await.unwrap(),
        0,
        "nothing stored"
    );
    let ok = app
        .say(ALICE, "request restricted 30m INC-4312 db locks")
        .await;
    TestApp::id_in(&ok);
    let explain = app.say(ALICE, "explain restricted").await;
    assert!(
        explain.contains("matching `^(INC|CHG)-[0-9]+`"),
        "{explain}"
    );
    // A pattern that does not compile is a check error with its line.
    let policy = app.edited("'^(INC|CHG)-[0-9]+'", "'^(INC'");
    let errors = jitbot::domain::Policy::parse("p.yaml", &policy)
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("reason_pattern: not a valid pattern"),
        "{errors}"
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

#[tokio::test]
async fn slow_clients_cannot_hold_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ((app, _hook), _) = spawn_hook_app_env(
        Backend::Sqlite,
        |p| p,
        [
            (TEST_HEADER_TIMEOUT_MS.to_string(), "1000".to_string()),
            (TEST_BODY_TIMEOUT_MS.to_string(), "1000".to_string()),
        ]
        .into(),
    )
    .await;
    let addr = app.running.addr;
    // Fifty clients that send half a request head and then nothing.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /slack/commands HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    // Everyone else is still answered at once.
    let started = std::time::Instant::now();
    let health = reqwest::get(format!("{}/healthz", app.running.url()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let answer = app.say(ALICE, "help").await;
    assert!(answer.contains("/jit request"), "{answer}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "answered in {:?}",
        started.elapsed()
    );
    // The slow ones are cut off once the header deadline passes.
    for mut s in slow {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(_)) | Ok(Err(_))),
            "a slow connection was still open after 5 s"
        );
    }
    // A body announced as 50 MB is refused at once; one that stops arriving is cut off.
    let mut big = tokio::net::TcpStream::connect(addr).await.unwrap();
    big.write_all(
        b"POST /slack/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 52428800\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nabc",
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), big.read(&mut head))
        .await
        .expect("answered at once")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(
            b"POST /slack/commands HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nabc",
        )
        .await
        .unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(4), stalled.read(&mut head))
        .await
        .expect("answered once the body deadline passed")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    assert_eq!(app.store.count_requests().await.unwrap(), 0);
    app.finish().await;
}

#[tokio::test]
async fn metrics_show_the_queue_the_lag_and_the_calls() {
    let (app, hook) = spawn_hook_app(Backend::Postgres).await;
    let id = TestApp::id_in(&app.say(ALICE, "request ci-deploy 2s release").await);
    app.wait_state(id, "expired").await;
    hook.wait_for("revoke", 1, WAIT).await.unwrap();
    let text = reqwest::get(format!("{}/metrics", app.running.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"jitbot_queue_due_jobs{lane="access"}"#,
        r#"jitbot_queue_oldest_due_seconds{lane="messages"}"#,
        "jitbot_revoke_lag_seconds_count 1",
        r#"jitbot_provider_call_seconds_count{provider="hooks",op="revoke"} 1"#,
        r#"jitbot_slack_call_seconds_count{method="chat.postMessage"}"#,
        r#"jitbot_lane_running_jobs{lane="grants"}"#,
        "# TYPE jitbot_permanent_failures_total counter",
    ] {
        assert!(text.contains(needle), "no {needle} in\n{text}");
    }
    app.finish().await;
}

#[tokio::test]
async fn a_store_that_does_not_answer_gets_a_try_again_within_slacks_deadline() {
    let (app, _hook) = spawn_hook_app(Backend::Postgres).await;
    let pg = app.pg.as_ref().expect("a PostgreSQL store");
    let other = sea_orm::sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg.url)
        .await
        .unwrap();
    let mut lock = other.begin().await.unwrap();
    sea_orm::sqlx::query("LOCK TABLE requests IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = app.say(ALICE, "request billing-admin 1h x").await;
    let took = started.elapsed();
    assert!(answer.contains("could not finish that in time"), "{answer}");
    assert!(
        took < std::time::Duration::from_secs(3),
        "answered after {took:?}"
    );
    lock.rollback().await.unwrap();
    // Nothing half written: the request was not stored, and it can be asked again.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.store.count_requests().await.unwrap(), 0);
    assert!(
        app.say(ALICE, "request billing-admin 1h x")
            .await
            .contains("waiting for approval")
    );
    app.finish().await;
}

#[tokio::test]
async fn a_resource_from_a_template_is_requested_and_granted_with_its_values() {
    let ((app, hook), _) = spawn_hook_app_with(Backend::Sqlite, |p| {
        p.replacen(
            "resources:\n",
            "resources:\n  app-{tier}:\n    for: { tier: [gold, silver] }\n    vars: { quota: { gold: \"100\", silver: \"10\" } }\n    provider: hooks\n    grant: { app: \"app-{tier}\", quota: \"{quota}\" }\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n",
            1,
        )
    })
    .await;
    let resources = app.say(ALICE, "resources").await;
    assert!(
        resources.contains("app-gold") && resources.contains("app-silver"),
        "{resources}"
    );
    let id = TestApp::id_in(&app.say(ALICE, "request app-silver 1h x").await);
    app.click(BOB, APPROVE, id).await;
    let grant = hook.wait_for("grant", 1, WAIT).await.unwrap();
    assert_eq!(
        grant[0].body["grant"],
        serde_json::json!({"app": "app-silver", "quota": "10"})
    );
    app.finish().await;
}
