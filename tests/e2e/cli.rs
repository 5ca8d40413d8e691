//! The binary as operators use it: `check`, `migrate`, `serve` refusing bad config, `demo`.

use std::process::Command;

fn jitbot(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jitbot"))
        .args(args)
        .env_remove("JIT_POLICY")
        .env_remove("JIT_DATABASE_URL")
        .env_remove("SLACK_SIGNING_SECRET")
        .env_remove("SLACK_BOT_TOKEN")
        .envs(env.iter().copied())
        .output()
        .expect("jitbot runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_example_policy_and_names_line_and_column_of_errors() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/manifest/policy.yaml");
    let (code, stdout, _) = jitbot(&["check", example], &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("ok"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(example)
        .unwrap()
        .replace("max_duration: 4h", "max_duraton: 4h");
    std::fs::write(&bad, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("max_duraton"))
        .unwrap()
        + 1;
    let (code, _, stderr) = jitbot(&["check", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("bad.yaml:{line}:5:")), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));

    let later = std::fs::read_to_string(example)
        .unwrap()
        .replace("kind: webhook", "kind: azure_ad");
    std::fs::write(&bad, &later).unwrap();
    let (code, _, stderr) = jitbot(&["check", bad.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("azure_ad") && stderr.contains("unknown provider kind"),
        "{stderr}"
    );

    let (code, _, stderr) = jitbot(&["check", "/nonexistent/policy.yaml"], &[]);
    assert_eq!(code, 1, "{stderr}");
}

#[test]
fn serve_without_its_secrets_exits_1_with_one_line() {
    // One line per problem, each named, and nothing touched before they are fixed.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("never.db");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let (code, _, stderr) = jitbot(
        &["serve"],
        &[
            ("JIT_DATABASE_URL", &url),
            ("JIT_POLICY", "/nonexistent/policy.yaml"),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines.iter().all(|l| l.starts_with("error: ")), "{stderr}");
    for named in [
        "SLACK_SIGNING_SECRET",
        "SLACK_BOT_TOKEN",
        "/nonexistent/policy.yaml",
    ] {
        assert!(stderr.contains(named), "{named} not named: {stderr}");
    }
    assert!(
        !db.exists(),
        "the database was touched before the configuration was right"
    );
}

#[test]
fn serve_names_every_bad_value_at_once() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/manifest/policy.yaml");
    let (code, _, stderr) = jitbot(
        &["serve"],
        &[
            ("JIT_POLICY", example),
            ("SLACK_SIGNING_SECRET", "x"),
            ("SLACK_BOT_TOKEN", "xoxp-a-user-token"),
            ("JIT_LISTEN", "nonsense"),
            ("JIT_LOG_FORMAT", "bogus"),
            ("SLACK_API_URL", "notaurl"),
            ("JIT_RETRY_BASE_MS", "abc"),
            ("JIT_WEBHOOK_SECRET", "s"),
            ("JIT_PG_ADMIN_URL", "postgres://x@127.0.0.1:1/x"),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    for named in [
        "xoxb-",
        "JIT_LISTEN",
        "JIT_LOG_FORMAT",
        "SLACK_API_URL",
        "JIT_RETRY_BASE_MS",
    ] {
        assert!(stderr.contains(named), "{named} not named: {stderr}");
    }
    assert_eq!(stderr.trim().lines().count(), 5, "{stderr}");
    assert!(
        !stderr.contains("\u{1b}["),
        "no colour codes into a pipe: {stderr:?}"
    );
}

#[test]
fn a_database_that_cannot_be_reached_is_named_at_once_with_its_cause() {
    let started = std::time::Instant::now();
    let (code, _, stderr) = jitbot(
        &["migrate"],
        &[(
            "JIT_DATABASE_URL",
            "postgres://nobody:hunter2@127.0.0.1:1/none",
        )],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert_eq!(
        stderr.matches("Connection refused").count(),
        1,
        "said once: {stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let (code, _, stderr) = jitbot(
        &["migrate"],
        &[(
            "JIT_DATABASE_URL",
            "sqlite:///nonexistent-dir/jitbot.db?mode=rwc",
        )],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("mkdir -p /nonexistent-dir"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn migrate_prepares_an_empty_sqlite_file_and_refuses_an_unreachable_database() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let (code, stdout, stderr) = jitbot(&["migrate"], &[("JIT_DATABASE_URL", &url)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("migrations applied"));
    let (code, _, stderr) = jitbot(
        &["migrate"],
        &[(
            "JIT_DATABASE_URL",
            "postgres://nobody:hunter2@127.0.0.1:1/none",
        )],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "a password reached stderr: {stderr}"
    );
}

#[test]
fn the_demo_shows_the_whole_life_and_exits_0() {
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = jitbot(&["demo"], &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for step in [
        "/jit request demo-db",
        "approval card",
        "[ Approve ] [ Deny ]",
        "your own request",
        "\"event\":\"grant\"",
        "was approved",
        "\"event\":\"revoke\"",
        "has expired",
        "expired",
    ] {
        assert!(
            stdout.contains(step),
            "the demo did not show {step:?}:\n{stdout}"
        );
    }
    assert!(started.elapsed().as_secs() < 30);
}

#[test]
fn serve_refuses_a_broken_policy_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("policy.yaml");
    std::fs::write(&bad, "resources:\n  x:\n    provider: nowhere\n").unwrap();
    let (code, _, stderr) = jitbot(
        &["serve"],
        &[
            ("JIT_POLICY", bad.to_str().unwrap()),
            ("SLACK_SIGNING_SECRET", "s"),
            ("SLACK_BOT_TOKEN", "xoxb-t"),
            ("JIT_DATABASE_URL", "sqlite::memory:"),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("policy.yaml:"), "{stderr}");
}

#[test]
fn check_list_prints_the_resources_a_template_stands_for() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        "groups:\n  dba: { members: [U0DBA1] }\nproviders:\n  hooks: { kind: webhook, url: \"https://h.example.com/\", secret_env: JIT_HOOK }\n\
         resources:\n  db-{env}:\n    for: { env: [prod, staging] }\n    vars: { host: { prod: db1, staging: db2 } }\n    provider: hooks\n    grant: { host: \"{host}\" }\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n\
         bundles:\n  both: [db-prod, db-staging]\n",
    )
    .unwrap();
    let (code, stdout, stderr) = jitbot(
        &["check", "--list", file.to_str().unwrap()],
        &[("JIT_HOOK", "x")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ok (2 resources"), "{stdout}");
    assert!(
        stdout.contains("db-prod\tprovider hooks\tgrant {\"host\":\"db1\"}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("db-staging\tprovider hooks\tgrant {\"host\":\"db2\"}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("bundle both\tdb-prod,db-staging"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_jitbot_is_refused_with_one_line() {
    use sea_orm::sqlx::{Connection, SqliteConnection};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
    let (code, _, stderr) = jitbot(&["migrate"], &[("JIT_DATABASE_URL", &url)]);
    assert_eq!(code, 0, "{stderr}");
    // A newer jitbot ran a migration this one does not have.
    let mut db = SqliteConnection::connect(&url).await.expect("the store");
    sea_orm::sqlx::query("INSERT INTO seaql_migrations (version, applied_at) VALUES ('m20991231_000001_from_the_future', 0)")
        .execute(&mut db)
        .await
        .expect("a row");
    db.close().await.expect("closed");
    let (code, _, stderr) = jitbot(&["migrate"], &[("JIT_DATABASE_URL", &url)]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("migrated by a newer jitbot (m20991231_000001_from_the_future)"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// A policy naming Slack user group S0DBATEAM and, when `pagerduty` is given, a PagerDuty group.
fn directory_policy(dir: &std::path::Path, pagerduty: &str) -> std::path::PathBuf {
    let file = dir.join("policy.yaml");
    std::fs::write(
        &file,
        format!(
            "groups:\n  dba: {{ members: [S0DBATEAM] }}\n{pagerduty}providers:\n  hooks: {{ kind: webhook, url: \"https://h.example.com/\", secret_env: JIT_HOOK }}\n\
             resources:\n  db:\n    provider: hooks\n    grant: {{ host: db1 }}\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n"
        ),
    )
    .unwrap();
    file
}

#[tokio::test]
async fn serve_refuses_user_groups_on_a_workspace_without_them_at_start() {
    let slack = jitbot::fakes::FakeSlack::start().await.expect("fake Slack");
    slack.without_usergroups();
    let dir = tempfile::tempdir().unwrap();
    let policy = directory_policy(dir.path(), "");
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("j.db").display());
    let (code, _, stderr) = jitbot(
        &["serve"],
        &[
            ("JIT_POLICY", policy.to_str().unwrap()),
            ("SLACK_SIGNING_SECRET", "s"),
            ("SLACK_BOT_TOKEN", "xoxb-t"),
            ("SLACK_API_URL", &slack.base_url),
            ("JIT_DATABASE_URL", &db),
            ("JIT_LISTEN", "127.0.0.1:0"),
            ("JIT_HOOK", "x"),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    let refusal: Vec<&str> = stderr.lines().filter(|l| l.contains("S0DBATEAM")).collect();
    assert_eq!(refusal.len(), 1, "{stderr}");
    assert!(
        refusal[0].contains("plan_upgrade_required") && refusal[0].contains("list user IDs"),
        "{stderr}"
    );
    // It was found by asking Slack once at start, not at a click.
    assert_eq!(
        slack
            .attempts()
            .iter()
            .filter(|c| c.method == "usergroups.users.list")
            .count(),
        1
    );
}

#[test]
fn a_pagerduty_token_that_is_not_set_is_a_warning_for_check_and_an_error_for_serve() {
    let dir = tempfile::tempdir().unwrap();
    let policy = directory_policy(
        dir.path(),
        "  sre:\n    pagerduty: { schedule_id: PSRE1, token_env: JIT_TEST_PD_UNSET }\n    members: [U0SRE1]\n",
    );
    let (code, stdout, stderr) = jitbot(&["check", policy.to_str().unwrap()], &[("JIT_HOOK", "x")]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("JIT_TEST_PD_UNSET is not set"),
        "{stdout}{stderr}"
    );
    let (code, _, stderr) = jitbot(
        &["serve"],
        &[
            ("JIT_POLICY", policy.to_str().unwrap()),
            ("SLACK_SIGNING_SECRET", "s"),
            ("SLACK_BOT_TOKEN", "xoxb-t"),
            ("JIT_DATABASE_URL", "sqlite::memory:"),
            ("JIT_HOOK", "x"),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("JIT_TEST_PD_UNSET") && stderr.contains("PagerDuty group sre"),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_refuses_an_app_token_slack_refuses_with_one_line() {
    let slack = jitbot::fakes::FakeSlack::start().await.expect("fake Slack");
    slack.set_socket_mode("ws://127.0.0.1:9/link", "xapp-the-right-one");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "groups:\n  dba: { members: [U0DBA1] }\nproviders:\n  hooks: { kind: webhook, url: \"https://h.example.com/\", secret_env: JIT_HOOK }\n\
         resources:\n  db:\n    provider: hooks\n    grant: { host: db1 }\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [dba]\n",
    )
    .unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("j.db").display());
    let run = |token: &str| {
        jitbot(
            &["serve"],
            &[
                ("JIT_POLICY", policy.to_str().unwrap()),
                ("SLACK_SIGNING_SECRET", "s"),
                ("SLACK_BOT_TOKEN", "xoxb-t"),
                ("SLACK_APP_TOKEN", token),
                ("SLACK_API_URL", &slack.base_url),
                ("JIT_DATABASE_URL", &db),
                ("JIT_LISTEN", "127.0.0.1:0"),
                ("JIT_HOOK", "x"),
            ],
        )
    };
    let (code, _, stderr) = run("xapp-a-stale-one");
    assert_eq!(code, 1, "{stderr}");
    let refusal: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("SLACK_APP_TOKEN"))
        .collect();
    assert_eq!(refusal.len(), 1, "{stderr}");
    assert!(refusal[0].contains("invalid_auth"), "{stderr}");
    // A bot token where the app token goes is named before anything starts.
    let (code, _, stderr) = run("xoxb-not-an-app-token");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("must start with xapp-"), "{stderr}");
}
