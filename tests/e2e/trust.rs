//! What jitbot trusts and what it does not: one workspace, complete lists, a cap on open requests
//! per person, an answer to every refused click, identities that are never a provider's admin,
//! and secrets read from files.

use std::collections::HashMap;
use std::time::Duration;

use jitbot::fakes::{FakeSlack, SlackSender};

use crate::support::*;

async fn foreign_workspace_is_refused(backend: Backend) {
    let (app, hook) = spawn_hook_app(backend).await;
    let mut foreign = SlackSender::new(&app.running.url(), &app.signing_secret);
    foreign.team_id = "T0ELSEWHERE".into();
    let answer = foreign
        .command(ALICE, "request billing-admin 1h x")
        .await
        .unwrap();
    assert_eq!(answer.status, 403, "{:?}", answer.body);
    // Ours: stored, and the card goes out.
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    let click = foreign.click(BOB, APPROVE, &id.to_string()).await.unwrap();
    assert_eq!(click.status, 403);
    assert_eq!(
        app.state(id).await,
        "pending",
        "a foreign click changed nothing"
    );
    assert!(hook.events().is_empty());
    // Each refusal is one audit event, and no request was stored for it.
    let events = app.store.audit_events(None).await.unwrap();
    let foreign_events: Vec<_> = events
        .iter()
        .filter(|e| e.action == "foreign_workspace")
        .collect();
    assert_eq!(foreign_events.len(), 2, "{events:#?}");
    assert!(foreign_events[0].detail.contains("T0ELSEWHERE"));
    assert_eq!(app.store.request(id + 1).await.unwrap(), None);
    let metrics = app.running.metrics.render(None, 0);
    assert!(
        metrics.contains("jitbot_foreign_payloads_total 2"),
        "{metrics}"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_payload_from_another_workspace_is_refused_on_sqlite() {
    foreign_workspace_is_refused(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_payload_from_another_workspace_is_refused_on_postgres() {
    foreign_workspace_is_refused(Backend::Postgres).await;
}

#[tokio::test]
async fn an_enterprise_grid_org_admits_its_workspaces_and_no_other_org() {
    // SLACK_TEAM_ID names an org: any workspace of that org is ours, another org is not.
    let ((app, _hook), _) = spawn_hook_app_env(
        Backend::Sqlite,
        |p| p,
        HashMap::from([(TEST_TEAM_ID.to_string(), "E0ACME".to_string())]),
    )
    .await;
    let url = app.running.url();
    let post = |team: &'static str, org: &'static str| {
        let sender = SlackSender::new(&url, &app.signing_secret);
        async move {
            let body = serde_urlencoded::to_string([
                ("team_id", team),
                ("enterprise_id", org),
                ("user_id", ALICE),
                ("channel_id", "C0GENERAL"),
                ("text", "help"),
            ])
            .unwrap();
            sender.post("/slack/commands", body).await.unwrap().status
        }
    };
    assert_eq!(post("T0ONE", "E0ACME").await, 200);
    assert_eq!(post("T0TWO", "E0ACME").await, 200);
    assert_eq!(post("T0ONE", "E0OTHER").await, 403);
    assert_eq!(post("T0ONE", "").await, 403);
    app.finish().await;
}

#[tokio::test]
async fn without_slack_team_id_the_workspace_is_the_one_auth_test_names() {
    let dir = tempfile::tempdir().unwrap();
    let slack = FakeSlack::start().await.unwrap();
    slack.set_team("T0REAL", None);
    let policy = "resources: {}\n";
    let app = spawn_with(
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("jitbot.db").display()
        ),
        policy,
        HashMap::new(),
        slack,
        None,
        dir,
    )
    .await;
    let mut ours = SlackSender::new(&app.running.url(), &app.signing_secret);
    ours.team_id = "T0REAL".into();
    assert_eq!(ours.command(ALICE, "help").await.unwrap().status, 200);
    // The harness's default team is someone else's here.
    assert_eq!(app.sender.command(ALICE, "help").await.unwrap().status, 403);
    assert_eq!(app.slack.calls_to("auth.test").len(), 1, "asked once");
    app.finish().await;
}

async fn long_lists_are_complete(backend: Backend) {
    let ((mut app, _hook), _) = spawn_hook_app_env(
        backend,
        |p| p,
        HashMap::from([(TEST_POST_INTERVAL_MS.to_string(), "1".to_string())]),
    )
    .await;
    app.sender.response_url = app.slack.response_url("commands/T0TEST/1/pending");
    let mut ids = Vec::new();
    for i in 0..250 {
        let user = format!("U0P{i:04}");
        let answer = app
            .say(&user, &format!("request billing-admin 1h ticket-{i}"))
            .await;
        ids.push(TestApp::id_in(&answer));
    }
    // One request Bob has decided already, and one of a resource he does not approve: neither
    // is his to decide now.
    app.click(BOB, APPROVE, ids[0]).await;
    app.wait_state(ids[0], "active").await;
    let answer = app.sender.command(BOB, "pending").await.unwrap();
    assert_eq!(answer.status, 200);
    let first = answer.body["text"].as_str().unwrap_or("").to_string();
    assert!(first.contains("Waiting for you (249;"), "{first}");
    let calls = app
        .slack
        .wait_until(WAIT, "the rest of the list", |calls| {
            let listed: usize = calls
                .iter()
                .filter(|c| c.method == "response_url")
                .map(|c| c.str("text").matches("wants *billing-admin*").count())
                .sum();
            listed + first.matches("wants *billing-admin*").count() >= 249
        })
        .await
        .unwrap();
    let mut text = first.clone();
    for c in calls.iter().filter(|c| c.method == "response_url") {
        assert_eq!(c.body["response_type"], "ephemeral");
        assert!(c.str("text").chars().count() <= 40_000);
        text.push('\n');
        text.push_str(c.str("text"));
    }
    for id in &ids[1..] {
        assert!(text.contains(&format!("• #{id} ")), "#{id} missing");
    }
    assert!(
        !text.contains(&format!("• #{} ", ids[0])),
        "decided one listed"
    );
    // A requester's own list is complete too.
    let mine = app.say("U0P0007", "list").await;
    assert!(mine.contains(&format!("#{}", ids[7])), "{mine}");
    app.finish().await;
}

#[tokio::test]
async fn two_hundred_fifty_pending_requests_are_all_listed_on_sqlite() {
    long_lists_are_complete(Backend::Sqlite).await;
}

#[tokio::test]
async fn two_hundred_fifty_pending_requests_are_all_listed_on_postgres() {
    long_lists_are_complete(Backend::Postgres).await;
}

async fn one_person_holds_at_most_max_open_per_user_requests_on(backend: Backend) {
    let ((app, _hook), _) = spawn_hook_app_with(backend, |p| {
        p.replacen("settings: {", "settings: { max_open_per_user: 2,", 1)
    })
    .await;
    let first = app.say(ALICE, "request billing-admin 1h a").await;
    TestApp::id_in(&first);
    let second = app.say(ALICE, "request two-keys 1h b").await;
    let second = TestApp::id_in(&second);
    let third = app.say(ALICE, "request self-serve 1h c").await;
    assert!(third.contains("at once (2)"), "{third}");
    assert!(
        !third.contains('#') || !third.contains("Request #"),
        "{third}"
    );
    // Another person is not held back by Alice's.
    let bob = app.say(BOB, "request self-serve 1h d").await;
    TestApp::id_in(&bob);
    // Once one ends, Alice may ask again.
    app.say(ALICE, &format!("cancel {second}")).await;
    let again = app.say(ALICE, "request self-serve 1h c").await;
    TestApp::id_in(&again);
    app.finish().await;
}

async fn the_cap_holds_under_concurrent_requests_on(backend: Backend) {
    // Six requests by one person at the same instant, for six resources, with a cap of two:
    // the cap is counted in the transaction that stores them, so exactly two get through.
    let ((app, _hook), _) = spawn_hook_app_with(backend, |p| {
        p.replacen("settings: {", "settings: { max_open_per_user: 2,", 1)
    })
    .await;
    let asks = [
        "request billing-admin 1h a",
        "request two-keys 1h b",
        "request restricted 30m c",
        "request self-serve 1h d",
        "request ci-deploy 1h e",
        "request prod-db 1h f",
    ];
    let mut sends = tokio::task::JoinSet::new();
    for text in asks {
        let sender = app.sender.clone();
        sends.spawn(async move { sender.command_text(ALICE, text).await });
    }
    let answers = sends.join_all().await;
    let stored = answers
        .iter()
        .filter(|a| a.as_ref().is_ok_and(|t| t.contains("Request #")))
        .count();
    let capped = answers
        .iter()
        .filter(|a| a.as_ref().is_ok_and(|t| t.contains("at once (2)")))
        .count();
    assert_eq!((stored, capped), (2, 4), "{answers:?}");
    assert_eq!(app.store.count_requests().await.unwrap(), 2);
    app.finish().await;
}

#[tokio::test]
async fn the_cap_on_open_requests_holds_under_concurrent_requests_on_sqlite() {
    the_cap_holds_under_concurrent_requests_on(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_cap_on_open_requests_holds_under_concurrent_requests_on_postgres() {
    the_cap_holds_under_concurrent_requests_on(Backend::Postgres).await;
}

#[tokio::test]
async fn one_person_holds_at_most_max_open_per_user_requests_on_sqlite() {
    one_person_holds_at_most_max_open_per_user_requests_on(Backend::Sqlite).await;
}

#[tokio::test]
async fn one_person_holds_at_most_max_open_per_user_requests_on_postgres() {
    one_person_holds_at_most_max_open_per_user_requests_on(Backend::Postgres).await;
}

async fn a_refused_click_outside_a_channel_is_answered_through_its_response_url_on(
    backend: Backend,
) {
    let (mut app, _hook) = spawn_hook_app(backend).await;
    app.sender.response_url = app.slack.response_url("actions/T0TEST/1/click");
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    let answer = app
        .sender
        .click_outside_channel(MALLORY, APPROVE, &id.to_string())
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let calls = app
        .slack
        .wait_until(WAIT, "an answer to Mallory", |calls| {
            calls
                .iter()
                .any(|c| c.method == "response_url" && c.str("text").contains("not an approver"))
        })
        .await
        .unwrap();
    let answer = calls
        .iter()
        .find(|c| c.method == "response_url")
        .expect("answered");
    assert_eq!(answer.body["response_type"], "ephemeral");
    assert_eq!(answer.body["replace_original"], false, "the card stays");
    assert_eq!(app.state(id).await, "pending");
    app.finish().await;
}

#[tokio::test]
async fn a_refused_click_outside_a_channel_is_answered_through_its_response_url_on_sqlite() {
    a_refused_click_outside_a_channel_is_answered_through_its_response_url_on(Backend::Sqlite)
        .await;
}

#[tokio::test]
async fn a_refused_click_outside_a_channel_is_answered_through_its_response_url_on_postgres() {
    a_refused_click_outside_a_channel_is_answered_through_its_response_url_on(Backend::Postgres)
        .await;
}

#[tokio::test]
async fn a_response_url_off_slack_is_never_called() {
    let (mut app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere = format!("http://{}/steal", listener.local_addr().unwrap());
    app.sender.response_url = elsewhere;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.sender
        .click_outside_channel(MALLORY, APPROVE, &id.to_string())
        .await
        .unwrap();
    let accepted = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await;
    assert!(accepted.is_err(), "jitbot connected to a URL off Slack");
    app.finish().await;
}

#[tokio::test]
async fn serve_refuses_an_identity_that_is_a_superuser_of_its_provider() {
    let mut target = PgScratch::new().await;
    // NOLOGIN: a superuser that nobody can log in as, should the test stop before its clean-up.
    let root = target.role("root_like", false).await;
    exec(&target.admin, &format!("ALTER ROLE \"{root}\" SUPERUSER")).await;
    let role = target.role("prod_rw", false).await;
    let admin_env = format!("JIT_PG_ADMIN_{}", suffix().to_uppercase());
    let policy = format!(
        "identities:\n  {ALICE}: {{ postgres: {root} }}\nproviders:\n  pg: {{ kind: postgres, url_env: {admin_env} }}\n\
         resources:\n  prod-db:\n    provider: pg\n    grant: {{ role: {role} }}\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [{BOB}]\n"
    );
    let (policy, _) = jitbot::domain::Policy::parse("p.yaml", &policy).unwrap();
    let env = jitbot::config::Env::with_overrides(HashMap::from([(
        admin_env.clone(),
        target.url.clone(),
    )]));
    let error = jitbot::app::refuse_privileged_identities(&policy, &env)
        .await
        .unwrap_err();
    assert!(format!("{error}").contains("is a superuser"), "{error}");
    assert!(format!("{error}").contains(&format!("identities.{ALICE}.postgres")));
    // The login jitbot's provider connects as is refused the same way, superuser or not.
    let admin_login = target.role("jit_admin", true).await;
    let admin_url = target
        .url
        .replacen("postgres@", &format!("{admin_login}@"), 1);
    assert_ne!(admin_url, target.url, "the URL names a login");
    let env = jitbot::config::Env::with_overrides(HashMap::from([(admin_env.clone(), admin_url)]));
    let (policy2, _) = jitbot::domain::Policy::parse(
        "p.yaml",
        &format!(
            "identities:\n  {ALICE}: {{ postgres: {admin_login} }}\nproviders:\n  pg: {{ kind: postgres, url_env: {admin_env} }}\nresources: {{}}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let error = jitbot::app::refuse_privileged_identities(&policy2, &env)
        .await
        .unwrap_err();
    assert!(format!("{error}").contains("connects as"), "{error}");
    // `check` refuses the built-in names without asking anyone.
    let errors = jitbot::domain::Policy::parse(
        "p.yaml",
        &format!("identities:\n  {ALICE}: {{ postgres: postgres }}\n  {BOB}: {{ postgres: rds_superuser }}\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        errors.contains("bootstrap superuser") && errors.contains("RDS"),
        "{errors}"
    );
    target.drop_all().await;
}

#[tokio::test]
async fn secrets_come_from_files_and_never_from_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signing-secret");
    std::fs::write(&file, "s3cret-from-file\n").unwrap();
    let env = jitbot::config::Env::with_overrides(HashMap::from([
        (
            "SLACK_SIGNING_SECRET_FILE".to_string(),
            file.display().to_string(),
        ),
        ("SLACK_BOT_TOKEN".to_string(), "xoxb-plain".to_string()),
    ]));
    let config = jitbot::config::Config::from_env(&env).unwrap();
    assert_eq!(config.signing_secret.expose(), "s3cret-from-file");
    assert_eq!(config.bot_token.expose(), "xoxb-plain");
    let both = jitbot::config::Env::with_overrides(HashMap::from([
        ("SLACK_SIGNING_SECRET".to_string(), "x".to_string()),
        (
            "SLACK_SIGNING_SECRET_FILE".to_string(),
            file.display().to_string(),
        ),
        ("SLACK_BOT_TOKEN".to_string(), "xoxb-plain".to_string()),
    ]));
    let error = jitbot::config::Config::from_env(&both).unwrap_err();
    assert!(format!("{error}").contains("set only one"), "{error}");
    let missing = jitbot::config::Env::with_overrides(HashMap::from([
        (
            "SLACK_SIGNING_SECRET_FILE".to_string(),
            dir.path().join("nope").display().to_string(),
        ),
        ("SLACK_BOT_TOKEN".to_string(), "xoxb-plain".to_string()),
    ]));
    let error = format!(
        "{}",
        jitbot::config::Config::from_env(&missing).unwrap_err()
    );
    assert!(error.contains("cannot read"), "{error}");
    assert!(!error.contains("s3cret"), "no secret in errors: {error}");
}

async fn an_admin_sees_every_pending_request_and_a_stranger_sees_none_on(backend: Backend) {
    let ((app, _hook), _) = spawn_hook_app_with(backend, |p| {
        p.replacen("settings: {", "settings: { admins: [U0DAVE],", 1)
    })
    .await;
    let a = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h a").await);
    let b = TestApp::id_in(&app.say(ALICE, "request two-keys 1h b").await);
    let admin = app.say("U0DAVE", "pending").await;
    for id in [a, b] {
        assert!(admin.contains(&format!("• #{id} ")), "{admin}");
    }
    assert!(admin.contains("not yours to decide"), "{admin}");
    let bob = app.say(BOB, "pending").await;
    assert!(
        bob.contains(&format!("• #{a} ")) && !bob.contains("not yours"),
        "{bob}"
    );
    assert_eq!(
        app.say(MALLORY, "pending").await,
        "Nothing is waiting for you."
    );
    app.finish().await;
}

#[tokio::test]
async fn an_admin_sees_every_pending_request_and_a_stranger_sees_none_on_sqlite() {
    an_admin_sees_every_pending_request_and_a_stranger_sees_none_on(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_admin_sees_every_pending_request_and_a_stranger_sees_none_on_postgres() {
    an_admin_sees_every_pending_request_and_a_stranger_sees_none_on(Backend::Postgres).await;
}

#[tokio::test]
async fn serve_refuses_a_bot_token_that_slack_refuses_before_touching_the_database() {
    let slack = FakeSlack::start().await.unwrap();
    slack.fault(
        "auth.test",
        None,
        jitbot::fakes::SlackFault::Error("invalid_auth".into()),
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jitbot.db");
    let config = jitbot::config::Config {
        database_url: format!("sqlite://{}?mode=rwc", db.display()),
        policy: dir.path().join("policy.yaml"),
        listen: "127.0.0.1:0".into(),
        signing_secret: jitbot::config::Secret::new("s"),
        bot_token: jitbot::config::Secret::new("xoxb-revoked"),
        slack_api_url: slack.base_url.clone(),
        team_id: None,
        app_token: None,
        tuning: jitbot::config::Tuning::default(),
    };
    let (policy, _) = jitbot::domain::Policy::parse("p.yaml", "resources: {}\n").unwrap();
    let error = match jitbot::app::build(config, jitbot::config::Env::default(), policy).await {
        Ok(_) => panic!("a refused token must stop serve"),
        Err(e) => e,
    };
    assert!(
        error.is::<jitbot::config::UserError>(),
        "exit 1, not an internal error: {error:#}"
    );
    assert!(format!("{error}").contains("invalid_auth"), "{error}");
    assert!(!db.exists(), "the database was touched");
}

/// More waiting than one answer can hold: `/jit pending` reads only so many (the oldest), says
/// there are more, and costs the same however many wait.
async fn a_longer_backlog_than_an_answer_holds_is_said_to_be_longer(backend: Backend) {
    let ((mut app, _hook), _) = spawn_hook_app_env(
        backend,
        |p| p,
        HashMap::from([
            (TEST_POST_INTERVAL_MS.to_string(), "1".to_string()),
            (TEST_PENDING_READ_AT_MOST.to_string(), "20".to_string()),
        ]),
    )
    .await;
    app.sender.response_url = app.slack.response_url("commands/T0TEST/1/pending");
    let mut ids = Vec::new();
    for i in 0..30 {
        let user = format!("U0Q{i:04}");
        let answer = app
            .say(&user, &format!("request billing-admin 1h ticket-{i}"))
            .await;
        ids.push(TestApp::id_in(&answer));
    }
    let answer = app.sender.command(BOB, "pending").await.unwrap();
    assert_eq!(answer.status, 200);
    let text = answer.body["text"].as_str().unwrap_or("").to_string();
    assert!(
        text.contains("Waiting for you (over 20, oldest first;"),
        "{text}"
    );
    for id in &ids[..20] {
        assert!(text.contains(&format!("• #{id} ")), "#{id} missing: {text}");
    }
    for id in &ids[20..] {
        assert!(
            !text.contains(&format!("• #{id} ")),
            "#{id} beyond the 20 read: {text}"
        );
    }
    app.finish().await;
}

/// Lines longer than six messages hold: `/jit pending` reads about as many as its messages can
/// show (not every request waiting), lists the oldest, and every one it counts is either shown
/// or counted as not shown.
async fn long_lines_fill_six_messages_and_the_rest_is_counted(backend: Backend) {
    let ((mut app, _hook), _) = spawn_hook_app_env(
        backend,
        |p| p,
        HashMap::from([(TEST_POST_INTERVAL_MS.to_string(), "1".to_string())]),
    )
    .await;
    app.sender.response_url = app.slack.response_url("commands/T0TEST/1/pending");
    // Each line over 1,000 characters: 250 of them are more than six messages of 40,000.
    let long = "x".repeat(980);
    let mut ids = Vec::new();
    for i in 0..250 {
        let user = format!("U0L{i:04}");
        let answer = app
            .say(
                &user,
                &format!("request billing-admin 1h ticket-{i:03} {long}"),
            )
            .await;
        ids.push(TestApp::id_in(&answer));
    }
    let answer = app.sender.command(BOB, "pending").await.unwrap();
    assert_eq!(answer.status, 200);
    let first = answer.body["text"].as_str().unwrap_or("").to_string();
    let counted: usize = first
        .split("Waiting for you (over ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the head says there are more: {first:.200}"));
    assert!(
        (200..250).contains(&counted),
        "read about what six messages hold, not all 250: {counted}"
    );
    let calls = app
        .slack
        .wait_until(WAIT, "the rest of the list", |calls| {
            calls.iter().filter(|c| c.method == "response_url").count() >= 5
        })
        .await
        .unwrap();
    let rest: Vec<String> = calls
        .iter()
        .filter(|c| c.method == "response_url")
        .map(|c| c.str("text").to_string())
        .collect();
    assert_eq!(rest.len(), 5, "six messages in all");
    let messages: Vec<&str> = std::iter::once(first.as_str())
        .chain(rest.iter().map(String::as_str))
        .collect();
    for m in &messages {
        assert!(m.chars().count() <= 40_000, "a message Slack would cut");
    }
    let text = messages.join("\n");
    let shown: Vec<i32> = ids
        .iter()
        .copied()
        .filter(|id| text.contains(&format!("• #{id} ")))
        .collect();
    assert_eq!(shown, ids[..shown.len()], "the oldest, none skipped");
    let not_shown: usize = text
        .split("…and ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(
        shown.len() + not_shown,
        counted,
        "every one counted is shown or said not shown"
    );
    app.finish().await;
}

#[tokio::test]
async fn long_lines_fill_six_messages_and_the_rest_is_counted_on_sqlite() {
    long_lines_fill_six_messages_and_the_rest_is_counted(Backend::Sqlite).await;
}

#[tokio::test]
async fn long_lines_fill_six_messages_and_the_rest_is_counted_on_postgres() {
    long_lines_fill_six_messages_and_the_rest_is_counted(Backend::Postgres).await;
}

#[tokio::test]
async fn a_longer_backlog_than_an_answer_holds_is_said_to_be_longer_on_sqlite() {
    a_longer_backlog_than_an_answer_holds_is_said_to_be_longer(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_longer_backlog_than_an_answer_holds_is_said_to_be_longer_on_postgres() {
    a_longer_backlog_than_an_answer_holds_is_said_to_be_longer(Backend::Postgres).await;
}
