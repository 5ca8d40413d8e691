//! The `gcp_iam` provider against a fake Resource Manager that checks the signed bearer JWT and
//! the etag: a conditional binding titled after the request, ending at the grant's end, read back
//! after it is written; removed at the end; a write that lost a race (409 ABORTED) is redone
//! without losing the other writer's change; expired bindings of jitbot's are swept; a key the
//! API does not accept is a failed grant.

use std::collections::HashMap;

use jitbot::fakes::FakeGcp;
use serde_json::{Value, json};

use crate::support::*;

const PROJECT: &str = "projects/acme-prod";

async fn spawn_gcp(
    backend: Backend,
    key_json: &str,
    gcp: &FakeGcp,
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.json");
    std::fs::write(&key, key_json).expect("key file");
    let var = format!("JIT_GCP_KEY_{}", suffix().to_uppercase());
    let policy = format!(
        r#"
settings: {{ request_ttl: 1h, min_duration: 2s }}
groups:
  dba: {{ members: [{BOB}] }}
identities:
  {ALICE}: {{ gcp_member: "user:alice@example.com" }}
providers:
  gcp: {{ kind: gcp_iam, credentials_env: {var}, endpoint_url: "{}" }}
resources:
  gcp-viewer:
    provider: gcp
    grant: {{ role: roles/viewer, project: acme-prod }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
  gcp-admin:
    provider: gcp
    grant: {{ role: roles/owner, project: acme-prod }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
"#,
        gcp.url
    );
    let env = HashMap::from([(var, key.display().to_string())]);
    // jitbot's account holds only the documented custom role: these tests show it is enough.
    gcp.enforce(documented_permissions());
    (spawn_app(backend, &policy, env).await, dir)
}

/// The permissions of the custom role `manifest/gcp/jitbot-role.yaml` documents.
fn documented_permissions() -> Vec<String> {
    let role: Value =
        marked_yaml::from_yaml(0, include_str!("../../manifest/gcp/jitbot-role.yaml"))
            .expect("the role is YAML");
    role["includedPermissions"]
        .as_array()
        .expect("includedPermissions")
        .iter()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect()
}

fn binding_of(policy: &Value, id: i32) -> Option<Value> {
    policy["bindings"]
        .as_array()?
        .iter()
        .find(|b| b["condition"]["title"] == format!("jitbot-{id}"))
        .cloned()
}

async fn a_conditional_binding_is_written_read_back_and_removed(backend: Backend) {
    let gcp = FakeGcp::start().await.expect("fake GCP");
    // Someone else's binding, and one of jitbot's from long ago that has expired.
    gcp.put_policy(
        PROJECT,
        json!({"version": 3, "bindings": [
            {"role": "roles/browser", "members": ["group:everyone@example.com"]},
            {"role": "roles/viewer", "members": ["user:old@example.com"],
             "condition": {"title": "jitbot-9999", "expression": "request.time < timestamp(\"2020-01-01T00:00:00Z\")"}}
        ]}),
    );
    let (app, _key) = spawn_gcp(backend, &gcp.key_json, &gcp).await;
    let id = TestApp::id_in(&app.say(ALICE, "request gcp-viewer 3s INC-40").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "active").await;

    let policy = gcp.policy(PROJECT);
    assert_eq!(policy["version"], 3);
    let binding = binding_of(&policy, id).expect("jitbot's binding");
    assert_eq!(binding["role"], "roles/viewer");
    assert_eq!(binding["members"], json!(["user:alice@example.com"]));
    let expression = binding["condition"]["expression"]
        .as_str()
        .unwrap_or_default();
    let end = expression
        .split("timestamp(\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("a time condition: {expression}"));
    let from_now = end.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((0..=4).contains(&from_now), "ends in {from_now} s");
    // The expired binding of jitbot's is swept; someone else's stays.
    assert!(binding_of(&policy, 9999).is_none(), "{policy}");
    assert!(policy.to_string().contains("group:everyone@example.com"));

    app.wait_state(id, "expired").await;
    let policy = gcp.policy(PROJECT);
    assert!(binding_of(&policy, id).is_none(), "{policy}");
    assert!(policy.to_string().contains("group:everyone@example.com"));
    app.finish().await;
}

#[tokio::test]
async fn a_conditional_binding_is_written_read_back_and_removed_on_sqlite() {
    a_conditional_binding_is_written_read_back_and_removed(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_conditional_binding_is_written_read_back_and_removed_on_postgres() {
    a_conditional_binding_is_written_read_back_and_removed(Backend::Postgres).await;
}

#[tokio::test]
async fn a_write_that_lost_a_race_is_redone_and_keeps_the_other_writers_change() {
    let gcp = FakeGcp::start().await.expect("fake GCP");
    let (app, _key) = spawn_gcp(Backend::Sqlite, &gcp.key_json, &gcp).await;
    // Two overlapping grants of one project, ending 3 s apart; every write races someone else.
    gcp.interfere_next(2);
    let short = TestApp::id_in(&app.say(ALICE, "request gcp-viewer 2s INC-41").await);
    app.click(BOB, APPROVE, short).await;
    app.wait_state(short, "active").await;
    let conflicts = gcp.calls().iter().filter(|c| c.status == 409).count();
    assert!(conflicts >= 2, "{:?}", gcp.calls());
    let long = TestApp::id_in(&app.say(ALICE, "request gcp-admin 5s INC-41").await);
    app.click(BOB, APPROVE, long).await;
    app.wait_state(long, "active").await;
    let policy = gcp.policy(PROJECT);
    assert!(binding_of(&policy, short).is_some() && binding_of(&policy, long).is_some());
    // The other writers' bindings survived the redone writes.
    assert!(policy.to_string().contains("someone"), "{policy}");
    // The first end removes only its own binding.
    app.wait_state(short, "expired").await;
    let policy = gcp.policy(PROJECT);
    assert!(binding_of(&policy, short).is_none());
    assert!(binding_of(&policy, long).is_some());
    app.wait_state(long, "expired").await;
    assert!(binding_of(&gcp.policy(PROJECT), long).is_none());
    app.finish().await;
}

#[tokio::test]
async fn a_key_the_api_does_not_accept_is_a_failed_grant() {
    let gcp = FakeGcp::start().await.expect("fake GCP");
    let stranger = FakeGcp::stranger_key_json().expect("a key");
    let (app, _key) = spawn_gcp(Backend::Sqlite, &stranger, &gcp).await;
    let id = TestApp::id_in(&app.say(ALICE, "request gcp-viewer 1h INC-42").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "grant_failed").await;
    let note = app.wait_channel_note("failed").await;
    assert!(
        note.str("text").contains("Unauthenticated") || note.str("text").contains("401"),
        "{}",
        note.body
    );
    assert!(binding_of(&gcp.policy(PROJECT), id).is_none());
    app.finish().await;
}

#[tokio::test]
async fn serve_refuses_a_member_that_is_the_service_account_jitbot_runs_as() {
    let gcp = FakeGcp::start().await.expect("fake GCP");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.json");
    std::fs::write(&key, &gcp.key_json).expect("key file");
    let var = format!("JIT_GCP_KEY_{}", suffix().to_uppercase());
    let own = jitbot::fakes::gcp::CLIENT_EMAIL;
    let text = |provider: &str, member: &str| {
        format!(
            "identities:\n  {ALICE}: {{ gcp_member: \"user:alice@example.com\" }}\n  {CAROL}: {{ gcp_member: \"{member}\" }}\n\
             providers:\n  gcp: {provider}\n\
             resources:\n  gcp-viewer:\n    provider: gcp\n    grant: {{ role: roles/viewer, project: acme-prod }}\n    max_duration: 1h\n    channel: C0REVIEW\n    approvers: [{BOB}]\n"
        )
    };
    let check = |text: String, env: HashMap<String, String>| async move {
        let (policy, _) =
            jitbot::domain::Policy::parse("p.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
        jitbot::app::refuse_privileged_identities(
            &policy,
            &jitbot::config::Env::with_overrides(env),
        )
        .await
    };
    // The key file's own account, in any case, is refused; another account is not.
    let with_key = format!(
        "{{ kind: gcp_iam, credentials_env: {var}, endpoint_url: \"{}\" }}",
        gcp.url
    );
    let key_env = HashMap::from([(var.clone(), key.display().to_string())]);
    let error = check(
        text(&with_key, &format!("serviceAccount:{}", own.to_uppercase())),
        key_env.clone(),
    )
    .await
    .expect_err("jitbot's own service account refused");
    let error = format!("{error}");
    assert!(
        error.contains(&format!("identities.{CAROL}.gcp_member"))
            && error.contains("jitbot itself runs as"),
        "{error}"
    );
    assert!(!error.contains(ALICE), "{error}");
    check(
        text(
            &with_key,
            "serviceAccount:ci@test-project.iam.gserviceaccount.com",
        ),
        key_env,
    )
    .await
    .expect("another service account is fine");

    // Without a key file, the metadata server says which account jitbot runs as.
    let metadata_host = gcp.url.trim_start_matches("http://").to_string();
    let error = check(
        text(
            &format!("{{ kind: gcp_iam, endpoint_url: \"{}\" }}", gcp.url),
            &format!("serviceAccount:{own}"),
        ),
        HashMap::from([("GCE_METADATA_HOST".to_string(), metadata_host)]),
    )
    .await
    .expect_err("the metadata server's account refused");
    assert!(
        format!("{error}").contains("jitbot itself runs as"),
        "{error}"
    );
}

#[tokio::test]
async fn a_permission_the_account_lacks_is_a_failed_grant_never_access() {
    let gcp = FakeGcp::start().await.expect("fake GCP");
    let (app, _key) = spawn_gcp(Backend::Sqlite, &gcp.key_json, &gcp).await;
    // The account may read the policy but not write it: the grant fails, and nothing is bound.
    gcp.enforce(vec!["resourcemanager.projects.getIamPolicy".into()]);
    let id = TestApp::id_in(&app.say(ALICE, "request gcp-viewer 1m INC-47").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "grant_failed").await;
    assert!(binding_of(&gcp.policy(PROJECT), id).is_none());
    app.wait_channel_note("resourcemanager.projects.setIamPolicy")
        .await;
    app.finish().await;
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_is_never_a_grant() {
    let gcp = FakeGcp::start().await.expect("fake GCP");
    let (app, _key) = spawn_gcp(Backend::Sqlite, &gcp.key_json, &gcp).await;
    gcp.set_redirect(true);
    let id = TestApp::id_in(&app.say(ALICE, "request gcp-viewer 1m INC-48").await);
    app.click(BOB, APPROVE, id).await;
    app.wait_state(id, "grant_failed").await;
    let calls = gcp.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.target.ends_with(":setIamPolicy") && c.status == 307),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.target.ends_with(":redirected")),
        "the redirect was followed: {calls:?}"
    );
    assert!(binding_of(&gcp.policy(PROJECT), id).is_none());
    app.finish().await;
}
