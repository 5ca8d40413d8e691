//! `cargo bench --bench storm [-- --store sqlite|postgres|both] [--grants N]`
//!
//! An expiry storm, measured from outside the real `jitbot serve` binary (release build):
//!
//! 1. N people each ask for an auto-approved grant (signed `/jit request`, 32 at a time) through
//!    a recording webhook provider that takes 20 ms per call; one more person asks for a grant
//!    on a second provider (the lone grant).
//! 2. Once every grant is active, the bench moves each grant's `expires_at` (and its expiry job)
//!    to one instant ten seconds ahead, so all N + 1 expire in the same second. (Grants confirmed
//!    over several seconds would otherwise expire over as many; this is the only thing the bench
//!    writes to the store.)
//! 3. It waits for every revoke and prints: how long each grant took to reach the provider after
//!    it was asked, the revoke lag (receipt at the provider − `expires_at`) p50 / p99 / max, the
//!    lone grant's lag, whether every grant was revoked exactly once, and the peak RSS of jitbot.
//!
//! The recording provider allows 64 calls in flight (`concurrency: 64`; the default is 16, at
//! which 10,000 revokes of 20 ms need 12.5 s of provider time alone).
//!
//! Targets (issue "Revocation never waits in line"): every grant at the provider within 30 s of
//! being asked; every grant revoked exactly once, the last within 10 s of its `expires_at`; the
//! lone grant revoked within 1 s of its expiry.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jitbot::fakes::{FakeSlack, SlackSender, WebhookReceiver};
use sea_orm::{ConnectionTrait, Database};

const PROVIDER_LATENCY: Duration = Duration::from_millis(20);
const SENDERS: usize = 32;
const ALIGN_AHEAD: Duration = Duration::from_secs(10);
const DEFAULT_GRANTS: usize = 10_000;
const LONE_USER: &str = "U0LONE";

struct Serve {
    child: Child,
    url: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        // Its own process group: under heaptrack, jitbot is a child of heaptrack's script.
        // `pkill -g` names the group outright (a `kill` that misread `-<pgid>` could signal
        // every process).
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-g")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Peak resident memory of the jitbot process so far (VmHWM), in MB.
    fn peak_rss_mb(&self) -> Option<f64> {
        status_kb(self.child.id(), "VmHWM:").map(|kb| kb as f64 / 1024.0)
    }
}

/// A field of `/proc/<pid>/status` in kB.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples jitbot's resident memory every 20 ms, so each phase of the run can say its own peak
/// (the kernel's high-water mark covers the whole life of the process), split into anonymous
/// memory (heap, stacks) and file pages (the binary's code, mapped as it runs).
struct RssWatch {
    peak: Arc<std::sync::Mutex<Rss>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// One sample of `/proc/<pid>/status`, in kB.
#[derive(Clone, Copy, Default)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
}

