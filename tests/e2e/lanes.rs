//! Revocation never waits in line: a hung Slack, a hung provider or a locked PostgreSQL role holds
//! back only its own work; redirects are not confirmations; a grant stopped while it is under way
//! leaves no access behind.

use std::collections::HashMap;
use std::time::Duration;

use jitbot::fakes::{HookFault, SlackFault};

use crate::support::*;

/// How late a revoke may reach its provider when nothing else is wrong with that provider.
const ON_TIME: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

async fn active_grant(app: &TestApp, text: &str) -> i32 {
    let answer = app.say(ALICE, text).await;
    assert!(answer.contains("auto-approved"), "{answer}");
    let id = TestApp::id_in(&answer);
    app.wait_state(id, "active").await;
    id
}

#[tokio::test]
async fn a_hung_slack_does_not_hold_back_a_revoke() {
    let (app, hook) = spawn_hook_app(Backend::Sqlite).await;
    // From here on every post and update hangs: the fake never answers.
    app.slack
        .fault("chat.postMessage", None, SlackFault::Hang, u32::MAX);
    app.slack
        .fault("chat.update", None, SlackFault::Hang, u32::MAX);
    let id = active_grant(&app, "request ci-deploy 3s release").await;
    let lag = revoke_lag(&app, &hook, id).await;
    eprintln!("revoke lag with Slack hung: {lag}");
    assert!(lag < ON_TIME, "revoked {lag} after expiry");
    app.wait_state(id, "expired").await;
    assert!(
        app.slack
            .attempts()
            .iter()
            .any(|c| c.answer == "hang" && c.method == "chat.postMessage"),
        "Slack was asked and hung"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_hung_provider_holds_back_only_its_own_jobs_and_its_calls_time_out_and_retry() {
    let (app, hook, other) = spawn_two_hooks(Backend::Postgres, |p| {
        p.replace("secret_env: JIT_HOOK", "timeout: 1s, secret_env: JIT_HOOK")
    })
    .await;
    let slow = active_grant(&app, "request ci-deploy 3s release").await;
    let lone = active_grant(&app, "request other-app 3s check").await;
    // The first provider stops answering before either expires.
    hook.fault_next(u32::MAX, HookFault::Hang);
    let before = hook.deliveries();
    let lag = revoke_lag(&app, &other, lone).await;
    eprintln!("revoke lag on the healthy provider: {lag}");
    assert!(
        lag < ON_TIME,
        "the healthy provider's revoke was {lag} late"
    );
    app.wait_state(lone, "expired").await;
    // The hung revoke times out (1 s) and is sent again.
    hook.wait_deliveries(before + 2, WAIT).await.unwrap();
    app.wait_state(slow, "revoke_failed").await;
    let error = app
        .store
        .grant(slow)
        .await
        .unwrap()
        .and_then(|g| g.last_error)
        .unwrap_or_default();
    assert!(
        error.contains("no answer") && error.contains("revoke"),
        "the timeout is the recorded error: {error}"
    );
    // It answers again: the revoke goes through.
    hook.fault_next(0, HookFault::Hang);
    app.wait_state(slow, "expired").await;
    assert_eq!(hook.events_of("revoke").len(), 1);
    app.finish().await;
}

#[tokio::test]
async fn a_grant_stuck_on_a_postgres_lock_times_out_and_retries_while_other_revokes_are_on_time() {
    let mut target = PgScratch::new().await;
    let role = target.role("prod_rw", false).await;
    let login = target.role("alice", true).await;
    let secret = format!("hook-{}", suffix());
    let hook = jitbot::fakes::WebhookReceiver::start(&secret)
        .await
        .unwrap();
    let admin_env = format!("JIT_PG_ADMIN_{}", suffix().to_uppercase());
    let hook_env = format!("JIT_HOOK_{}", suffix().to_uppercase());
    let policy = format!(
        "settings: {{ min_duration: 1s }}\ngroups:\n  dba: {{ members: [{BOB}] }}\nidentities:\n  {ALICE}: {{ postgres: {login}, email: alice@example.com }}\n\
         providers:\n  pg: {{ kind: postgres, url_env: {admin_env}, timeout: 2s }}\n  hooks: {{ kind: webhook, url: \"{}\", secret_env: {hook_env} }}\n\
         resources:\n  prod-db:\n    provider: pg\n    grant: {{ role: {role} }}\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n    \
         auto_approve: [{{ requesters: [{ALICE}], max_duration: 1h }}]\n  \
         app:\n    provider: hooks\n    grant: {{ app: x }}\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n    \
         auto_approve: [{{ requesters: [{ALICE}], max_duration: 1h }}]\n",
        hook.url
    );
    let env = HashMap::from([(admin_env, target.url.clone()), (hook_env, secret)]);
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(
        format!("sqlite://{}?mode=rwc", dir.path().join("j.db").display()),
        &policy,
        env,
        jitbot::fakes::FakeSlack::start().await.unwrap(),
        None,
        dir,
    )
    .await;
    let other = active_grant(&app, "request app 3s deploy").await;
    // Another session is granting the same role to the same login and has not committed: our
    // GRANT must wait for it.
    let mut blocker = target.admin.begin().await.unwrap();
    sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(format!(
        "GRANT \"{role}\" TO \"{login}\""
    )))
    .execute(&mut *blocker)
    .await
    .unwrap();
    let answer = app.say(ALICE, "request prod-db 1h INC-1").await;
    let stuck = TestApp::id_in(&answer);
    let lag = revoke_lag(&app, &hook, other).await;
    assert!(lag < ON_TIME, "an unrelated revoke was {lag} late");
    let timed_out = eventually(WAIT, || async {
        app.store
            .grant(stuck)
            .await
            .unwrap()
            .and_then(|g| g.last_error)
            .is_some_and(|e| e.contains("lock timeout"))
    })
    .await;
    assert!(timed_out, "the GRANT gave up on the lock");
    assert_eq!(app.state(stuck).await, "approved", "and is retried");
    blocker.rollback().await.unwrap();
    app.wait_state(stuck, "active").await;
    assert!(target.is_member(&role, &login).await);
    app.finish().await;
    target.drop_all().await;
}

async fn redirects_are_not_a_revoke(backend: Backend) {
    let (app, hook) = spawn_hook_app(backend).await;
    let id = active_grant(&app, "request ci-deploy 2s release").await;
    for status in [302, 301, 307] {
        let before = hook.deliveries();
        hook.fault_next(2, HookFault::Status(status));
        hook.wait_deliveries(before + 2, WAIT).await.unwrap();
        let state = app.state(id).await;
        assert_eq!(state, "revoke_failed", "after {status}");
        assert!(hook.events_of("revoke").is_empty(), "after {status}");
    }
    app.wait_state(id, "expired").await;
    assert_eq!(hook.events_of("revoke").len(), 1);
    let actions = app.audit_actions(id).await;
    let expired_at = actions.iter().position(|a| a == "expired").unwrap();
    assert!(
        actions[..expired_at].iter().any(|a| a == "revoke_failed"),
        "{actions:?}"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_webhook_that_redirects_a_revoke_has_not_revoked_on_sqlite() {
    redirects_are_not_a_revoke(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_webhook_that_redirects_a_revoke_has_not_revoked_on_postgres() {
    redirects_are_not_a_revoke(Backend::Postgres).await;
}

#[tokio::test]
async fn cancelling_while_the_grant_keeps_failing_leaves_no_access() {
    let (app, hook) = spawn_hook_app(Backend::Sqlite).await;
    hook.fail_next(1_000);
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.click(BOB, APPROVE, id).await;
    hook.wait_deliveries(2, WAIT).await.unwrap();
    let answer = app.say(ALICE, &format!("cancel {id}")).await;
    assert!(answer.contains("is cancelled"), "{answer}");
    hook.fail_next(0);
    app.wait_state(id, "cancelled").await;
    // A revoke goes out in case part of a failed grant took; no grant is attempted any more.
    hook.wait_for("revoke", 1, WAIT).await.unwrap();
    let deliveries = hook.deliveries();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hook.deliveries(), deliveries, "the grant stopped");
    assert!(hook.events_of("grant").is_empty());
    app.wait_dm(ALICE, "grant under way was stopped").await;
    app.finish().await;
}

#[tokio::test]
async fn revoking_while_the_grant_is_in_flight_takes_back_what_lands() {
    let (app, hook) = spawn_hook_app(Backend::Postgres).await;
    hook.set_delay(Duration::from_millis(1_500));
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.click(BOB, APPROVE, id).await;
    hook.wait_deliveries(1, WAIT).await.unwrap();
    // The grant call is in flight (the receiver takes 1.5 s): an approver revokes.
    let answer = app.say(CAROL, &format!("revoke {id}")).await;
    assert!(answer.contains("not active yet"), "{answer}");
    hook.set_delay(Duration::ZERO);
    app.wait_state(id, "revoked").await;
    let events = hook.events();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.body["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        kinds,
        ["grant", "revoke"],
        "the grant landed, then was taken back"
    );
    assert!(events[1].received_at >= events[0].received_at);
    app.finish().await;
}

#[tokio::test]
async fn a_decision_is_once_per_person_and_every_clicker_hears_the_truth() {
    let ((app, hook), _) = spawn_hook_app_with(Backend::Postgres, |p| {
        p.replace(
            &format!("dba: {{ members: [{BOB}, {CAROL}] }}"),
            &format!("dba: {{ members: [{BOB}, {CAROL}, U0DAVE] }}"),
        )
    })
    .await;
    // Approve, then deny: the second decision is refused and changes nothing.
    let id = TestApp::id_in(&app.say(ALICE, "request two-keys 1h rotation").await);
    assert!(
        app.say(BOB, &format!("approve {id}"))
            .await
            .contains("1 of 2")
    );
    let answer = app.say(BOB, &format!("deny {id}")).await;
    assert!(
        answer.contains("already approved") && answer.contains("cannot be changed"),
        "{answer}"
    );
    assert_eq!(app.state(id).await, "pending");
    app.say(ALICE, &format!("cancel {id}")).await;

    // Three approvers at once on a card that needs two.
    let id = TestApp::id_in(&app.say(ALICE, "request two-keys 1h again").await);
    let app = std::sync::Arc::new(app);
    let mut answers = Vec::new();
    for who in [BOB, CAROL, "U0DAVE"] {
        let app = app.clone();
        answers.push(tokio::spawn(async move {
            app.say(who, &format!("approve {id}")).await
        }));
    }
    let mut texts = Vec::new();
    for a in answers {
        texts.push(a.await.unwrap());
    }
    texts.sort();
    let granted = texts
        .iter()
        .filter(|t| t.contains("access is being granted"))
        .count();
    let recorded = texts
        .iter()
        .filter(|t| t.contains("is recorded (1 of 2)"))
        .count();
    let late = texts
        .iter()
        .filter(|t| t.contains("is already approved"))
        .count();
    assert_eq!((granted, recorded, late), (1, 1, 1), "{texts:#?}");
    let decisions = app.store.decisions(id).await.unwrap();
    assert_eq!(
        decisions.len(),
        2,
        "only counted votes are stored: {decisions:?}"
    );
    app.wait_state(id, "active").await;
    let grants = hook.wait_for("grant", 1, WAIT).await.unwrap();
    assert_eq!(
        grants[0].body["approved_by"].as_array().map(Vec::len),
        Some(2)
    );
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.finish().await,
        Err(_) => panic!("app still shared"),
    }
}
