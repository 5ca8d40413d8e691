//! The test harness: the real app on port 0 with a fake Slack, a fresh store per test (a SQLite
//! file, or a PostgreSQL database of its own), uniquely named roles, signed requests.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use jitbot::app::{self, Running};
use jitbot::config::{Config, Env, Secret, Tuning};
use jitbot::domain::Policy;
use jitbot::fakes::{FakeSlack, SlackCall, SlackSender};
use jitbot::store::Store;
use sea_orm::sqlx::postgres::{PgPool, PgPoolOptions};
use sea_orm::sqlx::{self, AssertSqlSafe};

/// Where the tests find PostgreSQL; default: this machine's server on 127.0.0.1:5432.
pub const PG_URL_ENV: &str = "JIT_TEST_PG_URL";
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Longest wait for anything the app does in the background.
pub const WAIT: Duration = Duration::from_secs(15);
/// Env keys (in a test's env map) that shorten the app's timings, in milliseconds.
pub const TEST_SLACK_TIMEOUT_MS: &str = "TEST_SLACK_TIMEOUT_MS";
pub const TEST_HEADER_TIMEOUT_MS: &str = "TEST_HEADER_TIMEOUT_MS";
pub const TEST_BODY_TIMEOUT_MS: &str = "TEST_BODY_TIMEOUT_MS";
pub const TEST_POST_INTERVAL_MS: &str = "TEST_POST_INTERVAL_MS";
/// Most pending requests `/jit pending` reads for one answer (a count, not milliseconds).
pub const TEST_PENDING_READ_AT_MOST: &str = "TEST_PENDING_READ_AT_MOST";
pub const TEST_POST_BURST: &str = "TEST_POST_BURST";
pub const TEST_JOB_RETENTION_MS: &str = "TEST_JOB_RETENTION_MS";
pub const TEST_ENDING_SOON_MS: &str = "TEST_ENDING_SOON_MS";
/// Env key (in a test's env map) for `SLACK_TEAM_ID`.
pub const TEST_TEAM_ID: &str = "TEST_TEAM_ID";

pub const ALICE: &str = "U0ALICE";
pub const BOB: &str = "U0BOB";
pub const CAROL: &str = "U0CAROL";
pub const MALLORY: &str = "U0MALLORY";
pub const APPROVE: &str = "jit_approve";
pub const DENY: &str = "jit_deny";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn suffix() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{:012x}", n & 0xffff_ffff_ffff)
}

pub fn pg_server_url() -> String {
    std::env::var(PG_URL_ENV).unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// A database URL on the same server, naming another database.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map(|(b, q)| (b, Some(q)))
        .unwrap_or((url, None));
    let base = match base.rfind('/') {
        Some(i) if i > base.find("://").map(|s| s + 2).unwrap_or(0) => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// An admin connection to the test PostgreSQL server; fails the test, saying how to start one,
/// when there is none.
pub async fn pg_admin() -> PgPool {
    let url = pg_server_url();
    match PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
    {
        Ok(pool) => pool,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {url} ({e}).\n\
             Start one with `bash scripts/test-services.sh` (it makes a throwaway cluster if none runs), \
             or point {PG_URL_ENV} at a server where this user may create databases and roles."
        ),
    }
}

pub async fn exec(pool: &PgPool, sql: &str) {
    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(pool)
        .await
    {
        panic!("{sql}: {e}");
    }
}

/// A PostgreSQL database and roles of one test's own, dropped by [`PgScratch::drop_all`].
pub struct PgScratch {
    pub admin: PgPool,
    pub db: String,
    pub url: String,
    pub roles: Vec<String>,
}

impl PgScratch {
    pub async fn new() -> PgScratch {
        let admin = pg_admin().await;
        let db = format!("jit_test_{}", suffix());
        exec(&admin, &format!("CREATE DATABASE \"{db}\"")).await;
        PgScratch {
            url: with_database(&pg_server_url(), &db),
            admin,
            db,
            roles: Vec::new(),
        }
    }

    /// Creates a role named `<base>_<suffix>` (with LOGIN if asked) and returns its name.
    pub async fn role(&mut self, base: &str, login: bool) -> String {
        let name = format!("{base}_{}", suffix());
        let opts = if login { " LOGIN" } else { "" };
        exec(&self.admin, &format!("CREATE ROLE \"{name}\"{opts}")).await;
        self.roles.push(name.clone());
        name
    }

    /// Is `login` a direct member of `role`?
    pub async fn is_member(&self, role: &str, login: &str) -> bool {
        let (member,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
             JOIN pg_roles u ON u.oid = m.member WHERE r.rolname = $1 AND u.rolname = $2)",
        )
        .bind(role)
        .bind(login)
        .fetch_one(&self.admin)
        .await
        .expect("membership query");
        member
    }

    pub async fn drop_all(self) {
        let _ = sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.db
        )))
        .execute(&self.admin)
        .await;
        for role in &self.roles {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{role}\"")))
                .execute(&self.admin)
                .await;
        }
    }
}

