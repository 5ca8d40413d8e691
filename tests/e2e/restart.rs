//! `kill -9` and start again: an overdue grant is revoked within seconds, a revoke cut off in
//! flight is sent again within seconds, nothing runs twice; one `serve` per SQLite file.

use std::process::Command;
use std::time::{Duration, Instant};

use jitbot::fakes::{FakeSlack, SlackSender};

use crate::support::*;

#[tokio::test]
async fn a_killed_process_catches_up_on_start_and_does_nothing_twice() {
    let mut target = PgScratch::new().await;
    let role = target.role("prod_rw", false).await;
    let login = target.role("alice", true).await;
    let admin_env = format!("JIT_PG_ADMIN_{}", suffix().to_uppercase());
    let dir = tempfile::tempdir().unwrap();
    let policy_path = dir.path().join("policy.yaml");
    let policy = format!(
        "settings: {{ min_duration: 1s }}\ngroups:\n  dba: {{ members: [{BOB}] }}\nidentities:\n  {ALICE}: {{ postgres: {login} }}\n\
         providers:\n  pg: {{ kind: postgres, url_env: {admin_env} }}\nresources:\n  prod-db:\n    provider: pg\n    grant: {{ role: {role} }}\n    \
         max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n"
    );
    std::fs::write(&policy_path, policy).unwrap();
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("jitbot.db").display()
    );
    let slack = FakeSlack::start().await.unwrap();
    let secret = format!("secret-{}", suffix());
    let env = vec![(admin_env.clone(), target.url.clone())];

    let first = serve(&db_url, &policy_path, &slack.base_url, &secret, &env);
    let sender = SlackSender::new(&first.url, &secret);
    let answer = sender
        .command_text(ALICE, "request prod-db 4s crash test")
        .await
        .unwrap();
    let id = TestApp::id_in(&answer);
    sender.click(BOB, APPROVE, &id.to_string()).await.unwrap();
    assert!(
        eventually(WAIT, || async { target.is_member(&role, &login).await }).await,
        "role granted"
    );
    slack
        .wait_until(WAIT, "the approval DM", |c| {
            c.iter().any(|c| c.str("channel") == ALICE)
        })
        .await
        .unwrap();
    // Kill it once everything but the expiry is done, so a repeat would be jitbot's fault.
    let store = jitbot::store::Store::connect(&db_url).await.unwrap();
    let settled = eventually(WAIT, || async {
        let jobs = store.pending_jobs().await.unwrap();
        jobs.iter()
            .all(|j| ["end_access", "timeout", "maintain"].contains(&j.kind.as_str()))
    })
    .await;
    assert!(
        settled,
        "jobs left: {:?}",
        store.pending_jobs().await.unwrap()
    );

    // kill -9, and stay down past the expiry.
    let mut first = first;
    first.child.kill().unwrap(); // SIGKILL on Unix
    first.child.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        target.is_member(&role, &login).await,
        "nothing revoked while down"
    );
    let dms_before = slack
        .calls()
        .iter()
        .filter(|c| c.str("channel") == ALICE)
        .count();

    let started = Instant::now();
    let second = serve(&db_url, &policy_path, &slack.base_url, &secret, &env);
    assert!(
        eventually(WAIT, || async { !target.is_member(&role, &login).await }).await,
        "overdue grant revoked after restart"
    );
    let caught_up = started.elapsed();
    eprintln!("catch-up after restart: role gone {caught_up:?} after the process started");
    assert!(caught_up < Duration::from_secs(10));
    slack
        .wait_until(WAIT, "the expiry DM", |c| {
            c.iter()
                .any(|c| c.str("channel") == ALICE && c.str("text").contains("expired"))
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dms: Vec<_> = slack
        .calls()
        .into_iter()
        .filter(|c| c.str("channel") == ALICE)
        .collect();
    assert_eq!(
        dms.len(),
        dms_before + 1,
        "one new DM (expiry), nothing repeated: {dms:#?}"
    );
    let cards = slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c.str("channel") == "C0REVIEW")
        .count();
    assert_eq!(cards, 1, "the card was posted once");
    drop(second);
    target.drop_all().await;
}

fn hook_policy_file(dir: &std::path::Path, hook_url: &str, secret_env: &str) -> std::path::PathBuf {
    let path = dir.join("policy.yaml");
    std::fs::write(
        &path,
        format!(
            "settings: {{ min_duration: 1s }}\ngroups:\n  dba: {{ members: [{BOB}] }}\nidentities:\n  {ALICE}: {{ email: alice@example.com }}\n\
             providers:\n  hooks: {{ kind: webhook, url: \"{hook_url}\", secret_env: {secret_env} }}\nresources:\n  app:\n    provider: hooks\n    grant: {{ app: x }}\n    \
             max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n    auto_approve: [{{ requesters: [{ALICE}], max_duration: 1h }}]\n"
        ),
    )
    .unwrap();
    path
}

