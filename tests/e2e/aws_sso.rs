//! The `aws_sso` provider (IAM Identity Center) against moto with signature checking on: an
//! approved request becomes an account assignment, for the person's Identity Store user or, for
//! group access, the group the resource names; listed after it is made, and gone at its end.

use std::collections::HashMap;

use crate::support::*;

const INSTANCE: &str = SSO_INSTANCE;
const STORE: &str = "d-1234567890";

async fn assignments(sso: &aws_sdk_ssoadmin::Client, ps: &str) -> Vec<String> {
    sso.list_account_assignments()
        .instance_arn(INSTANCE)
        .account_id("111111111111")
        .permission_set_arn(ps)
        .send()
        .await
        .expect("assignments")
        .account_assignments()
        .iter()
        .filter_map(|a| {
            Some(format!(
                "{}:{}",
                a.principal_type()?.as_str(),
                a.principal_id()?
            ))
        })
        .collect()
}

async fn identity_center_assigns_and_unassigns(backend: Backend) {
    use aws_sdk_identitystore::types::{Email, Name};
    let moto = Moto::start_with(&[], &[], &[], &["Admin"]).await;
    let config = moto.config(&moto.admin_secret).await;
    let store = aws_sdk_identitystore::Client::new(&config);
    let alice = store
        .create_user()
        .identity_store_id(STORE)
        .user_name("alice")
        .display_name("Alice")
        .name(Name::builder().given_name("Alice").family_name("L").build())
        .emails(
            Email::builder()
                .value("alice@example.com")
                .primary(true)
                .build(),
        )
        .send()
        .await
        .expect("an Identity Store user")
        .user_id()
        .to_string();
    let sso = aws_sdk_ssoadmin::Client::new(&config);
    let ps = moto.permission_sets[0].clone();
    let policy = format!(
        r#"
settings: {{ request_ttl: 1h, min_duration: 2s }}
groups:
  dba: {{ members: [{BOB}] }}
identities:
  {ALICE}: {{ aws_sso_user: alice }}
providers:
  sso: {{ kind: aws_sso, endpoint_url: "{}", instance_arn: "{INSTANCE}", identity_store_id: {STORE} }}
resources:
  prod-admin:
    provider: sso
    grant: {{ permission_set_arn: "{ps}", account_id: "111111111111" }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
"#,
        moto.url
    );
    let env = HashMap::from([
        ("AWS_ACCESS_KEY_ID".to_string(), moto.key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), moto.secret.clone()),
    ]);
    let app = spawn_app(backend, &policy, env).await;
    let id = TestApp::id_in(&app.say(ALICE, "request prod-admin 3s INC-32").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;
    assert_eq!(assignments(&sso, &ps).await, [format!("USER:{alice}")]);
    app.wait_state(id, "expired").await;
    assert!(assignments(&sso, &ps).await.is_empty());
    app.finish().await;
}

#[tokio::test]
async fn identity_center_assigns_and_unassigns_on_sqlite() {
    identity_center_assigns_and_unassigns(Backend::Sqlite).await;
}

#[tokio::test]
async fn identity_center_assigns_and_unassigns_on_postgres() {
    identity_center_assigns_and_unassigns(Backend::Postgres).await;
}

#[tokio::test]
async fn group_access_assigns_the_group_and_the_last_of_two_grants_removes_it() {
    let moto = Moto::start_with(&[], &[], &[], &["Admin"]).await;
    let config = moto.config(&moto.admin_secret).await;
    let store = aws_sdk_identitystore::Client::new(&config);
    let oncall = store
        .create_group()
        .identity_store_id(STORE)
        .display_name("Oncall")
        .send()
        .await
        .expect("an Identity Store group")
        .group_id()
        .to_string();
    let sso = aws_sdk_ssoadmin::Client::new(&config);
    let ps = moto.permission_sets[0].clone();
    // Two resources give the on-call group the same assignment; neither requester needs an
    // Identity Center user of their own.
    let policy = format!(
        r#"
settings: {{ request_ttl: 1h, min_duration: 2s }}
groups:
  dba: {{ members: [{BOB}] }}
providers:
  sso: {{ kind: aws_sso, endpoint_url: "{}", instance_arn: "{INSTANCE}", identity_store_id: {STORE} }}
resources:
  oncall-admin:
    provider: sso
    grant: {{ permission_set_arn: "{ps}", account_id: "111111111111", group: Oncall }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
  incident-admin:
    provider: sso
    grant: {{ permission_set_arn: "{ps}", account_id: "111111111111", group: Oncall }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
"#,
        moto.url
    );
    let env = HashMap::from([
        ("AWS_ACCESS_KEY_ID".to_string(), moto.key_id.clone()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), moto.secret.clone()),
    ]);
    let app = spawn_app(Backend::Postgres, &policy, env).await;
    let short = TestApp::id_in(&app.say(ALICE, "request oncall-admin 2s INC-33").await);
    let long = TestApp::id_in(&app.say(MALLORY, "request incident-admin 6s INC-33").await);
    app.click(BOB, APPROVE, short).await;
    app.click(BOB, APPROVE, long).await;
    app.wait_state(short, "active").await;
    app.wait_state(long, "active").await;
    let group = [format!("GROUP:{oncall}")];
    assert_eq!(assignments(&sso, &ps).await, group);
    // The first end leaves the group's assignment: the other grant still gives it.
    app.wait_state(short, "expired").await;
    assert_eq!(app.state(long).await, "active");
    assert_eq!(assignments(&sso, &ps).await, group);
    // The last end removes it.
    app.wait_state(long, "expired").await;
    assert!(assignments(&sso, &ps).await.is_empty());
    app.finish().await;
}
