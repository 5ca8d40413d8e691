//! `cargo bench --bench footprint [-- --store sqlite|postgres|both] [--requests N]`
//!
//! Does jitbot's cost grow with history? Measured from outside the real `jitbot serve` binary
//! (release build), on an empty store and again after N requests (default 1,000,000) were asked
//! for through HTTP (signed `/jit request`s, 16 at a time, every one needing a click, so all
//! stay pending with their cards booked into the channel's pace):
//!
//! - `/jit request` ack latency at a fixed 200 requests/s for 10 s, p50 / p99;
//! - `/jit pending` (the approver of every one of them) and `/jit list`, p50 / max;
//! - jitbot's resident memory (VmRSS) once the load is over, and its peak (VmHWM);
//! - start to healthy: from spawning `jitbot serve` on the full store to `/healthz` answering 200.
//!
//! Targets (issue "Ten times Bolt, proven"): RSS ≤ 32 MB after 1,000,000 requests; p99 at
//! 200 req/s no worse than twice the empty store's; pending and list in milliseconds; start to
//! healthy ≤ 100 ms on SQLite.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jitbot::fakes::{FakeSlack, SlackSender};
use sea_orm::{ConnectionTrait, Database};

const SENDERS: usize = 16;
const RATE: u64 = 200;
const RATE_SECS: u64 = 10;

struct Serve {
    child: Child,
    url: String,
    started: Instant,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn memory_mb(&self, field: &str) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }
}