/// The app under test and everything around it.
pub struct TestApp {
    pub running: Running,
    pub slack: FakeSlack,
    pub sender: SlackSender,
    pub store: Store,
    pub signing_secret: String,
    pub pg: Option<PgScratch>,
    /// The policy file `reload` reads.
    pub policy_path: std::path::PathBuf,
    /// Holds the store file and the policy file; removed when dropped.
    pub dir: tempfile::TempDir,
}

/// Starts the real app with `policy` on a fresh store of `backend`; `env` supplies the variables
/// the policy names (admin URLs, webhook secrets).
pub async fn spawn_app(backend: Backend, policy: &str, env: HashMap<String, String>) -> TestApp {
    let slack = FakeSlack::start().await.expect("fake Slack");
    spawn_app_on(backend, policy, env, slack).await
}

/// Like [`spawn_app`], talking to a fake Slack the test has set up first (user groups, emails).
pub async fn spawn_app_on(
    backend: Backend,
    policy: &str,
    env: HashMap<String, String>,
    slack: FakeSlack,
) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgScratch::new().await),
    };
    let database_url = match &pg {
        None => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("jitbot.db").display()
        ),
        Some(pg) => pg.url.clone(),
    };
    spawn_with(database_url, policy, env, slack, pg, dir).await
}

