//! Nothing on a hot path reads a whole table. The real app runs a day's worth of work against a
//! PostgreSQL store that already holds 100,000 requests (with their grants, approvals, jobs and
//! audit events); every distinct statement it sent is then run through `EXPLAIN` on that store,
//! and none may plan a sequential scan of jitbot's tables.
//!
//! A test binary of its own: the statement recorder sees this process's statements only.

#[path = "e2e/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use support::*;

const ROWS: i64 = 100_000;
const TABLES: [&str; 5] = ["requests", "grants", "approvals", "jobs", "audit_events"];

/// History: expired requests with everything they left behind, and every hundredth one pending.
const FILL: &[&str] = &[
    "INSERT INTO requests (resource, requester, duration_secs, reason, state, open_key, approvals_needed, \
     auto_approved, channel, card_ts, created_at, decided_at, decided_by, decision_note, updated_at) \
     SELECT 'billing-admin', 'U0H' || lpad(g::text, 7, '0'), 3600, 'history', \
     CASE WHEN g % 100 = 0 THEN 'pending' ELSE 'expired' END, \
     CASE WHEN g % 100 = 0 THEN 'U0H' || lpad(g::text, 7, '0') || '|billing-admin' END, \
     1, false, 'C0REVIEW', '1700000000.000001', 1700000000000 + g, 1700000000000 + g, 'U0BOB', NULL, \
     1700000000000 + g FROM generate_series(1, {ROWS}) g",
    "INSERT INTO grants (request_id, provider_name, provider, grant_shape, identity, already_held, \
     granted_at, expires_at, end_reason, ended_at, last_error) \
     SELECT id, 'hooks', '{}', '{}', '{}', false, created_at, created_at + 1, 'expired', created_at + 2, NULL \
     FROM requests WHERE state = 'expired'",
    "INSERT INTO approvals (request_id, approver, decision, created_at) \
     SELECT id, 'U0BOB', 'approve', created_at FROM requests WHERE state = 'expired'",
    "INSERT INTO jobs (kind, request_id, payload, dedupe_key, run_at, attempts, locked_until, done_at, \
     last_error, created_at, lane, queue_key, locked_by, outcome, paced) \
     SELECT 'post_card', id, '{\"kind\":\"post_card\",\"request_id\":' || id || '}', 'post_card:' || id, \
     created_at, 1, NULL, created_at + 5, NULL, created_at, 'messages', 'C0REVIEW', NULL, 'done', false \
     FROM requests",
    "INSERT INTO jobs (kind, request_id, payload, dedupe_key, run_at, attempts, locked_until, done_at, \
     last_error, created_at, lane, queue_key, locked_by, outcome, paced) \
     SELECT 'end_access', id, '{\"kind\":\"end_access\",\"request_id\":' || id || '}', 'end_access:' || id, \
     created_at + 1, 1, NULL, created_at + 2, NULL, created_at, 'access', 'hooks', NULL, 'done', false \
     FROM requests WHERE state = 'expired'",
    "INSERT INTO jobs (kind, request_id, payload, dedupe_key, run_at, attempts, locked_until, done_at, \
     last_error, created_at, lane, queue_key, locked_by, outcome, paced) \
     SELECT 'timeout', id, '{\"kind\":\"timeout\",\"request_id\":' || id || '}', 'timeout:' || id, \
     4102444800000, 0, NULL, NULL, NULL, created_at, 'housekeeping', '', NULL, NULL, false \
     FROM requests WHERE state = 'pending'",
    "INSERT INTO audit_events (at, request_id, actor, action, detail) \
     SELECT created_at, id, 'jitbot', 'expired', '{}' FROM requests",
    "ANALYZE",
];

