//! The weekly digest: its figures from a real store, posted once per period however many
//! replicas run and restart, and `jitbot digest --dry-run`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{TimeDelta, Utc};

use crate::support::*;

async fn seeded_figures(backend: Backend) {
    let ((app, hook), _) = spawn_hook_app_with(backend, |p| {
        p.replacen(
            "    approvers: [dba]\n  two-keys:",
            "    approvers: [dba]\n    break_glass: true\n  two-keys:",
            1,
        )
    })
    .await;
    let start = Utc::now() - TimeDelta::seconds(1);
    // Approved by Bob, denied by Carol, cancelled, auto-approved, self-approved, break-glass,
    // and one whose grant fails.
    let approved = TestApp::id_in(&app.say(ALICE, "request restricted 20m INC-1").await);
    app.click(BOB, APPROVE, approved).await;
    let denied = TestApp::id_in(&app.say(CAROL, "request two-keys 20m x").await);
    app.click(BOB, DENY, denied).await;
    let cancelled = TestApp::id_in(&app.say(CAROL, "request billing-admin 20m x").await);
    app.say(CAROL, &format!("cancel {cancelled}")).await;
    let auto = TestApp::id_in(&app.say(ALICE, "request ci-deploy 20m x").await);
    let own = TestApp::id_in(&app.say(ALICE, "request self-serve 20m x").await);
    app.click(ALICE, APPROVE, own).await;
    let glass = TestApp::id_in(&app.say(ALICE, "request billing-admin 20m INC-9 fire").await);
    app.say(ALICE, &format!("approve {glass}")).await;
    for id in [approved, auto, own, glass] {
        app.wait_state(id, "active").await;
    }
    app.state(denied).await;
    hook.fail_next(1_000);
    let failed = TestApp::id_in(&app.say(CAROL, "request ci-deploy 20m y").await);
    app.click(BOB, APPROVE, failed).await;
    app.wait_state(failed, "grant_failed").await;

    let now = Utc::now();
    let digest = jitbot::service::digest::gather(&app.store, start, now, now)
        .await
        .expect("the digest");
    assert_eq!(digest.requests, 7, "{digest:?}");
    let outcome = |state: &str| {
        digest
            .outcomes
            .iter()
            .find(|(s, _)| s == state)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    };
    assert_eq!(outcome("active"), 4, "{digest:?}");
    assert_eq!(
        (
            outcome("denied"),
            outcome("cancelled"),
            outcome("grant_failed")
        ),
        (1, 1, 1)
    );
    assert_eq!(digest.auto_approved, 1);
    assert_eq!(digest.self_approved, 1);
    assert_eq!(
        digest.break_glass,
        vec![(glass, ALICE.to_string(), "billing-admin".to_string())]
    );
    assert_eq!(digest.active_now, 4);
    assert!(digest.decision_median.is_some() && digest.decision_p95.is_some());
    assert_eq!(digest.top_requesters[0], (ALICE.to_string(), 4));
    assert!(
        digest
            .problems
            .iter()
            .any(|p| p.contains(&format!("#{failed}")) && p.contains("grant failed")),
        "{:?}",
        digest.problems
    );
    assert!(digest.chain_ok, "{}", digest.chain);
    // The problems come first in what people read.
    let text = jitbot::slack::digest::digest_text(&digest);
    let attention = text.find("Needs attention").expect("a problems part");
    assert!(
        attention < text.find("*Requests*").expect("the figures"),
        "{text}"
    );
    app.finish().await;
}

