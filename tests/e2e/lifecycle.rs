//! The whole life of a request, once per store: request → card → refused clicks → approve →
//! role granted in PostgreSQL → card updated → DM → expiry → role revoked (sessions ended) → DM.

use std::collections::HashMap;

use sea_orm::sqlx::{Connection, PgConnection};

use crate::support::*;

fn pg_policy(role: &str, login: &str, admin_env: &str) -> String {
    format!(
        r#"
settings: {{ request_ttl: 1h, min_duration: 1s }}
groups:
  dba: {{ members: [{BOB}, {CAROL}] }}
identities:
  {ALICE}: {{ postgres: {login}, email: alice@example.com }}
providers:
  pg-main: {{ kind: postgres, url_env: {admin_env} }}
resources:
  prod-db:
    description: Production PostgreSQL, read-write
    provider: pg-main
    grant: {{ role: {role} }}
    max_duration: 4h
    channel: C0REVIEW
    approvers: [dba]
    reason_required: true
"#
    )
}

async fn whole_life(backend: Backend) {
    // The target database: roles live in the test server, named uniquely for this test.
    let mut target = PgScratch::new().await;
    let role = target.role("prod_rw", false).await;
    let login = target.role("alice", true).await;
    let admin_env = format!("JIT_PG_ADMIN_{}", suffix().to_uppercase());
    let env = HashMap::from([(admin_env.clone(), target.url.clone())]);
    let app = spawn_app(backend, &pg_policy(&role, &login, &admin_env), env).await;

    // Alice asks.
    let answer = app
        .say(ALICE, "request prod-db 3s debugging INC-4312")
        .await;
    assert!(answer.contains("waiting for approval"), "{answer}");
    let id = TestApp::id_in(&answer);
    assert_eq!(app.state(id).await, "pending");

    // The card reaches the reviewers' channel with both buttons.
    let calls = app
        .wait_calls("the card", |c| {
            c.iter()
                .any(|c| c.method == "chat.postMessage" && c.str("channel") == "C0REVIEW")
        })
        .await;
    let card = calls
        .iter()
        .find(|c| c.method == "chat.postMessage")
        .expect("card");
    let text = card.body.to_string();
    for needle in [
        format!("<@{ALICE}>"),
        "prod-db".into(),
        "3s".into(),
        "debugging INC-4312".into(),
        "Approve".into(),
        "Deny".into(),
    ] {
        assert!(text.contains(&needle), "card lacks {needle}: {text}");
    }
    assert!(has_buttons(card));

    // Refused clicks: the requester herself, and someone who is not an approver.
    app.click(ALICE, APPROVE, id).await;
    app.wait_ephemeral(ALICE, "your own request").await;
    app.click(MALLORY, APPROVE, id).await;
    app.wait_ephemeral(MALLORY, "not an approver").await;
    assert_eq!(app.state(id).await, "pending");
    assert!(!target.is_member(&role, &login).await);

    // Bob approves: the role is granted in the real database.
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    assert!(
        target.is_member(&role, &login).await,
        "role was not granted"
    );
    let update = app.wait_card_update("access ends").await;
    assert!(
        update.body.to_string().contains(&format!("<@{BOB}>")),
        "card names no approver: {}",
        update.body
    );
    assert!(!has_buttons(&update), "buttons left on a decided card");
    app.wait_dm(ALICE, "was approved").await;

    // Alice has a session open as her login; expiry takes the role and ends the session.
    let alice_url =
        with_database(&target.url, &target.db).replacen("postgres@", &format!("{login}@"), 1);
    let mut session = PgConnection::connect(&alice_url)
        .await
        .expect("alice can log in");
    let grant = app.store.grant(id).await.unwrap().unwrap();
    let expires_at = grant.expires_at.expect("expires_at");
    app.wait_state(id, "expired").await;
    let lag_ms = app
        .store
        .grant(id)
        .await
        .unwrap()
        .unwrap()
        .ended_at
        .unwrap()
        - expires_at;
    eprintln!("expiry lag ({backend:?}): {lag_ms} ms from expires_at to the role being gone");
    assert!(lag_ms < 3_000, "revoked {lag_ms} ms after expiry");
    assert!(
        !target.is_member(&role, &login).await,
        "role still held after expiry"
    );
    let still_alive = sea_orm::sqlx::query("SELECT 1").execute(&mut session).await;
    assert!(
        still_alive.is_err(),
        "the login's open session survived the revoke"
    );
    app.wait_dm(ALICE, "has expired").await;
    let last = app.wait_card_update("access expired").await;
    assert!(!has_buttons(&last));

    let actions = app.audit_actions(id).await;
    for step in [
        "requested",
        "decision_refused",
        "approved",
        "granted",
        "expired",
    ] {
        assert!(
            actions.iter().any(|a| a == step),
            "no {step} audit event in {actions:?}"
        );
    }
    app.finish().await;
    target.drop_all().await;
}