#[tokio::test]
async fn no_statement_jitbot_sends_scans_a_whole_table() {
    jitbot::store::record_statements();
    let pg = PgScratch::new().await;
    // Migrate, then fill with history.
    jitbot::store::Store::connect(&pg.url)
        .await
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let db = Database::connect(&pg.url).await.unwrap();
    for sql in FILL {
        db.execute_unprepared(&sql.replace("{ROWS}", &ROWS.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    // A day's work through the real app on that store.
    let secret = format!("hook-{}", suffix());
    let hook = jitbot::fakes::WebhookReceiver::start(&secret)
        .await
        .unwrap();
    let env_name = format!("JIT_HOOK_{}", suffix().to_uppercase());
    let env = HashMap::from([
        (env_name.clone(), secret),
        (
            format!("{env_name}_PG"),
            "postgres://nobody@127.0.0.1:1/none".into(),
        ),
        (TEST_JOB_RETENTION_MS.to_string(), "1".into()),
    ]);
    let app = spawn_with(
        pg.url.clone(),
        &hook_policy(&hook.url, &env_name),
        env,
        jitbot::fakes::FakeSlack::start().await.unwrap(),
        None,
        tempfile::tempdir().unwrap(),
    )
    .await;
    let one = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h INC-1").await);
    app.click(MALLORY, APPROVE, one).await;
    app.click(BOB, APPROVE, one).await;
    app.wait_state(one, "active").await;
    let two = TestApp::id_in(&app.say(ALICE, "request two-keys 1h rotate").await);
    app.say(BOB, &format!("approve {two}")).await;
    app.say(CAROL, &format!("deny {two} not now")).await;
    let three = TestApp::id_in(&app.say(ALICE, "request restricted 10m INC-2 payroll").await);
    app.say(ALICE, &format!("cancel {three}")).await;
    let four = TestApp::id_in(&app.say(ALICE, "request ci-deploy 2s deploy").await);
    app.say(ALICE, "list").await;
    app.say(BOB, "pending").await;
    app.say(CAROL, &format!("revoke {one}")).await;
    app.wait_state(one, "revoked").await;
    app.wait_state(four, "expired").await;
    app.wait_dm(ALICE, "has expired").await;
    reqwest::get(format!("{}/metrics", app.running.url()))
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    app.store
        .enqueue(&[jitbot::domain::Job::Maintain { round: 1 }.at(now)], now)
        .await
        .unwrap();
    let maintained = eventually(WAIT, || async {
        jitbot::store::recorded_statements()
            .iter()
            .any(|s| s.sql.starts_with("DELETE FROM \"jobs\""))
    })
    .await;
    assert!(maintained, "the maintenance round ran");

    // Every statement sent, through EXPLAIN.
    let mut checked = 0;
    let mut scans = Vec::new();
    for statement in jitbot::store::recorded_statements() {
        let verb = statement.sql.split_whitespace().next().unwrap_or("");
        if statement.db_backend != DbBackend::Postgres
            || !["SELECT", "UPDATE", "DELETE"].contains(&verb)
            || statement.sql.contains("seaql_migrations")
        {
            continue;
        }
        let explain = Statement {
            sql: format!("EXPLAIN {}", statement.sql),
            ..statement.clone()
        };
        let plan: Vec<String> = db
            .query_all_raw(explain)
            .await
            .unwrap_or_else(|e| panic!("EXPLAIN {}: {e}", statement.sql))
            .iter()
            .filter_map(|row| row.try_get_by_index::<String>(0).ok())
            .collect();
        checked += 1;
        if let Some(scan) = plan.iter().find(|line| {
            TABLES
                .iter()
                .any(|t| line.contains(&format!("Seq Scan on {t}")))
        }) {
            scans.push(format!("{}\n  {scan}", statement.sql));
        }
    }
    eprintln!("{checked} distinct statements checked with EXPLAIN");
    assert!(checked >= 25, "only {checked} statements were seen");
    assert!(scans.is_empty(), "whole-table scans:\n{}", scans.join("\n"));
    app.finish().await;
    pg.drop_all().await;
}
