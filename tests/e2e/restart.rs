//! `kill -9` and start again: an overdue grant is revoked within seconds, nothing runs twice.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jitbot::fakes::{FakeSlack, SlackSender};

use crate::support::*;

struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the real binary and waits for its "listening" line.
fn serve(
    db_url: &str,
    policy: &std::path::Path,
    slack: &str,
    secret: &str,
    env: &[(String, String)],
) -> Serve {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jitbot"))
        .arg("serve")
        .env("JIT_DATABASE_URL", db_url)
        .env("JIT_POLICY", policy)
        .env("JIT_LISTEN", "127.0.0.1:0")
        .env("SLACK_SIGNING_SECRET", secret)
        .env("SLACK_BOT_TOKEN", "xoxb-test")
        .env("SLACK_API_URL", slack)
        .env("JIT_RETRY_BASE_MS", "100")
        .env("JIT_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jitbot serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("addr=").nth(1) {
                let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("jitbot serve reports its address");
    Serve {
        child,
        url: format!("http://{addr}"),
    }
}

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
            .all(|j| j.kind == "end_access" || j.kind == "timeout")
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