#[tokio::test]
async fn the_whole_life_of_a_request_on_sqlite() {
    whole_life(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_whole_life_of_a_request_on_postgres() {
    whole_life(Backend::Postgres).await;
}

#[tokio::test]
async fn access_the_login_already_held_is_left_alone_on_revoke() {
    let mut target = PgScratch::new().await;
    let role = target.role("prod_rw", false).await;
    let login = target.role("alice", true).await;
    exec(&target.admin, &format!("GRANT \"{role}\" TO \"{login}\"")).await;
    let admin_env = format!("JIT_PG_ADMIN_{}", suffix().to_uppercase());
    let env = HashMap::from([(admin_env.clone(), target.url.clone())]);
    let app = spawn_app(Backend::Sqlite, &pg_policy(&role, &login, &admin_env), env).await;

    let id = TestApp::id_in(&app.say(ALICE, "request prod-db 2s already have it").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    assert_eq!(
        app.store.grant(id).await.unwrap().unwrap().already_held,
        Some(true)
    );
    app.wait_state(id, "expired").await;
    assert!(
        target.is_member(&role, &login).await,
        "jitbot took away access it did not give"
    );
    app.finish().await;
    target.drop_all().await;
}

#[tokio::test]
async fn a_hostile_identity_cannot_inject_sql() {
    let mut target = PgScratch::new().await;
    let role = target.role("prod_rw", false).await;
    // A login whose name is an injection attempt: quoted, it is just an odd name.
    let hostile = format!("alice_{}\"; DROP TABLE x; --", suffix());
    exec(
        &target.admin,
        &format!("CREATE ROLE \"{}\" LOGIN", hostile.replace('"', "\"\"")),
    )
    .await;
    // A table in the target database that the injection would drop.
    let target_pool = sea_orm::sqlx::postgres::PgPoolOptions::new()
        .connect(&target.url)
        .await
        .unwrap();
    exec(&target_pool, "CREATE TABLE x (id int)").await;
    let admin_env = format!("JIT_PG_ADMIN_{}", suffix().to_uppercase());
    let env = HashMap::from([(admin_env.clone(), target.url.clone())]);
    let policy = pg_policy(&role, "PLACEHOLDER", &admin_env)
        .replace("postgres: PLACEHOLDER", &format!("postgres: '{hostile}'"));
    let app = spawn_app(Backend::Sqlite, &policy, env).await;

    let id = TestApp::id_in(&app.say(ALICE, "request prod-db 2s tables").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    assert!(
        target.is_member(&role, &hostile).await,
        "the oddly named login did not get the role"
    );
    app.wait_state(id, "expired").await;
    assert!(!target.is_member(&role, &hostile).await);
    let (exists,): (bool,) = sea_orm::sqlx::query_as("SELECT to_regclass('public.x') IS NOT NULL")
        .fetch_one(&target_pool)
        .await
        .unwrap();
    assert!(exists, "table x was dropped");
    target_pool.close().await;
    app.finish().await;
    exec(
        &target.admin,
        &format!("DROP ROLE IF EXISTS \"{}\"", hostile.replace('"', "\"\"")),
    )
    .await;
    target.drop_all().await;
}

#[tokio::test]
async fn a_login_that_does_not_exist_ends_in_grant_failed_and_the_channel_is_told() {
    let mut target = PgScratch::new().await;
    let role = target.role("prod_rw", false).await;
    let admin_env = format!("JIT_PG_ADMIN_{}", suffix().to_uppercase());
    let env = HashMap::from([(admin_env.clone(), target.url.clone())]);
    let app = spawn_app(
        Backend::Sqlite,
        &pg_policy(&role, &format!("ghost_{}", suffix()), &admin_env),
        env,
    )
    .await;

    let id = TestApp::id_in(&app.say(ALICE, "request prod-db 1m who am i").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "grant_failed").await;
    app.wait_dm(ALICE, "could not grant").await;
    app.wait_channel_note("failed").await;
    app.wait_card_update("the grant failed").await;
    app.finish().await;
    target.drop_all().await;
}