async fn a_revoke_cut_off_in_flight_is_sent_again_soon_after_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let pg = match backend {
        Backend::Postgres => Some(PgScratch::new().await),
        Backend::Sqlite => None,
    };
    let db_url = match &pg {
        Some(pg) => pg.url.clone(),
        None => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("jitbot.db").display()
        ),
    };
    let hook_secret = format!("hook-{}", suffix());
    let hook = jitbot::fakes::WebhookReceiver::start(&hook_secret)
        .await
        .unwrap();
    let secret_env = format!("JIT_HOOK_{}", suffix().to_uppercase());
    let policy = hook_policy_file(dir.path(), &hook.url, &secret_env);
    let slack = FakeSlack::start().await.unwrap();
    let secret = format!("secret-{}", suffix());
    let env = vec![(secret_env, hook_secret)];

    let first = serve(&db_url, &policy, &slack.base_url, &secret, &env);
    let sender = SlackSender::new(&first.url, &secret);
    let answer = sender
        .command_text(ALICE, "request app 2s deploy")
        .await
        .unwrap();
    let id = TestApp::id_in(&answer);
    hook.wait_for("grant", 1, WAIT).await.unwrap();
    // The provider stops answering; the revoke goes out at expiry and hangs.
    hook.fault_next(u32::MAX, jitbot::fakes::HookFault::Hang);
    hook.wait_deliveries(2, WAIT).await.unwrap();
    let mut first = first;
    first.child.kill().unwrap(); // SIGKILL on Unix
    first.child.wait().unwrap();
    hook.fault_next(0, jitbot::fakes::HookFault::Hang);

    let started = chrono::Utc::now();
    let second = serve(&db_url, &policy, &slack.base_url, &secret, &env);
    let revoke = hook.wait_for("revoke", 1, WAIT).await.unwrap().remove(0);
    let after = revoke.received_at - started;
    eprintln!("{backend:?}: the revoke was sent again {after} after the restart began");
    assert!(
        after < chrono::TimeDelta::seconds(5),
        "the revoke came {after} after the restart"
    );
    assert_eq!(revoke.body["request_id"], id);
    let store = jitbot::store::Store::connect(&db_url).await.unwrap();
    let expired = eventually(WAIT, || async {
        store
            .request(id)
            .await
            .unwrap()
            .is_some_and(|r| r.state == "expired")
    })
    .await;
    assert!(expired);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.events_of("revoke").len(), 1, "revoked once");
    drop(second);
    if let Some(pg) = pg {
        pg.drop_all().await;
    }
}

#[tokio::test]
async fn a_revoke_cut_off_by_kill_9_is_sent_again_within_seconds_on_sqlite() {
    a_revoke_cut_off_in_flight_is_sent_again_soon_after_a_restart(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_revoke_cut_off_by_kill_9_is_sent_again_within_seconds_on_postgres() {
    a_revoke_cut_off_in_flight_is_sent_again_soon_after_a_restart(Backend::Postgres).await;
}

#[tokio::test]
async fn a_second_serve_on_the_same_sqlite_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("jitbot.db").display()
    );
    let hook_secret = "s3cret".to_string();
    let secret_env = format!("JIT_HOOK_{}", suffix().to_uppercase());
    let policy = hook_policy_file(dir.path(), "http://127.0.0.1:9/hook", &secret_env);
    let slack = FakeSlack::start().await.unwrap();
    let env = vec![(secret_env.clone(), hook_secret.clone())];
    let first = serve(&db_url, &policy, &slack.base_url, "x", &env);
    let second = Command::new(env!("CARGO_BIN_EXE_jitbot"))
        .arg("serve")
        .env("JIT_DATABASE_URL", &db_url)
        .env("JIT_POLICY", &policy)
        .env("JIT_LISTEN", "127.0.0.1:0")
        .env("SLACK_SIGNING_SECRET", "x")
        .env("SLACK_BOT_TOKEN", "xoxb-test")
        .env("SLACK_API_URL", &slack.base_url)
        .env(&secret_env, &hook_secret)
        .env("JIT_LOG", "error")
        .output()
        .expect("jitbot runs");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another `jitbot serve` is already using"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    drop(first);
}