fn serve(db_url: &str, policy: &std::path::Path, slack: &str) -> Serve {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jitbot"))
        .arg("serve")
        .env("JIT_DATABASE_URL", db_url)
        .env("JIT_POLICY", policy)
        .env("JIT_LISTEN", "127.0.0.1:0")
        .env("SLACK_SIGNING_SECRET", "footprint")
        .env("SLACK_BOT_TOKEN", "xoxb-footprint")
        .env("SLACK_API_URL", slack)
        .env("FOOTPRINT_HOOK", "x")
        .env("JIT_LOG", "warn,jitbot::app=info")
        .env("NO_COLOR", "1")
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
            } else if line.contains("ERROR") {
                eprintln!("  jitbot: {line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("jitbot serve reports its address");
    Serve {
        child,
        url: format!("http://{addr}"),
        started,
    }
}

/// Time from spawn to `/healthz` answering 200.
async fn start_to_healthy(db_url: &str, policy: &std::path::Path, slack: &str) -> (Serve, f64) {
    let s = serve(db_url, policy, slack);
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("{}/healthz", s.url)).send().await
            && r.status() == 200
        {
            let took = s.started.elapsed().as_secs_f64() * 1000.0;
            return (s, took);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

/// `/jit request` at a fixed rate, latency measured from the scheduled send time.
async fn fixed_rate(sender: Arc<SlackSender>, offset: usize) -> (f64, f64) {
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..(RATE * RATE_SECS) as usize {
        let at = start + Duration::from_micros(i as u64 * 1_000_000 / RATE);
        tokio::time::sleep_until(at).await;
        let sender = sender.clone();
        tasks.spawn(async move {
            let user = format!("U0R{:08}", offset + i);
            let ok = sender
                .command_text(&user, "request app 1h footprint")
                .await
                .is_ok_and(|t| t.contains("Request #"));
            (at.elapsed().as_secs_f64() * 1000.0, ok)
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (ms, ok) = r.expect("task");
        assert!(ok, "a request at the fixed rate was not acknowledged");
        lat.push(ms);
    }
    (pct(lat.clone(), 0.5), pct(lat, 0.99))
}

async fn command_times(sender: &SlackSender, user: &str, text: &str) -> (f64, f64) {
    let mut v = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let answer = sender.command_text(user, text).await.expect("answer");
        assert!(!answer.is_empty());
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let max = v.iter().copied().fold(0.0, f64::max);
    (pct(v, 0.5), max)
}

async fn fill(sender: Arc<SlackSender>, n: usize) {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..SENDERS {
        let (sender, next) = (sender.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let user = format!("U0F{i:08}");
                let answer = sender
                    .command_text(&user, "request app 1h history")
                    .await
                    .expect("answer");
                assert!(answer.contains("Request #"), "{answer}");
                if i > 0 && i % 100_000 == 0 {
                    eprintln!("  {i} requests stored");
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    println!(
        "  filled {n} requests in {:.0} s ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64()
    );
}

struct Figures {
    p50: f64,
    p99: f64,
    pending: (f64, f64),
    list: (f64, f64),
    rss: f64,
    peak: f64,
    /// Of the RSS: anonymous (heap, stacks, SQLite's caches) and file-backed (mostly the
    /// binary's own code and read-only data), MB.
    anon: f64,
    file: f64,
    healthy_ms: f64,
}

async fn measure(
    label: &str,
    db_url: &str,
    policy: &std::path::Path,
    slack: &FakeSlack,
    offset: usize,
) -> Figures {
    let (jitbot, healthy_ms) = start_to_healthy(db_url, policy, &slack.base_url).await;
    let sender = Arc::new(SlackSender::new(&jitbot.url, "footprint"));
    let (p50, p99) = fixed_rate(sender.clone(), offset).await;
    let pending = command_times(&sender, "U0BOB", "pending").await;
    let list = command_times(&sender, "U0F00000007", "list").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let f = Figures {
        p50,
        p99,
        pending,
        list,
        rss: jitbot.memory_mb("VmRSS:"),
        peak: jitbot.memory_mb("VmHWM:"),
        anon: jitbot.memory_mb("RssAnon:"),
        file: jitbot.memory_mb("RssFile:"),
        healthy_ms,
    };
    println!(
        "  {label}: ack at {RATE}/s p50 {:.1} ms p99 {:.1} ms; pending {:.1}/{:.1} ms; list {:.1}/{:.1} ms; RSS {:.1} MB (peak {:.1}; anon {:.1}, file {:.1}); start to healthy {:.0} ms",
        f.p50,
        f.p99,
        f.pending.0,
        f.pending.1,
        f.list.0,
        f.list.1,
        f.rss,
        f.peak,
        f.anon,
        f.file,
        f.healthy_ms
    );
    f
}

async fn run(store: &str, db_url: String, n: usize) -> anyhow::Result<()> {
    println!("\n== {store}");
    let slack = FakeSlack::start().await?;
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("footprint.yaml");
    std::fs::write(
        &policy,
        "settings: { min_duration: 1m }\ngroups:\n  dba: { members: [U0BOB] }\nproviders:\n  hooks: { kind: webhook, url: \"http://127.0.0.1:9/hook\", secret_env: FOOTPRINT_HOOK }\n\
         resources:\n  app:\n    provider: hooks\n    grant: { app: x }\n    max_duration: 2h\n    channel: C0REVIEW\n    approvers: [dba]\n",
    )?;
    let empty = measure("empty store", &db_url, &policy, &slack, 900_000_000).await;
    {
        let jitbot = serve(&db_url, &policy, &slack.base_url);
        fill(Arc::new(SlackSender::new(&jitbot.url, "footprint")), n).await;
        println!(
            "  while filling: RSS {:.1} MB, peak {:.1} MB",
            jitbot.memory_mb("VmRSS:"),
            jitbot.memory_mb("VmHWM:")
        );
    }
    let full = measure(
        &format!("{n} stored"),
        &db_url,
        &policy,
        &slack,
        910_000_000,
    )
    .await;
    println!(
        "\n| store | stored | ack p50 / p99 at {RATE}/s | /jit pending p50 / max | /jit list p50 / max | RSS after (peak) | start to healthy |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (stored, f) in [(0, &empty), (n, &full)] {
        println!(
            "| {store} | {stored} | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} MB ({:.1}) | {:.0} ms |",
            f.p50, f.p99, f.pending.0, f.pending.1, f.list.0, f.list.1, f.rss, f.peak, f.healthy_ms
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jitbot::config::install_crypto_provider();
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let which = arg("--store").unwrap_or_else(|| "both".into());
    let n: usize = arg("--requests")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if which == "sqlite" || which == "both" {
        let dir = tempfile::tempdir()?;
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("footprint.db").display()
        );
        run("SQLite", url, n).await?;
    }
    if which == "postgres" || which == "both" {
        let server = std::env::var("JIT_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let admin = Database::connect(&server).await?;
        let name = format!("jit_footprint_{}", std::process::id());
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        let base = server.split('?').next().unwrap_or(&server);
        let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
        run("PostgreSQL", format!("{base}/{name}"), n).await?;
        admin
            .execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
            .await?;
    }
    Ok(())
}
