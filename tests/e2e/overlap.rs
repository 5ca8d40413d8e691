//! Overlapping grants of the same access are counted: two resources naming one PostgreSQL role,
//! granted to one person, share the membership. The first to end leaves it (and says so); the
//! last removes it. Grants ending at the same moment (on other workers) never both think another
//! still holds it, and access held before jitbot stays untouched.

use std::collections::HashMap;

use crate::support::*;

/// `count` resources (`db-0`, `db-1`, …) that all grant one role, auto-approved for Alice.
fn policy(role: &str, login: &str, admin_env: &str, count: usize) -> String {
    let mut resources = String::new();
    for i in 0..count {
        resources.push_str(&format!(
            r#"
  db-{i}:
    provider: pg-main
    grant: {{ role: {role} }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
    auto_approve:
      - requesters: [{ALICE}]
        max_duration: 1h
"#
        ));
    }
    format!(
        r#"
settings: {{ request_ttl: 1h, min_duration: 1s }}
groups:
  dba: {{ members: [{BOB}] }}
identities:
  {ALICE}: {{ postgres: {login} }}
providers:
  pg-main: {{ kind: postgres, url_env: {admin_env}, concurrency: 8 }}
resources:{resources}"#
    )
}

struct Setup {
    target: PgScratch,
    role: String,
    login: String,
    app: TestApp,
}

async fn setup(backend: Backend, count: usize, held_before: bool) -> Setup {
    let mut target = PgScratch::new().await;
    let role = target.role("shared_rw", false).await;
    let login = target.role("alice", true).await;
    if held_before {
        exec(&target.admin, &format!("GRANT \"{role}\" TO \"{login}\"")).await;
    }
    let admin_env = format!("JIT_PG_ADMIN_{}", suffix().to_uppercase());
    let env = HashMap::from([(admin_env.clone(), target.url.clone())]);
    let app = spawn_app(backend, &policy(&role, &login, &admin_env, count), env).await;
    Setup {
        target,
        role,
        login,
        app,
    }
}

async fn first_expiry_leaves_the_access_and_the_last_removes_it(backend: Backend) {
    let Setup {
        target,
        role,
        login,
        app,
    } = setup(backend, 2, false).await;

    let short = TestApp::id_in(&app.say(ALICE, "request db-0 2s short look").await);
    app.wait_state(short, "active").await;
    let long = TestApp::id_in(&app.say(ALICE, "request db-1 6s longer work").await);
    app.wait_state(long, "active").await;
    assert!(target.is_member(&role, &login).await);

    // The first to end leaves the membership to the other grant, and says so.
    app.wait_state(short, "expired").await;
    assert!(
        target.is_member(&role, &login).await,
        "the first expiry took the access the other grant still gives"
    );
    app.wait_dm(ALICE, &format!("request #{long} gives the same access"))
        .await;
    let ended = app.store.grant(short).await.unwrap().unwrap();
    assert_eq!(ended.handed_to, Some(long));

    // The last removes it, confirmed at the target.
    app.wait_state(long, "expired").await;
    assert!(
        !target.is_member(&role, &login).await,
        "the last expiry left the role behind"
    );
    let dm = app.wait_dm(ALICE, "confirmed at the target").await;
    assert!(
        dm.body.to_string().contains(&format!("#{long}")),
        "{}",
        dm.body
    );
    app.finish().await;
    target.drop_all().await;
}

#[tokio::test]
async fn overlapping_grants_of_one_role_end_one_after_the_other_on_sqlite() {
    first_expiry_leaves_the_access_and_the_last_removes_it(Backend::Sqlite).await;
}

#[tokio::test]
async fn overlapping_grants_of_one_role_end_one_after_the_other_on_postgres() {
    first_expiry_leaves_the_access_and_the_last_removes_it(Backend::Postgres).await;
}

/// Six grants of one role, all ending in the same second on eight workers: exactly one of them
/// is the last and removes the role; none is left holding it.
async fn grants_ending_together_leave_nothing_behind(backend: Backend) {
    const GRANTS: usize = 6;
    let Setup {
        target,
        role,
        login,
        app,
    } = setup(backend, GRANTS, false).await;
    let mut ids = Vec::new();
    for i in 0..GRANTS {
        ids.push(TestApp::id_in(
            &app.say(ALICE, &format!("request db-{i} 3s together")).await,
        ));
    }
    for id in &ids {
        app.wait_state(*id, "active").await;
    }
    for id in &ids {
        app.wait_state(*id, "expired").await;
    }
    assert!(
        !target.is_member(&role, &login).await,
        "grants ending together left the role behind"
    );
    let mut last = 0;
    for id in &ids {
        let grant = app.store.grant(*id).await.unwrap().unwrap();
        assert_eq!(grant.hold, None, "#{id} still holds the access");
        if grant.handed_to.is_none() {
            last += 1;
        }
    }
    assert_eq!(last, 1, "exactly one grant is the last to hold the role");
    app.finish().await;
    target.drop_all().await;
}

#[tokio::test]
async fn grants_of_one_role_ending_together_leave_nothing_behind_on_sqlite() {
    grants_ending_together_leave_nothing_behind(Backend::Sqlite).await;
}

#[tokio::test]
async fn grants_of_one_role_ending_together_leave_nothing_behind_on_postgres() {
    grants_ending_together_leave_nothing_behind(Backend::Postgres).await;
}

#[tokio::test]
async fn overlapping_grants_leave_access_held_before_jitbot_alone() {
    let Setup {
        target,
        role,
        login,
        app,
    } = setup(Backend::Sqlite, 2, true).await;
    let a = TestApp::id_in(&app.say(ALICE, "request db-0 2s one").await);
    let b = TestApp::id_in(&app.say(ALICE, "request db-1 3s two").await);
    app.wait_state(a, "expired").await;
    app.wait_state(b, "expired").await;
    for id in [a, b] {
        let grant = app.store.grant(id).await.unwrap().unwrap();
        assert_eq!(grant.already_held, Some(true), "#{id}");
    }
    assert!(
        target.is_member(&role, &login).await,
        "jitbot took away access it did not give"
    );
    app.wait_dm(ALICE, "you held it before jitbot").await;
    app.finish().await;
    target.drop_all().await;
}