pub async fn spawn_with(
    database_url: String,
    policy: &str,
    mut env: HashMap<String, String>,
    slack: FakeSlack,
    pg: Option<PgScratch>,
    dir: tempfile::TempDir,
) -> TestApp {
    let policy_path = dir.path().join("policy.yaml");
    std::fs::write(&policy_path, policy).expect("policy file written");
    let (policy, _) =
        Policy::parse("test-policy.yaml", policy).unwrap_or_else(|e| panic!("test policy: {e}"));
    let signing_secret = format!("secret-{}", suffix());
    let mut tuning = Tuning {
        retry_base: Duration::from_millis(50),
        ..Tuning::default()
    };
    // Timings a test may shorten, named in its env map.
    let team_id = env.remove(TEST_TEAM_ID);
    let app_token = env.remove("SLACK_APP_TOKEN").map(Secret::new);
    let mut take = |name: &str| {
        env.remove(name)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    if let Some(d) = take(TEST_SLACK_TIMEOUT_MS) {
        tuning.slack_timeout = d;
    }
    if let Some(d) = take(TEST_HEADER_TIMEOUT_MS) {
        tuning.edge.header_timeout = d;
    }
    if let Some(d) = take(TEST_BODY_TIMEOUT_MS) {
        tuning.edge.body_timeout = d;
    }
    if let Some(d) = take(TEST_POST_INTERVAL_MS) {
        tuning.post_interval = d;
    }
    if let Some(d) = take(TEST_JOB_RETENTION_MS) {
        tuning.job_retention = d;
    }
    if let Some(d) = take(TEST_ENDING_SOON_MS) {
        tuning.ending_soon = d;
    }
    if let Some(burst) = take(TEST_POST_BURST) {
        tuning.post_burst = burst.as_millis() as u32;
    }
    if let Some(most) = take(TEST_PENDING_READ_AT_MOST) {
        tuning.pending_read_at_most = most.as_millis() as usize;
    }
    let config = Config {
        database_url,
        policy: policy_path.clone(),
        listen: "127.0.0.1:0".into(),
        signing_secret: Secret::new(signing_secret.clone()),
        bot_token: Secret::new("xoxb-test"),
        slack_api_url: slack.base_url.clone(),
        team_id,
        app_token,
        tuning,
    };
    let app = app::build(config, Env::with_overrides(env), policy)
        .await
        .expect("app builds");
    let running = app.spawn();
    let sender = SlackSender::new(&running.url(), &signing_secret);
    TestApp {
        store: running.store.clone(),
        running,
        slack,
        sender,
        signing_secret,
        pg,
        policy_path,
        dir,
    }
}

impl TestApp {
    /// The policy file as it stands.
    pub fn policy_text(&self) -> String {
        std::fs::read_to_string(&self.policy_path).expect("policy file")
    }

    /// The policy with `from` replaced by `to` (which must be there).
    pub fn edited(&self, from: &str, to: &str) -> String {
        let text = self.policy_text();
        assert!(text.contains(from), "{from:?} not in the policy");
        text.replacen(from, to, 1)
    }

    /// The store's URL, for a second connection or a second app on the same store.
    pub fn database_url(&self) -> String {
        match &self.pg {
            Some(pg) => pg.url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.dir.path().join("jitbot.db").display()
            ),
        }
    }

    /// Runs `sql` on a second connection to the store: someone changing rows behind jitbot.
    pub async fn tamper(&self, sql: &str) {
        use sea_orm::ConnectionTrait;
        let db = sea_orm::Database::connect(self.database_url())
            .await
            .expect("a second connection");
        db.execute_unprepared(sql).await.expect("tampering");
        db.close().await.ok();
    }

    /// Writes `policy` to the app's policy file and reloads it, as `SIGHUP` does; the number of
    /// pending requests it cancelled, or the refusal.
    pub async fn reload(&self, policy: &str) -> anyhow::Result<u64> {
        std::fs::write(&self.policy_path, policy)?;
        self.running.reloader.reload().await
    }

    pub async fn say(&self, user: &str, text: &str) -> String {
        self.sender
            .command_text(user, text)
            .await
            .expect("command answered")
    }

    pub async fn click(&self, user: &str, action: &str, id: i32) {
        let answer = self
            .sender
            .click(user, action, &id.to_string())
            .await
            .expect("click answered");
        assert_eq!(answer.status, 200, "{answer:?}");
    }

    /// The state of request `id` in the store.
    pub async fn state(&self, id: i32) -> String {
        self.store
            .request(id)
            .await
            .expect("store")
            .map(|r| r.state)
            .unwrap_or_default()
    }

    pub async fn wait_state(&self, id: i32, state: &str) {
        let ok = eventually(WAIT, || async { self.state(id).await == state }).await;
        assert!(
            ok,
            "request #{id} did not become {state}; it is {}",
            self.state(id).await
        );
    }

    pub async fn wait_calls(
        &self,
        what: &str,
        done: impl Fn(&[SlackCall]) -> bool,
    ) -> Vec<SlackCall> {
        self.slack
            .wait_until(WAIT, what, done)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits for a `method` call whose `who_field` is `who` and whose text contains `containing`.
    async fn wait_message(
        &self,
        method: &str,
        who_field: &str,
        who: &str,
        containing: &str,
    ) -> SlackCall {
        let matches = |c: &SlackCall| {
            c.method == method && c.str(who_field) == who && c.str("text").contains(containing)
        };
        let calls = self
            .wait_calls(
                &format!("{method} to {who} containing {containing:?}"),
                |calls| calls.iter().any(matches),
            )
            .await;
        calls.into_iter().find(matches).expect("found above")
    }

    /// A direct message (a post to the user ID) containing `containing`.
    pub async fn wait_dm(&self, user: &str, containing: &str) -> SlackCall {
        self.wait_message("chat.postMessage", "channel", user, containing)
            .await
    }

    /// A post in the reviewers' channel (not the card) containing `containing`.
    pub async fn wait_channel_note(&self, containing: &str) -> SlackCall {
        self.wait_message("chat.postMessage", "channel", "C0REVIEW", containing)
            .await
    }

    pub async fn wait_ephemeral(&self, user: &str, containing: &str) -> SlackCall {
        self.wait_message("chat.postEphemeral", "user", user, containing)
            .await
    }

    /// The latest `chat.update` of the card whose text contains `containing`.
    pub async fn wait_card_update(&self, containing: &str) -> SlackCall {
        let calls = self
            .wait_calls(
                &format!("a card update containing {containing:?}"),
                |calls| {
                    calls.iter().any(|c| {
                        c.method == "chat.update" && c.body.to_string().contains(containing)
                    })
                },
            )
            .await;
        calls
            .into_iter()
            .rev()
            .find(|c| c.method == "chat.update" && c.body.to_string().contains(containing))
            .expect("found above")
    }

    /// The request id the last answer named ("Request #12 …").
    pub fn id_in(answer: &str) -> i32 {
        let after = answer
            .split('#')
            .nth(1)
            .unwrap_or_else(|| panic!("no request id in {answer:?}"));
        after
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .unwrap_or_else(|_| panic!("no request id in {answer:?}"))
    }

    pub async fn audit_actions(&self, id: i32) -> Vec<String> {
        self.store
            .audit_events(Some(id))
            .await
            .expect("audit")
            .into_iter()
            .map(|e| e.action)
            .collect()
    }

    /// The detail of request `id`'s first audit event named `action`.
    pub async fn audit_details(&self, id: i32, action: &str) -> Option<String> {
        self.store
            .audit_events(Some(id))
            .await
            .expect("audit")
            .into_iter()
            .find(|e| e.action == action)
            .map(|e| e.detail)
    }

    pub async fn finish(self) {
        let pg = self.pg;
        drop(self.running);
        if let Some(pg) = pg {
            pg.drop_all().await;
        }
    }
}

/// Polls `check` every 25 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether a card's blocks still carry buttons.
pub fn has_buttons(call: &SlackCall) -> bool {
    call.body["blocks"]
        .as_array()
        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "actions"))
}

mod hooks;
#[cfg(feature = "aws")]
mod moto;
mod process;
pub use hooks::*;
#[cfg(feature = "aws")]
#[allow(unused_imports)] // the plans test binary has no use for moto
pub use moto::*;
#[allow(unused_imports)] // the plans test binary has no use for child processes
pub use process::*;
