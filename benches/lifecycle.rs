//! `cargo bench --bench lifecycle`: prints the figures jitbot is judged by, on SQLite and (when
//! `JIT_TEST_PG_URL` reaches a server) PostgreSQL:
//! - ack latency of a signed `/jit request` (sequential, then 16 concurrent senders);
//! - seconds from `expires_at` to the provider's revoke being confirmed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jitbot::app;
use jitbot::config::{Config, Env, Secret};
use jitbot::domain::Policy;
use jitbot::fakes::{FakeSlack, SlackSender, WebhookReceiver};
use sea_orm::sqlx::{self, AssertSqlSafe};

const SEQUENTIAL: usize = 300;
const CONCURRENT_SENDERS: usize = 16;
const CONCURRENT_TOTAL: usize = 1_600;
const EXPIRIES: usize = 40;

fn policy(hook: &str) -> String {
    format!(
        "settings: {{ min_duration: 1s }}\ngroups:\n  dba: {{ members: [U0BOB] }}\nproviders:\n  hooks: {{ kind: webhook, url: \"{hook}\", secret_env: BENCH_HOOK_SECRET }}\n\
         resources:\n  app:\n    provider: hooks\n    grant: {{ app: bench }}\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n"
    )
}

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "  {label:<34} n={:<5} p50={:>7.2?} p95={:>7.2?} p99={:>7.2?} max={:>7.2?}",
        samples.len(),
        at(0.50),
        at(0.95),
        at(0.99),
        samples[samples.len() - 1]
    );
}

async fn run(label: &str, database_url: String) -> anyhow::Result<()> {
    println!("\n{label}");
    let slack = FakeSlack::start().await?;
    let hook = WebhookReceiver::start("bench-secret").await?;
    let (policy, _) =
        Policy::parse("bench.yaml", &policy(&hook.url)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = Config {
        database_url,
        policy: "bench.yaml".into(),
        listen: "127.0.0.1:0".into(),
        signing_secret: Secret::new("bench-signing"),
        bot_token: Secret::new("xoxb-bench"),
        slack_api_url: slack.base_url.clone(),
        team_id: None,
        app_token: None,
        tuning: Default::default(),
    };
    let env = Env::with_overrides(HashMap::from([(
        "BENCH_HOOK_SECRET".into(),
        "bench-secret".into(),
    )]));
    let running = app::build(config, env, policy).await?.spawn();
    let sender = SlackSender::new(&running.url(), "bench-signing");

    // Sequential acks.
    let mut samples = Vec::new();
    for i in 0..SEQUENTIAL {
        let t = Instant::now();
        let answer = sender
            .command(&format!("U0S{i:06}"), "request app 1h bench")
            .await?;
        samples.push(t.elapsed());
        anyhow::ensure!(
            answer.status == 200
                && answer.body["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("Request #")),
            "{answer:?}"
        );
    }
    percentiles("/jit request ack, sequential", samples);

    // Concurrent acks.
    let started = Instant::now();
    let sender = Arc::new(sender);
    let mut tasks = Vec::new();
    for s in 0..CONCURRENT_SENDERS {
        let sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for i in 0..CONCURRENT_TOTAL / CONCURRENT_SENDERS {
                let t = Instant::now();
                let answer = sender
                    .command(&format!("U0C{s:02}{i:05}"), "request app 1h bench")
                    .await?;
                samples.push(t.elapsed());
                anyhow::ensure!(answer.status == 200, "{answer:?}");
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await??);
    }
    let elapsed = started.elapsed();
    percentiles(
        &format!("/jit request ack, {CONCURRENT_SENDERS} concurrent"),
        samples,
    );
    println!(
        "  throughput                         {:.0} requests/s",
        CONCURRENT_TOTAL as f64 / elapsed.as_secs_f64()
    );

    // Expiry lag: grants of 2 s, approved together.
    let mut ids = Vec::new();
    for i in 0..EXPIRIES {
        let text = sender
            .command_text(&format!("U0E{i:06}"), "request app 2s expiry")
            .await?;
        let id: String = text
            .split('#')
            .nth(1)
            .unwrap_or("")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        ids.push(id);
    }
    for id in &ids {
        sender.click("U0BOB", "jit_approve", id).await?;
    }
    hook.wait_for("revoke", EXPIRIES, Duration::from_secs(60))
        .await?;
    let mut lags = Vec::new();
    for id in &ids {
        let id: i32 = id.parse()?;
        // wait for the state change that follows the provider's confirmation
        for _ in 0..200 {
            if running
                .store
                .request(id)
                .await?
                .is_some_and(|r| r.state == "expired")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let grant = running
            .store
            .grant(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no grant"))?;
        if let (Some(exp), Some(end)) = (grant.expires_at, grant.ended_at) {
            lags.push(Duration::from_millis((end - exp).max(0) as u64));
        }
    }
    percentiles("expires_at → revoke confirmed", lags);
    drop(running);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    run(
        "SQLite (WAL, temporary file)",
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        ),
    )
    .await?;
    let server = std::env::var("JIT_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    match sqlx::PgPool::connect(&server).await {
        Ok(admin) => {
            let db = format!("jit_bench_{}", std::process::id());
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
                .execute(&admin)
                .await?;
            let url = match server.rsplit_once('/') {
                Some((base, _)) => format!("{base}/{db}"),
                None => server.clone(),
            };
            let result = run("PostgreSQL (local server)", url).await;
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
            )))
            .execute(&admin)
            .await?;
            result?;
        }
        Err(e) => println!(
            "\nPostgreSQL: not measured, no server at {server} ({e}); run scripts/test-services.sh"
        ),
    }
    Ok(())
}