#[tokio::test]
async fn the_digest_counts_a_seeded_period_on_sqlite() {
    seeded_figures(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_digest_counts_a_seeded_period_on_postgres() {
    seeded_figures(Backend::Postgres).await;
}

/// The digest posts each app's fake Slack received, by the period they name.
fn posts(slacks: &[&jitbot::fakes::FakeSlack]) -> Vec<String> {
    slacks
        .iter()
        .flat_map(|s| s.calls_to("chat.postMessage"))
        .filter(|c| c.str("channel") == "C0AUDIT")
        // The first line names the period.
        .map(|c| c.str("text").lines().next().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn two_replicas_and_a_restart_post_each_period_once() {
    // A period every 3 seconds, two replicas on one PostgreSQL database.
    let policy_of =
        |p: String| format!("{p}digest:\n  channel: C0AUDIT\n  schedule: \"*/3 * * * * *\"\n");
    let ((first, _hook), _) = spawn_hook_app_with(Backend::Postgres, policy_of).await;
    let pg_url = first.pg.as_ref().expect("a PostgreSQL store").url.clone();
    let second_slack = jitbot::fakes::FakeSlack::start().await.expect("fake Slack");
    let policy = first.policy_text();
    let env: HashMap<String, String> = policy
        .lines()
        .filter_map(|l| l.split("secret_env: ").nth(1))
        .map(|v| v.trim_end_matches(" }").trim().to_string())
        .flat_map(|name| {
            [
                (name.clone(), "x".to_string()),
                (
                    format!("{name}_PG"),
                    "postgres://nobody@127.0.0.1:1/none".to_string(),
                ),
            ]
        })
        .collect();
    let second = spawn_with(
        pg_url.clone(),
        &policy,
        env.clone(),
        second_slack,
        None,
        tempfile::tempdir().expect("tempdir"),
    )
    .await;
    // Three or more periods pass with both running.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let seen = posts(&[&first.slack, &second.slack]);
    assert!(seen.len() >= 2, "digests posted: {seen:?}");
    let mut periods = seen.clone();
    periods.sort();
    periods.dedup();
    assert_eq!(periods.len(), seen.len(), "a period posted twice: {seen:?}");

    // A restart of one replica right after a post does not post that period again.
    let before_restart = posts(&[&second.slack]);
    drop(second);
    let third_slack = jitbot::fakes::FakeSlack::start().await.expect("fake Slack");
    let third = spawn_with(
        pg_url,
        &policy,
        env,
        third_slack,
        None,
        tempfile::tempdir().expect("tempdir"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let mut all = posts(&[&first.slack, &third.slack]);
    all.extend(before_restart);
    assert!(
        all.len() > seen.len(),
        "digests kept coming after the restart: {all:?}"
    );
    let mut periods = all.clone();
    periods.sort();
    periods.dedup();
    assert_eq!(periods.len(), all.len(), "a period posted twice: {all:?}");
    // The first replica's store counts them: one digest job per period.
    drop(third);
    first.finish().await;
}

#[tokio::test]
async fn jit_digest_for_admins_and_the_dry_run_from_the_command_line() {
    let policy_of = |p: String| {
        format!("{p}digest:\n  channel: C0AUDIT\n  schedule: \"0 0 9 * * Mon\"\n").replacen(
            "settings: { request_ttl: 1h, min_duration: 2s }",
            &format!("settings: {{ request_ttl: 1h, min_duration: 2s, admins: [{CAROL}] }}"),
            1,
        )
    };
    let ((app, _hook), _) = spawn_hook_app_with(Backend::Sqlite, policy_of).await;
    let id = TestApp::id_in(&app.say(ALICE, "request ci-deploy 20m deploy").await);
    app.wait_state(id, "active").await;
    let refused = app.say(ALICE, "digest").await;
    assert!(refused.contains("for the jitbot admins"), "{refused}");
    let shown = app.say(CAROL, "digest").await;
    assert!(shown.contains("jitbot weekly digest"), "{shown}");
    assert!(shown.contains("*Requests*: 1"), "{shown}");
    assert!(shown.contains("auto-approved 1"), "{shown}");

    // The same period from the command line, on the same store, with nothing posted.
    let policy_path = app.policy_path.clone();
    let db = format!(
        "sqlite://{}?mode=rwc",
        app.dir.path().join("jitbot.db").display()
    );
    let TestApp {
        running,
        dir,
        slack,
        ..
    } = app;
    drop(running);
    let today = Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitbot"))
        .args(["digest", "--dry-run", "--at", &today, "--policy"])
        .arg(&policy_path)
        .env("JIT_DATABASE_URL", &db)
        .env("JIT_HOOK_UNUSED", "x")
        .output()
        .expect("jitbot digest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("jitbot weekly digest"), "{stdout}");
    assert!(stdout.contains("Requests: 1"), "{stdout}");
    assert!(
        !stdout.contains("<!date"),
        "plain text for a terminal: {stdout}"
    );
    assert!(stdout.contains("Audit chain verified"), "{stdout}");
    assert!(
        slack
            .calls_to("chat.postMessage")
            .iter()
            .all(|c| c.str("channel") != "C0AUDIT")
    );
    // Without --dry-run it says what posts the digest.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jitbot"))
        .args(["digest", "--policy"])
        .arg(&policy_path)
        .env("JIT_DATABASE_URL", &db)
        .output()
        .expect("jitbot digest runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dry-run"));
    drop(dir);
}
