//! PostgreSQL stopped hard for ten seconds under a steady flow of requests: jitbot stays up,
//! `/healthz` says 503 within a second and 200 again after, requests in the gap are told to try
//! again and nothing of them is written, the pool reconnects by itself, and revokes that fell
//! due in the gap run within ten seconds of the database's return.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jitbot::fakes::{FakeSlack, SlackSender, WebhookReceiver};

use crate::support::*;

const USERS: usize = 300;
const OUTAGE: Duration = Duration::from_secs(10);

fn policy(dir: &std::path::Path, hook: &str) -> std::path::PathBuf {
    let users: Vec<String> = (0..USERS).map(|i| format!("U0F{i:03}")).collect();
    let path = dir.join("policy.yaml");
    std::fs::write(
        &path,
        format!(
            "settings: {{ min_duration: 1s }}\ngroups:\n  flow: {{ members: [{}] }}\n  dba: {{ members: [{BOB}] }}\n\
             providers:\n  hooks: {{ kind: webhook, url: \"{hook}\", secret_env: OUTAGE_HOOK_SECRET }}\n\
             resources:\n  app:\n    provider: hooks\n    grant: {{ app: x }}\n    max_duration: 1h\n    channel: C0FLOW\n    \
             approvers: [dba]\n    auto_approve: [{{ requesters: [flow], max_duration: 1h }}]\n",
            users.join(", ")
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn postgres_stopped_hard_under_flow_costs_no_request_and_no_revoke() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let hook = WebhookReceiver::start("outage-hook").await.unwrap();
    let slack = FakeSlack::start().await.unwrap();
    let secret = format!("secret-{}", suffix());
    let mut jitbot = serve(
        &cluster.url(),
        &policy(dir.path(), &hook.url),
        &slack.base_url,
        &secret,
        &[("OUTAGE_HOOK_SECRET".into(), "outage-hook".into())],
    );
    let sender = Arc::new(SlackSender::new(&jitbot.url, &secret));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    // A steady flow: ten requests a second, each for a 3 s grant.
    let answers: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let flow = {
        let (sender, answers) = (sender.clone(), answers.clone());
        tokio::spawn(async move {
            for i in 0.. {
                let (sender, answers) = (sender.clone(), answers.clone());
                tokio::spawn(async move {
                    let at = Instant::now();
                    let text = sender
                        .command_text(&format!("U0F{:03}", i % USERS), "request app 3s flow")
                        .await
                        .unwrap_or_else(|e| format!("no answer: {e}"));
                    answers.lock().unwrap().push((at, text));
                });
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // And a probe, as an orchestrator's would be.
    let health: Arc<Mutex<Vec<(Instant, Duration, u16)>>> = Arc::default();
    let probe = {
        let (http, health, url) = (http.clone(), health.clone(), jitbot.url.clone());
        tokio::spawn(async move {
            loop {
                let at = Instant::now();
                let status = match http.get(format!("{url}/healthz")).send().await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                health.lock().unwrap().push((at, at.elapsed(), status));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    let down = Instant::now();
    cluster.crash();
    tokio::time::sleep(OUTAGE).await;
    cluster.up();
    let back = Instant::now();
    let back_wall = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(7)).await;
    flow.abort();
    tokio::time::sleep(Duration::from_secs(3)).await;
    probe.abort();

    assert!(
        jitbot.child.try_wait().unwrap().is_none(),
        "jitbot stayed up through the outage"
    );
    // The probe: 503 within a second of the crash, never a hang, 200 again after.
    let health = health.lock().unwrap().clone();
    let first_503 = health
        .iter()
        .find(|(at, _, status)| *at >= down && *status == 503)
        .expect("the probe saw 503");
    assert!(
        first_503.0 + first_503.1 - down < Duration::from_millis(1_500),
        "503 came {:?} after the crash",
        first_503.0 + first_503.1 - down
    );
    let slowest = health.iter().map(|(_, took, _)| *took).max().unwrap();
    assert!(
        slowest < Duration::from_millis(1_500),
        "a probe took {slowest:?}"
    );
    let recovered = health
        .iter()
        .find(|(at, _, status)| *at >= back && *status == 200)
        .expect("the probe saw 200 again");
    assert!(recovered.0 - back < Duration::from_secs(10));

    // Every answer is either an acknowledged request or a clear "try again".
    let answers = answers.lock().unwrap().clone();
    let mut acknowledged = Vec::new();
    let mut refused_in_gap = 0;
    for (at, text) in &answers {
        if text.contains("auto-approved") {
            acknowledged.push(TestApp::id_in(text));
        } else {
            assert!(
                text.to_lowercase().contains("try again"),
                "an answer that is neither: {text}"
            );
            assert!(
                *at >= down - Duration::from_secs(3) && *at <= back + Duration::from_secs(3),
                "refused outside the outage: {text}"
            );
            refused_in_gap += 1;
        }
    }
    eprintln!(
        "{} requests: {} acknowledged, {refused_in_gap} told to try again",
        answers.len(),
        acknowledged.len()
    );
    assert!(
        refused_in_gap > 0,
        "requests in the gap were told to try again"
    );
    assert!(
        acknowledged.len() > 100,
        "the flow went on after the outage"
    );

    // Each acknowledged request is stored, granted, and revoked in time; nothing after a revoke.
    let store = jitbot::store::Store::connect(&cluster.url()).await.unwrap();
    let revoked = eventually(Duration::from_secs(40), || async {
        acknowledged.iter().all(|id| {
            hook.events()
                .iter()
                .any(|e| e.body["event"] == "revoke" && e.body["request_id"] == *id)
        })
    })
    .await;
    assert!(revoked, "every acknowledged grant was revoked");
    let events = hook.events();
    for id in &acknowledged {
        let request = store.request(*id).await.unwrap();
        assert!(request.is_some(), "acknowledged request #{id} is stored");
        let mine: Vec<_> = events
            .iter()
            .filter(|e| e.body["request_id"] == *id)
            .collect();
        assert_eq!(
            mine.last().map(|e| e.body["event"].clone()),
            Some(serde_json::json!("revoke")),
            "nothing reached the provider after #{id} was revoked"
        );
        let expires_at = store
            .grant(*id)
            .await
            .unwrap()
            .and_then(|g| g.expires_at)
            .and_then(chrono::DateTime::from_timestamp_millis)
            .expect("an expiry");
        let revoke = mine
            .iter()
            .find(|e| e.body["event"] == "revoke")
            .expect("a revoke");
        let due = expires_at.max(back_wall);
        assert!(
            revoke.received_at - due < chrono::TimeDelta::seconds(10),
            "#{id} revoked {} after it fell due",
            revoke.received_at - due
        );
    }
    let _ = jitbot.child.kill();
}