/// SIGTERM (a deploy, a scale-down): the process stops at once and hands back the jobs it held,
/// so the next process runs them now instead of after their lease runs out.
#[tokio::test]
async fn sigterm_hands_back_the_jobs_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let hook_secret = format!("hook-{}", suffix());
    let hook = jitbot::fakes::WebhookReceiver::start(&hook_secret)
        .await
        .unwrap();
    // The receiver takes 30 s to answer: the grant is in flight when the signal comes.
    hook.set_delay(Duration::from_secs(30));
    let secret_env = format!("JIT_HOOK_{}", suffix().to_uppercase());
    let policy = hook_policy_file(dir.path(), &hook.url, &secret_env);
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("jitbot.db").display()
    );
    let slack = FakeSlack::start().await.unwrap();
    let secret = format!("secret-{}", suffix());
    let env = vec![(secret_env, hook_secret)];
    let mut server = serve(&db_url, &policy, &slack.base_url, &secret, &env);
    let sender = SlackSender::new(&server.url, &secret);
    let id = TestApp::id_in(
        &sender
            .command_text(ALICE, "request app 1h deploy")
            .await
            .unwrap(),
    );
    hook.wait_deliveries(1, WAIT).await.unwrap();
    let store = jitbot::store::Store::connect(&db_url).await.unwrap();
    let held = |jobs: &[jitbot::store::JobRow]| {
        jobs.iter()
            .any(|j| j.kind == "grant" && j.locked_by.is_some())
    };
    assert!(
        held(&store.jobs_of(id).await.unwrap()),
        "the grant is held while in flight"
    );
    let started = Instant::now();
    // SAFETY: sending a signal to our own child process.
    assert_eq!(
        unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) },
        0
    );
    let exited = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(5) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exited.is_some(), "jitbot stops within seconds of SIGTERM");
    let jobs = store.jobs_of(id).await.unwrap();
    let grant = jobs
        .iter()
        .find(|j| j.kind == "grant")
        .expect("the grant job");
    assert!(grant.done_at.is_none(), "it was not finished");
    assert!(
        grant.locked_by.is_none() && grant.locked_until.is_none(),
        "handed back for the next process: {grant:?}"
    );
}

/// `jitbot health`, the container's health check: 0 while serve answers, 1 once it is gone.
#[tokio::test]
async fn the_health_command_follows_a_running_serve() {
    let dir = tempfile::tempdir().unwrap();
    let hook_secret = format!("hook-{}", suffix());
    let secret_env = format!("JIT_HOOK_{}", suffix().to_uppercase());
    let policy = hook_policy_file(dir.path(), "http://127.0.0.1:9/hook", &secret_env);
    let db_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("jitbot.db").display()
    );
    let slack = FakeSlack::start().await.unwrap();
    let server = serve(
        &db_url,
        &policy,
        &slack.base_url,
        "s",
        &[(secret_env, hook_secret)],
    );
    let health = |url: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_jitbot"))
            .args(["health", url])
            .output()
            .expect("jitbot runs")
    };
    let out = health(&server.url);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "healthy");
    let url = server.url.clone();
    drop(server);
    let out = health(&url);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unhealthy"));
}

#[tokio::test]
async fn json_logs_carry_the_request_id_each_answer_names() {
    let dir = tempfile::tempdir().unwrap();
    let slack = jitbot::fakes::FakeSlack::start().await.expect("fake Slack");
    let policy = hook_policy_file(dir.path(), "https://hooks.example.com/x", "JIT_HOOK_RID");
    let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("j.db").display());
    let env = vec![
        ("JIT_HOOK_RID".to_string(), "s".to_string()),
        ("JIT_LOG_FORMAT".to_string(), "json".to_string()),
    ];
    let server = serve(&db_url, &policy, &slack.base_url, "signing", &env);
    // An unsigned command: refused, and the refusal is logged under the request's id.
    let answer = reqwest::Client::new()
        .post(format!("{}/slack/commands", server.url))
        .body("user_id=U0ALICE&text=help")
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status().as_u16(), 401);
    let id = answer
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an X-Request-Id")
        .to_string();
    let found = eventually(WAIT, || async {
        server.log.lock().expect("log").iter().any(|line| {
            serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| {
                v["fields"]["message"] == "refused a Slack request"
                    && v["span"]["request_id"] == id.as_str()
            })
        })
    })
    .await;
    assert!(
        found,
        "no JSON log line of the refusal with request_id {id}:\n{}",
        server.log.lock().expect("log").join("\n")
    );
}
