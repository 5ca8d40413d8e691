//! The audit trail proves itself: a hash chain that names the first edited, deleted, reordered
//! or truncated event; several sealers at once never fork it; `jitbot audit verify` and
//! `jitbot audit export` work on the store as an auditor would use them.

use std::time::Duration;

use jitbot::store::audit::Break;

use crate::support::*;

/// An app whose trail holds some twenty events, all linked.
async fn chained(backend: Backend) -> TestApp {
    let (app, hook) = spawn_hook_app(backend).await;
    for user in ["U0A1", "U0A2", "U0A3"] {
        let id = TestApp::id_in(&app.say(user, "request billing-admin 1h audit").await);
        app.click(BOB, APPROVE, id).await;
        app.wait_state(id, "active").await;
    }
    app.say(MALLORY, "approve 1").await;
    hook.wait_for("grant", 3, WAIT).await.unwrap();
    let sealed = eventually(WAIT, || async {
        let report = app.store.verify_audit().await.unwrap();
        report.unsealed == 0 && report.sealed >= 10
    })
    .await;
    assert!(sealed, "the sealer links new events within seconds");
    let report = app.store.verify_audit().await.unwrap();
    assert_eq!(report.broken, None, "{report:?}");
    app
}

async fn each_break_is_named(backend: Backend) {
    // An edited event.
    let app = chained(backend).await;
    app.tamper("UPDATE audit_events SET detail = '{}' WHERE seq = 3")
        .await;
    assert_eq!(
        app.store.verify_audit().await.unwrap().broken,
        Some(Break::Altered {
            seq: 3,
            id: seq_id(&app, 3).await
        })
    );
    app.finish().await;

    // A deleted event.
    let app = chained(backend).await;
    app.tamper("DELETE FROM audit_events WHERE seq = 5").await;
    assert_eq!(
        app.store.verify_audit().await.unwrap().broken,
        Some(Break::Missing { after: 4, next: 6 })
    );
    app.finish().await;

    // Two events swapped (their places in the chain exchanged).
    let app = chained(backend).await;
    app.tamper("UPDATE audit_events SET seq = -2 WHERE seq = 2")
        .await;
    app.tamper("UPDATE audit_events SET seq = 2 WHERE seq = 3")
        .await;
    app.tamper("UPDATE audit_events SET seq = 3 WHERE seq = -2")
        .await;
    let broken = app.store.verify_audit().await.unwrap().broken;
    assert!(
        matches!(broken, Some(Break::Altered { seq: 2, .. })),
        "{broken:?}"
    );
    app.finish().await;

    // The newest events deleted: the chain is shorter than its head.
    let app = chained(backend).await;
    let head = app.store.verify_audit().await.unwrap().sealed as i64;
    // Stop new events first: nothing else may be sealed meanwhile.
    app.tamper(&format!(
        "DELETE FROM audit_events WHERE seq >= {}",
        head - 1
    ))
    .await;
    let broken = app.store.verify_audit().await.unwrap().broken;
    assert!(
        matches!(broken, Some(Break::Truncated { last, .. }) if last == head - 2),
        "{broken:?}"
    );
    app.finish().await;
}

async fn seq_id(app: &TestApp, seq: i64) -> i32 {
    app.store
        .audit_events(None)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.seq == Some(seq))
        .map(|e| e.id)
        .expect("an event at that link")
}

#[tokio::test]
async fn each_edit_deletion_swap_and_truncation_is_named_on_sqlite() {
    each_break_is_named(Backend::Sqlite).await;
}

#[tokio::test]
async fn each_edit_deletion_swap_and_truncation_is_named_on_postgres() {
    each_break_is_named(Backend::Postgres).await;
}

#[tokio::test]
async fn fifty_concurrent_requests_and_three_sealers_leave_one_unbroken_chain() {
    let (app, _hook) = spawn_hook_app(Backend::Postgres).await;
    let mut asks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let sender = app.sender.clone();
        asks.spawn(async move {
            sender
                .command_text(&format!("U0C{i:03}"), "request billing-admin 1h load")
                .await
        });
    }
    // Two more sealers beside the app's own, as two more replicas would run.
    let mut sealers = tokio::task::JoinSet::new();
    for _ in 0..2 {
        let store = app.store.clone();
        sealers.spawn(async move {
            for _ in 0..40 {
                store.seal_audit().await.expect("seals");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
    }
    for answer in asks.join_all().await {
        TestApp::id_in(&answer.unwrap());
    }
    sealers.join_all().await;
    let done = eventually(WAIT, || async {
        app.store.verify_audit().await.unwrap().unsealed == 0
    })
    .await;
    assert!(done);
    let report = app.store.verify_audit().await.unwrap();
    assert_eq!(report.broken, None, "{report:?}");
    let events = app.store.audit_events(None).await.unwrap();
    assert_eq!(
        report.sealed,
        events.len() as u64,
        "every event is linked once"
    );
    assert!(events.len() >= 50);
    app.finish().await;
}

#[tokio::test]
async fn audit_verify_and_export_from_the_command_line() {
    let app = chained(Backend::Sqlite).await;
    let url = app.database_url();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitbot"))
            .args(args)
            .env("JIT_DATABASE_URL", &url)
            .output()
            .expect("jitbot runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&["audit", "verify"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("the audit chain holds"), "{stdout}");

    let (code, json, _) = run(&["audit", "export", "--format", "json"]);
    assert_eq!(code, 0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("a JSON array");
    assert!(rows.len() >= 10);
    assert!(
        rows.iter()
            .all(|r| r["hash"].as_str().is_some_and(|h| h.len() == 64))
    );
    let (code, csv, _) = run(&[
        "audit",
        "export",
        "--format",
        "csv",
        "--since",
        "2000-01-01",
    ]);
    assert_eq!(code, 0);
    assert!(
        csv.starts_with("id,seq,at_ms,request_id,actor,action,detail,hash\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), rows.len() + 1);
    let (code, future, _) = run(&[
        "audit",
        "export",
        "--format",
        "csv",
        "--since",
        "2999-01-01",
    ]);
    assert_eq!(code, 0);
    assert_eq!(future.lines().count(), 1, "only the header");

    app.tamper("UPDATE audit_events SET actor = 'U0MALLORY' WHERE seq = 4")
        .await;
    let (code, _, stderr) = run(&["audit", "verify"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("link 4"), "{stderr}");
    app.finish().await;
}
