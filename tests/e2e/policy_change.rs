//! The policy in force decides every step: approvals of people who are no longer approvers stop
//! counting, pending requests the new policy refuses end `cancelled` at reload and at start, a
//! refused file keeps the old policy, admins can end grants of removed resources, and a grant
//! not confirmed within `grant_deadline` is `grant_failed`, never active.

use std::collections::HashMap;
use std::time::Duration;

use jitbot::fakes::FakeSlack;

use crate::support::*;

const DAVE: &str = "U0DAVE";

async fn removed_approvers_stop_counting(backend: Backend) {
    let (app, hook) = spawn_hook_app(backend).await;
    let id = TestApp::id_in(&app.say(ALICE, "request two-keys 1h rotation").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_card_update("1 of 2").await;
    // Bob leaves the dba group; Dave joins.
    let policy = app.edited(
        &format!("dba: {{ members: [{BOB}, {CAROL}] }}"),
        &format!("dba: {{ members: [{CAROL}, {DAVE}] }}"),
    );
    assert_eq!(app.reload(&policy).await.unwrap(), 0, "nothing to cancel");
    // Carol's approval is the first that counts now: the request still waits.
    app.click(CAROL, APPROVE, id).await;
    app.wait_card_update(&format!("approved by <@{CAROL}> (1 of 2)"))
        .await;
    assert_eq!(
        app.state(id).await,
        "pending",
        "Bob's approval no longer counts"
    );
    // Bob's own later click is refused: he is not an approver any more.
    app.click(BOB, APPROVE, id).await;
    app.wait_ephemeral(BOB, "not an approver").await;
    app.click(DAVE, APPROVE, id).await;
    app.wait_state(id, "active").await;
    let grant = hook.wait_for("grant", 1, WAIT).await.unwrap();
    let approved_by = grant[0].body["approved_by"].clone();
    assert_eq!(
        approved_by,
        serde_json::json!([CAROL, DAVE]),
        "Bob is not named"
    );
    let card = app.wait_card_update("Approved by").await;
    assert!(
        !card.body.to_string().contains(BOB),
        "the card names only approvals that counted: {}",
        card.body
    );
    app.finish().await;
}

#[tokio::test]
async fn approvals_of_removed_approvers_stop_counting_on_sqlite() {
    removed_approvers_stop_counting(Backend::Sqlite).await;
}

#[tokio::test]
async fn approvals_of_removed_approvers_stop_counting_on_postgres() {
    removed_approvers_stop_counting(Backend::Postgres).await;
}

async fn reload_cancels_what_the_policy_no_longer_allows(backend: Backend) {
    let (app, hook) = spawn_hook_app(backend).await;
    let restricted = TestApp::id_in(&app.say(ALICE, "request restricted 30m INC-1").await);
    let long = TestApp::id_in(&app.say(ALICE, "request billing-admin 2h INC-2").await);
    let removed = TestApp::id_in(&app.say(ALICE, "request two-keys 1h INC-3").await);
    let kept = TestApp::id_in(&app.say(ALICE, "request self-serve 1h INC-4").await);
    let policy = app
        .edited(&format!("requesters: [{ALICE}, dba]"), "requesters: [dba]")
        .replacen("max_duration: 2h", "max_duration: 1h", 1);
    let policy = policy.replacen("  two-keys:\n", "  two-keys-gone:\n", 1);
    assert_eq!(app.reload(&policy).await.unwrap(), 3);
    for id in [restricted, long, removed] {
        assert_eq!(app.state(id).await, "cancelled", "#{id}");
        assert!(
            app.audit_actions(id)
                .await
                .contains(&"cancelled".to_string())
        );
    }
    assert_eq!(app.state(kept).await, "pending");
    let dm = app.wait_dm(ALICE, "policy changed").await;
    assert!(
        dm.str("text").contains("See `/jit explain"),
        "{}",
        dm.str("text")
    );
    app.wait_card_update("Cancelled by jitbot").await;
    // A cancelled request cannot be approved any more.
    app.click(BOB, APPROVE, long).await;
    app.wait_ephemeral(BOB, "already cancelled").await;
    assert!(hook.events().is_empty(), "nothing was granted");
    assert_eq!(
        app.running
            .metrics
            .policy_cancellations
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    app.finish().await;
}

#[tokio::test]
async fn a_reload_cancels_pending_requests_the_policy_no_longer_allows_on_sqlite() {
    reload_cancels_what_the_policy_no_longer_allows(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_reload_cancels_pending_requests_the_policy_no_longer_allows_on_postgres() {
    reload_cancels_what_the_policy_no_longer_allows(Backend::Postgres).await;
}

async fn unchanged_rules_are_not_walked_again(backend: Backend) {
    let (app, hook) = spawn_hook_app(backend).await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 2h INC-5").await);
    let same = app.policy_text();
    // The start's walk may still be under way: a reload walks (or finds it done), and marks.
    assert_eq!(app.reload(&same).await.unwrap(), 0);
    // A request the policy would refuse, stored behind jitbot's back: only a walk finds it.
    app.tamper(&format!(
        "UPDATE requests SET duration_secs = 10800 WHERE id = {id}"
    ))
    .await;
    assert_eq!(
        app.reload(&same).await.unwrap(),
        0,
        "the same rules: nothing walked"
    );
    assert_eq!(app.state(id).await, "pending");
    // Any change to the rules walks again.
    let looser = app.edited("max_duration: 2h", "max_duration: 3h");
    assert_eq!(app.reload(&looser).await.unwrap(), 0, "3h is allowed now");
    assert_eq!(app.reload(&same).await.unwrap(), 1, "2h again: walked");
    assert_eq!(app.state(id).await, "cancelled");
    assert!(hook.events().is_empty());
    app.finish().await;
}

#[tokio::test]
async fn a_reload_of_unchanged_rules_walks_no_pending_request_on_sqlite() {
    unchanged_rules_are_not_walked_again(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_reload_of_unchanged_rules_walks_no_pending_request_on_postgres() {
    unchanged_rules_are_not_walked_again(Backend::Postgres).await;
}

async fn a_click_under_a_changed_policy_cancels_instead_of_granting_on(backend: Backend) {
    // The policy file changes between the ask and the click, and the click comes before any
    // reload has run over the pending requests: the click itself holds the request to it.
    let (app, hook) = spawn_hook_app(backend).await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 2h INC-9").await);
    let policy = app.edited("max_duration: 2h", "max_duration: 1h");
    let (changed, _) = jitbot::domain::Policy::parse("p.yaml", &policy).unwrap();
    app.running.reloader.policy().replace(changed);
    app.click(BOB, APPROVE, id).await;
    app.wait_ephemeral(BOB, "was cancelled").await;
    assert_eq!(app.state(id).await, "cancelled");
    assert!(hook.events().is_empty());
    app.finish().await;
}

#[tokio::test]
async fn a_click_under_a_changed_policy_cancels_instead_of_granting_on_sqlite() {
    a_click_under_a_changed_policy_cancels_instead_of_granting_on(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_click_under_a_changed_policy_cancels_instead_of_granting_on_postgres() {
    a_click_under_a_changed_policy_cancels_instead_of_granting_on(Backend::Postgres).await;
}

async fn a_policy_file_that_fails_check_is_refused_and_the_old_one_stays_on(backend: Backend) {
    let (app, _hook) = spawn_hook_app(backend).await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    let broken = app.edited("approvers: [dba]", "approvers: [nobody-knows]");
    let error = app.reload(&broken).await.unwrap_err();
    assert!(
        format!("{error:#}").contains("nobody-knows"),
        "the refusal names the problem: {error:#}"
    );
    let metrics = app.running.metrics.render(None, 0);
    assert!(
        metrics.contains("jitbot_policy_reload_failures_total 1"),
        "{metrics}"
    );
    assert_eq!(app.state(id).await, "pending", "nothing cancelled");
    // The old policy still decides: Bob is still an approver.
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    // A syntax error is refused the same way.
    assert!(app.reload("resources: [").await.is_err());
    assert!(
        app.running
            .metrics
            .render(None, 0)
            .contains("jitbot_policy_reload_failures_total 2")
    );
    app.finish().await;
}

#[tokio::test]
async fn a_policy_file_that_fails_check_is_refused_and_the_old_one_stays_on_sqlite() {
    a_policy_file_that_fails_check_is_refused_and_the_old_one_stays_on(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_policy_file_that_fails_check_is_refused_and_the_old_one_stays_on_postgres() {
    a_policy_file_that_fails_check_is_refused_and_the_old_one_stays_on(Backend::Postgres).await;
}

async fn start_cancels_what_the_policy_no_longer_allows(backend: Backend) {
    let (app, _hook) = spawn_hook_app(backend).await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 2h INC-7").await);
    let policy = app.edited("max_duration: 2h", "max_duration: 1h");
    let database_url = app.database_url();
    // The webhook secret's variables, as the first app had them.
    let env: HashMap<String, String> = secret_env_of(&policy);
    let TestApp {
        running,
        pg,
        dir,
        store,
        slack,
        sender,
        ..
    } = app;
    drop((running, store, slack, sender));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let slack = FakeSlack::start().await.unwrap();
    let second = spawn_with(database_url, &policy, env, slack, pg, dir).await;
    second.wait_state(id, "cancelled").await;
    second.wait_dm(ALICE, "policy changed").await;
    second.finish().await;
}

/// The variables a hook policy names, set to values that let the app start.
fn secret_env_of(policy: &str) -> HashMap<String, String> {
    let name = policy
        .split("secret_env: ")
        .nth(1)
        .and_then(|rest| rest.split([' ', '}']).next())
        .expect("secret_env in the policy")
        .to_string();
    HashMap::from([
        (name.clone(), "any".to_string()),
        (
            format!("{name}_PG"),
            "postgres://nobody@127.0.0.1:1/none".to_string(),
        ),
    ])
}

#[tokio::test]
async fn a_start_under_a_changed_policy_cancels_what_it_no_longer_allows_on_sqlite() {
    start_cancels_what_the_policy_no_longer_allows(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_start_under_a_changed_policy_cancels_what_it_no_longer_allows_on_postgres() {
    start_cancels_what_the_policy_no_longer_allows(Backend::Postgres).await;
}

async fn admin_ends_a_grant_of_a_removed_resource(backend: Backend) {
    let (app, hook) = spawn_hook_app(backend).await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    // billing-admin leaves the policy; Dave is made an admin.
    let policy = app
        .edited("  billing-admin:\n", "  billing-admin-v2:\n")
        .replacen("settings: {", &format!("settings: {{ admins: [{DAVE}],"), 1);
    assert_eq!(app.reload(&policy).await.unwrap(), 0);
    // Its approvers went with it: Bob may not end it, Mallory neither.
    let bob = app.say(BOB, &format!("revoke {id}")).await;
    assert!(bob.contains("Only the requester"), "{bob}");
    let mallory = app.say(MALLORY, &format!("revoke {id}")).await;
    assert!(mallory.contains("Only the requester"), "{mallory}");
    assert_eq!(app.state(id).await, "active");
    // The admin can, and the revoke uses the grant's own copy of the provider.
    let dave = app.say(DAVE, &format!("revoke {id}")).await;
    assert!(dave.contains("being revoked"), "{dave}");
    app.wait_state(id, "revoked").await;
    hook.wait_for("revoke", 1, WAIT).await.unwrap();
    app.finish().await;
}

#[tokio::test]
async fn an_admin_ends_a_grant_of_a_removed_resource_on_sqlite() {
    admin_ends_a_grant_of_a_removed_resource(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_admin_ends_a_grant_of_a_removed_resource_on_postgres() {
    admin_ends_a_grant_of_a_removed_resource(Backend::Postgres).await;
}

async fn a_late_grant_is_failed_not_started(backend: Backend) {
    // The provider takes 3 s to confirm; the grant deadline is 1 s.
    let ((app, hook), _) = spawn_hook_app_with(backend, |p| {
        p.replacen("settings: {", "settings: { grant_deadline: 1s,", 1)
    })
    .await;
    hook.set_delay(Duration::from_secs(3));
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "grant_failed").await;
    // What the provider did late is taken back, and the request never became active.
    hook.wait_for("revoke", 1, Duration::from_secs(20))
        .await
        .unwrap();
    hook.set_delay(Duration::ZERO);
    assert_eq!(app.state(id).await, "grant_failed");
    let actions = app.audit_actions(id).await;
    assert!(!actions.contains(&"granted".to_string()), "{actions:?}");
    app.wait_dm(ALICE, "grant deadline").await;
    app.wait_channel_note("grant deadline").await;
    app.finish().await;
}

#[tokio::test]
async fn a_grant_confirmed_after_the_deadline_is_failed_and_taken_back_on_sqlite() {
    a_late_grant_is_failed_not_started(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_grant_confirmed_after_the_deadline_is_failed_and_taken_back_on_postgres() {
    a_late_grant_is_failed_not_started(Backend::Postgres).await;
}

async fn a_provider_down_past_the_deadline_gives_grant_failed_and_no_grant_after_it_on(
    backend: Backend,
) {
    let ((app, hook), _) = spawn_hook_app_with(backend, |p| {
        p.replacen("settings: {", "settings: { grant_deadline: 1s,", 1)
    })
    .await;
    // Down until after the deadline: each refusal takes 400 ms, so the deadline passes on the
    // third attempt, before the five attempts are spent.
    hook.set_delay(Duration::from_millis(400));
    hook.fail_next(1_000);
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "grant_failed").await;
    app.wait_dm(ALICE, "grant deadline").await;
    hook.set_delay(Duration::ZERO);
    hook.fail_next(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.state(id).await, "grant_failed");
    assert!(
        !app.audit_actions(id).await.contains(&"granted".to_string()),
        "no grant accepted after grant_failed"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_provider_down_past_the_deadline_gives_grant_failed_and_no_grant_after_it_on_sqlite() {
    a_provider_down_past_the_deadline_gives_grant_failed_and_no_grant_after_it_on(Backend::Sqlite)
        .await;
}

#[tokio::test]
async fn a_provider_down_past_the_deadline_gives_grant_failed_and_no_grant_after_it_on_postgres() {
    a_provider_down_past_the_deadline_gives_grant_failed_and_no_grant_after_it_on(
        Backend::Postgres,
    )
    .await;
}

/// The real binary: `SIGHUP` puts a changed policy in force (a pending request it no longer
/// allows is cancelled) and a broken file is refused without stopping anything. The signing
/// secret comes from a file, as Docker and Kubernetes secrets do.
#[tokio::test]
async fn sighup_reloads_the_policy_of_a_running_serve() {
    let dir = tempfile::tempdir().unwrap();
    let hook_secret = format!("hook-{}", suffix());
    let hook = jitbot::fakes::WebhookReceiver::start(&hook_secret)
        .await
        .unwrap();
    let secret_env = format!("JIT_HOOK_{}", suffix().to_uppercase());
    let policy_path = dir.path().join("policy.yaml");
    let policy = |max: &str| {
        format!(
            "settings: {{ min_duration: 1s }}\ngroups:\n  dba: {{ members: [{BOB}] }}\n\
             providers:\n  hooks: {{ kind: webhook, url: \"{}\", secret_env: {secret_env} }}\nresources:\n  app:\n    provider: hooks\n    grant: {{ app: x }}\n    \
             max_duration: {max}\n    channel: C0REVIEW\n    approvers: [dba]\n",
            hook.url
        )
    };
    std::fs::write(&policy_path, policy("2h")).unwrap();
    let signing_secret = format!("secret-{}", suffix());
    let secret_file = dir.path().join("signing-secret");
    std::fs::write(&secret_file, format!("{signing_secret}\n")).unwrap();
    let slack = FakeSlack::start().await.unwrap();
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("jitbot.db").display()
    );
    let env = vec![
        (secret_env.clone(), hook_secret.clone()),
        (
            "SLACK_SIGNING_SECRET_FILE".to_string(),
            secret_file.display().to_string(),
        ),
    ];
    let mut server = serve(&db_url, &policy_path, &slack.base_url, "unused", &env);
    let sender = jitbot::fakes::SlackSender::new(&server.url, &signing_secret);
    let answer = sender
        .command_text(ALICE, "request app 2h INC-1")
        .await
        .unwrap();
    let id = TestApp::id_in(&answer);
    let pid = server.child.id() as i32;
    let hangup = || {
        // SAFETY: sending a signal to our own child process.
        let sent = unsafe { libc::kill(pid, libc::SIGHUP) };
        assert_eq!(sent, 0, "SIGHUP sent");
    };

    // A broken file: refused, the process keeps serving under the old policy.
    std::fs::write(&policy_path, "resources: [").unwrap();
    hangup();
    let metrics_url = format!("{}/metrics", server.url);
    let refused = eventually(WAIT, || async {
        match reqwest::get(&metrics_url).await {
            Ok(r) => r
                .text()
                .await
                .unwrap_or_default()
                .contains("jitbot_policy_reload_failures_total 1"),
            Err(_) => false,
        }
    })
    .await;
    assert!(refused, "the broken file was counted as refused");
    assert!(server.child.try_wait().unwrap().is_none(), "still running");

    // The good file with a shorter maximum: the 2h request is cancelled.
    std::fs::write(&policy_path, policy("1h")).unwrap();
    hangup();
    slack
        .wait_until(WAIT, "the policy-changed DM", |calls| {
            calls
                .iter()
                .any(|c| c.str("channel") == ALICE && c.str("text").contains("policy changed"))
        })
        .await
        .unwrap();
    let after = sender.command_text(ALICE, "list").await.unwrap();
    assert!(
        after.contains(&format!("#{id} *app* · cancelled")),
        "{after}"
    );
    assert!(server.child.try_wait().unwrap().is_none(), "still running");
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("jitbot_policy_reloads_total 1"),
        "{metrics}"
    );
    assert!(hook.events().is_empty());
}

async fn a_grant_still_being_retried_when_the_policy_changes_is_not_granted_on(backend: Backend) {
    let (app, hook) = spawn_hook_app(backend).await;
    // The provider refuses the first attempts; meanwhile the maximum drops below the request.
    hook.fail_next(3);
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 2h INC-5").await);
    app.click(BOB, APPROVE, id).await;
    hook.wait_deliveries(1, WAIT).await.unwrap();
    let policy = app.edited("max_duration: 2h", "max_duration: 1h");
    // Nothing pending to cancel: the request is approved, its grant under way.
    assert_eq!(app.reload(&policy).await.unwrap(), 0);
    app.wait_state(id, "grant_failed").await;
    app.wait_dm(ALICE, "policy changed").await;
    assert!(
        hook.events_of("grant").len() <= 3,
        "no grant accepted after the change"
    );
    assert!(!app.audit_actions(id).await.contains(&"granted".to_string()));
    app.finish().await;
}

#[tokio::test]
async fn a_grant_still_being_retried_when_the_policy_changes_is_not_granted_on_sqlite() {
    a_grant_still_being_retried_when_the_policy_changes_is_not_granted_on(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_grant_still_being_retried_when_the_policy_changes_is_not_granted_on_postgres() {
    a_grant_still_being_retried_when_the_policy_changes_is_not_granted_on(Backend::Postgres).await;
}