impl Rss {
    fn sample(pid: u32) -> Option<Rss> {
        Some(Rss {
            total: status_kb(pid, "VmRSS:")?,
            anon: status_kb(pid, "RssAnon:")?,
            file: status_kb(pid, "RssFile:")?,
        })
    }
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} MB (anon {:.0}, file {:.0})",
            self.total as f64 / 1024.0,
            self.anon as f64 / 1024.0,
            self.file as f64 / 1024.0
        )
    }
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        use std::sync::atomic::Ordering;
        let peak = Arc::new(std::sync::Mutex::new(Rss::sample(pid).unwrap_or_default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (highest, halt) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                if let Some(now) = Rss::sample(pid) {
                    let mut highest = highest.lock().unwrap_or_else(|e| e.into_inner());
                    if now.total > highest.total {
                        *highest = now;
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch { peak, stop }
    }

    /// The highest resident memory seen since the last call.
    fn phase_peak(&self) -> Rss {
        std::mem::take(&mut *self.peak.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn serve(db_url: &str, policy: &std::path::Path, slack: &str, env: &[(&str, &str)]) -> Serve {
    let mut child = if let Ok(out) = std::env::var("STORM_HEAPTRACK") {
        let mut c = Command::new("heaptrack");
        c.arg("-o").arg(out).arg(env!("CARGO_BIN_EXE_jitbot"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_jitbot"))
    };
    let mut child = child
        .arg("serve")
        .env("JIT_DATABASE_URL", db_url)
        .env("JIT_POLICY", policy)
        .env("JIT_LISTEN", "127.0.0.1:0")
        .env("SLACK_SIGNING_SECRET", "storm-signing")
        .env("SLACK_BOT_TOKEN", "xoxb-storm")
        .env("SLACK_API_URL", slack)
        .env("JIT_LOG", "warn,jitbot::app=info")
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("jitbot serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("addr=").nth(1) {
                let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
            } else if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("  jitbot: {line}");
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("jitbot serve reports its address");
    Serve {
        child,
        url: format!("http://{addr}"),
    }
}

fn policy(n: usize, recorder: &str, lone: &str) -> String {
    let members: Vec<String> = (0..n).map(user).collect();
    format!(
        "settings: {{ min_duration: 1m }}\n\
         groups:\n  storm: {{ members: [{}] }}\n  admins: {{ members: [U0ADMIN] }}\n\
         providers:\n  recorder: {{ kind: webhook, url: \"{recorder}\", secret_env: STORM_HOOK_SECRET, concurrency: 64 }}\n  \
         lone: {{ kind: webhook, url: \"{lone}\", secret_env: STORM_HOOK_SECRET }}\n\
         resources:\n  storm-app:\n    provider: recorder\n    grant: {{ app: storm }}\n    max_duration: 1h\n    channel: C0STORM\n    approvers: [admins]\n    \
         auto_approve:\n      - {{ requesters: [storm], max_duration: 1h }}\n  \
         lone-app:\n    provider: lone\n    grant: {{ app: lone }}\n    max_duration: 1h\n    channel: C0LONE\n    approvers: [admins]\n    \
         auto_approve:\n      - {{ requesters: [{LONE_USER}], max_duration: 1h }}\n",
        members.join(", ")
    )
}

fn user(i: usize) -> String {
    format!("U0S{i:06}")
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

struct Figures {
    store: &'static str,
    grants: usize,
    intake_secs: f64,
    grant_reach_p50: f64,
    grant_reach_max: f64,
    lag_p50: f64,
    lag_p99: f64,
    lag_max: f64,
    lone_lag: f64,
    exactly_once: bool,
    peak_rss_mb: f64,
}

async fn run(store: &'static str, n: usize, db_url: String) -> anyhow::Result<Figures> {
    println!("\n== {store}: {n} grants through a provider answering in {PROVIDER_LATENCY:?}");
    let slack = FakeSlack::start().await?;
    let recorder = WebhookReceiver::start("storm-hook").await?;
    recorder.set_delay(PROVIDER_LATENCY);
    let lone = WebhookReceiver::start("storm-hook").await?;
    let dir = tempfile::tempdir()?;
    let policy_path = dir.path().join("storm.yaml");
    std::fs::write(&policy_path, policy(n, &recorder.url, &lone.url))?;
    let jitbot = serve(
        &db_url,
        &policy_path,
        &slack.base_url,
        &[("STORM_HOOK_SECRET", "storm-hook")],
    );
    let sender = Arc::new(SlackSender::new(&jitbot.url, "storm-signing"));
    let rss = RssWatch::start(jitbot.child.id());
    println!("  started: RSS {}", rss.phase_peak());

    // 1. Everyone asks at once.
    let started = Instant::now();
    let mut asked: HashMap<i64, DateTime<Utc>> = HashMap::with_capacity(n + 1);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(SENDERS));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let sender = sender.clone();
        let permit = semaphore.clone().acquire_owned().await?;
        tasks.spawn(async move {
            let _permit = permit;
            let at = Utc::now();
            let text = sender
                .command_text(&user(i), "request storm-app 30m storm")
                .await?;
            anyhow::Ok((at, text))
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (at, text) = done??;
        anyhow::ensure!(text.contains("auto-approved"), "unexpected answer: {text}");
        asked.insert(id_in(&text)?, at);
    }
    let intake = started.elapsed();
    let lone_text = sender
        .command_text(LONE_USER, "request lone-app 30m lone")
        .await?;
    let lone_id = id_in(&lone_text)?;
    println!(
        "  {n} requests acknowledged in {:.2} s ({:.0}/s); peak RSS meanwhile {}",
        intake.as_secs_f64(),
        n as f64 / intake.as_secs_f64(),
        rss.phase_peak()
    );

    // Every grant active.
    recorder
        .wait_for("grant", n, Duration::from_secs(300))
        .await?;
    lone.wait_for("grant", 1, Duration::from_secs(60)).await?;
    let db = Database::connect(&db_url).await?;
    let active = || async {
        let row = db
            .query_one_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM requests WHERE state = 'active'",
            ))
            .await?;
        anyhow::Ok(
            row.map(|r| r.try_get::<i64>("", "n"))
                .transpose()?
                .unwrap_or(0),
        )
    };
    let wait_active = Instant::now();
    while active().await? < (n + 1) as i64 {
        anyhow::ensure!(
            wait_active.elapsed() < Duration::from_secs(120),
            "grants did not all become active"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut reach: Vec<f64> = recorder
        .events_of("grant")
        .iter()
        .filter_map(|e| {
            let id = e.body["request_id"].as_i64()?;
            let at = asked.get(&id)?;
            Some((e.received_at - *at).num_milliseconds() as f64 / 1000.0)
        })
        .collect();
    reach.sort_by(f64::total_cmp);
    println!(
        "  grants at the provider: p50 {:.2} s, max {:.2} s after being asked; peak RSS meanwhile {}",
        pct(&reach, 0.5),
        reach.last().copied().unwrap_or(f64::NAN),
        rss.phase_peak()
    );

    // 2. Everything expires in the same second.
    let expiry_ms = {
        let t = Utc::now().timestamp_millis() + ALIGN_AHEAD.as_millis() as i64;
        t - t % 1000 + 1000
    };
    db.execute_unprepared(&format!(
        "UPDATE grants SET expires_at = {expiry_ms} WHERE ended_at IS NULL AND granted_at IS NOT NULL"
    ))
    .await?;
    db.execute_unprepared(&format!(
        "UPDATE jobs SET run_at = {expiry_ms} WHERE kind = 'end_access' AND done_at IS NULL"
    ))
    .await?;
    let expiry = DateTime::from_timestamp_millis(expiry_ms).unwrap_or_default();
    println!("  all {} grants now expire at {expiry}", n + 1);

    // 3. The storm.
    recorder
        .wait_for("revoke", n, Duration::from_secs(600))
        .await?;
    let lone_revoke = lone.wait_for("revoke", 1, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // room for a doubled revoke to show
    let revokes = recorder.events_of("revoke");
    let mut per_request: HashMap<i64, usize> = HashMap::new();
    for e in &revokes {
        *per_request
            .entry(e.body["request_id"].as_i64().unwrap_or(-1))
            .or_default() += 1;
    }
    let exactly_once = per_request.len() == n
        && per_request.values().all(|c| *c == 1)
        && lone.events_of("revoke").len() == 1
        && asked.keys().all(|id| per_request.contains_key(id));
    let mut lags: Vec<f64> = revokes
        .iter()
        .map(|e| (e.received_at - expiry).num_milliseconds() as f64 / 1000.0)
        .collect();
    lags.sort_by(f64::total_cmp);
    let lone_lag = lone_revoke
        .iter()
        .find(|e| e.body["request_id"].as_i64() == Some(lone_id))
        .map(|e| (e.received_at - expiry).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(f64::NAN);
    if lone_lag.is_nan() || lone_lag > 1.0 {
        // Say why: the lone grant's jobs as the store has them.
        let rows = db
            .query_all_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                format!(
                    "SELECT kind, run_at, attempts, done_at, last_error, outcome FROM jobs \
                     WHERE request_id = {lone_id} ORDER BY id"
                ),
            ))
            .await?;
        for r in rows {
            let at = |col: &str| {
                r.try_get::<Option<i64>>("", col)
                    .ok()
                    .flatten()
                    .map(|t| format!("{:+.3} s", (t - expiry_ms) as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "  lone job {}: run_at {}, done_at {}, attempts {}, outcome {:?}, last error {:?}",
                r.try_get::<String>("", "kind").unwrap_or_default(),
                at("run_at"),
                at("done_at"),
                r.try_get::<i32>("", "attempts").unwrap_or_default(),
                r.try_get::<Option<String>>("", "outcome").ok().flatten(),
                r.try_get::<Option<String>>("", "last_error").ok().flatten(),
            );
        }
    }
    let figures = Figures {
        store,
        grants: n,
        intake_secs: intake.as_secs_f64(),
        grant_reach_p50: pct(&reach, 0.5),
        grant_reach_max: reach.last().copied().unwrap_or(f64::NAN),
        lag_p50: pct(&lags, 0.5),
        lag_p99: pct(&lags, 0.99),
        lag_max: lags.last().copied().unwrap_or(f64::NAN),
        lone_lag,
        exactly_once,
        peak_rss_mb: jitbot.peak_rss_mb().unwrap_or(f64::NAN),
    };
    println!(
        "  revoke lag p50 {:.2} s, p99 {:.2} s, max {:.2} s; lone grant {:.3} s; exactly once: {}; peak RSS in the storm {}",
        figures.lag_p50,
        figures.lag_p99,
        figures.lag_max,
        figures.lone_lag,
        figures.exactly_once,
        rss.phase_peak()
    );
    if std::env::var_os("STORM_METRICS").is_some() {
        let text = reqwest::get(format!("{}/metrics", jitbot.url))
            .await?
            .text()
            .await?;
        for line in text.lines().filter(|l| {
            l.starts_with("jitbot_sqlite_memory")
                || (l.contains("_sum") || l.contains("_count"))
                    && (l.contains("provider_call")
                        || l.contains("slack_call")
                        || l.contains("revoke_lag"))
        }) {
            println!("  {line}");
        }
    }
    if std::env::var_os("STORM_HOLD").is_some() {
        println!("  (holding for 8 s)");
        tokio::time::sleep(Duration::from_secs(8)).await;
    }
    drop(jitbot);
    Ok(figures)
}

fn id_in(text: &str) -> anyhow::Result<i64> {
    let after = text
        .split('#')
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no request id in {text:?}"))?;
    Ok(after
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()?)
}

/// A database of this run's own on the PostgreSQL server; its URL and a way to drop it.
struct ScratchDb {
    url: String,
    name: String,
    admin: sea_orm::DatabaseConnection,
}

impl ScratchDb {
    /// Drops the database (whatever connections still hold it), whatever the run's outcome.
    async fn drop_it(self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(e) = self.admin.execute_unprepared(&sql).await {
            eprintln!("could not drop {}: {e}", self.name);
        }
    }
}

async fn postgres_db() -> anyhow::Result<ScratchDb> {
    let server = std::env::var("JIT_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = Database::connect(&server).await.map_err(|e| {
        anyhow::anyhow!("PostgreSQL is not reachable at {server} ({e}); start one with `bash scripts/test-services.sh`")
    })?;
    let name = format!("jit_storm_{}", std::process::id());
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\""))
        .await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    let (server, query) = server.split_once('?').unwrap_or((&server, ""));
    let base = server.rsplit_once('/').map(|(b, _)| b).unwrap_or(server);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    Ok(ScratchDb {
        url: format!("{base}/{name}{query}"),
        name,
        admin,
    })
}

fn ok(v: bool) -> &'static str {
    if v { "✓" } else { "✗" }
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
    let n: usize = arg("--grants")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_GRANTS);
    let mut results = Vec::new();
    if which == "sqlite" || which == "both" {
        let dir = tempfile::tempdir()?;
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("storm.db").display()
        );
        results.push(run("SQLite", n, url).await?);
    }
    if which == "postgres" || which == "both" {
        let db = postgres_db().await?;
        let outcome = run("PostgreSQL", n, db.url.clone()).await;
        db.drop_it().await;
        results.push(outcome?);
    }
    println!(
        "\n| store | grants | asked in | at the provider, p50 / max (≤ 30 s) | revoke lag p50 / p99 / max (max ≤ 10 s) | lone grant lag (≤ 1 s) | each revoked once | jitbot peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for f in &results {
        println!(
            "| {} | {} | {:.1} s | {:.2} / {:.2} s {} | {:.2} / {:.2} / {:.2} s {} | {:.3} s {} | {} | {:.0} MB |",
            f.store,
            f.grants,
            f.intake_secs,
            f.grant_reach_p50,
            f.grant_reach_max,
            ok(f.grant_reach_max <= 30.0),
            f.lag_p50,
            f.lag_p99,
            f.lag_max,
            ok(f.lag_max <= 10.0),
            f.lone_lag,
            ok(f.lone_lag <= 1.0),
            ok(f.exactly_once),
            f.peak_rss_mb,
        );
    }
    Ok(())
}
