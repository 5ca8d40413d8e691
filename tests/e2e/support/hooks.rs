//! Apps whose resources are granted through webhook receivers: the usual test policy, one or two
//! receivers, and how late a revoke reached one.

use std::collections::HashMap;

use super::*;

/// A policy whose resources are granted through a webhook receiver.
pub fn hook_policy(url: &str, secret_env: &str) -> String {
    format!(
        r#"
settings: {{ request_ttl: 1h, min_duration: 2s }}
groups:
  dba: {{ members: [{BOB}, {CAROL}] }}
identities:
  {ALICE}: {{ email: alice@example.com, postgres: alice }}
providers:
  hooks: {{ kind: webhook, url: "{url}", secret_env: {secret_env} }}
  pg-main: {{ kind: postgres, url_env: {secret_env}_PG }}
resources:
  billing-admin:
    description: Admin in the billing app
    provider: hooks
    grant: {{ app: billing, level: admin }}
    max_duration: 2h
    channel: C0REVIEW
    approvers: [dba]
  two-keys:
    provider: hooks
    grant: {{ app: vault }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
    approvals: 2
  restricted:
    provider: hooks
    grant: {{ app: payroll }}
    min_duration: 10m
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
    reason_required: true
    requesters: [{ALICE}, dba]
  self-serve:
    provider: hooks
    grant: {{ app: wiki }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [{ALICE}, dba]
    self_approval: true
  ci-deploy:
    provider: hooks
    grant: {{ app: deploy }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
    auto_approve:
      - requesters: [{ALICE}]
        max_duration: 30m
  prod-db:
    provider: pg-main
    grant: {{ role: prod_rw }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
"#
    )
}

/// An app on `backend` with [`hook_policy`] and a webhook receiver.
pub async fn spawn_hook_app(backend: Backend) -> (TestApp, jitbot::fakes::WebhookReceiver) {
    spawn_hook_app_with(backend, |p| p).await.0
}

/// Like [`spawn_hook_app`], with the policy text edited first; also returns the webhook secret.
pub async fn spawn_hook_app_with(
    backend: Backend,
    edit: impl FnOnce(String) -> String,
) -> ((TestApp, jitbot::fakes::WebhookReceiver), String) {
    spawn_hook_app_env(backend, edit, HashMap::new()).await
}

/// Like [`spawn_hook_app_with`], with more variables (such as the `TEST_*` timings).
pub async fn spawn_hook_app_env(
    backend: Backend,
    edit: impl FnOnce(String) -> String,
    extra: HashMap<String, String>,
) -> ((TestApp, jitbot::fakes::WebhookReceiver), String) {
    let slack = FakeSlack::start().await.expect("fake Slack");
    spawn_hook_app_on(backend, edit, extra, slack).await
}

/// Like [`spawn_hook_app_env`], talking to a fake Slack the test has set up first.
pub async fn spawn_hook_app_on(
    backend: Backend,
    edit: impl FnOnce(String) -> String,
    extra: HashMap<String, String>,
    slack: FakeSlack,
) -> ((TestApp, jitbot::fakes::WebhookReceiver), String) {
    let secret = format!("hook-{}", suffix());
    let hook = jitbot::fakes::WebhookReceiver::start(&secret)
        .await
        .expect("receiver");
    let env_name = format!("JIT_HOOK_{}", suffix().to_uppercase());
    let mut env = HashMap::from([
        (env_name.clone(), secret.clone()),
        // a postgres provider that is never reached; only its env var must exist
        (
            format!("{env_name}_PG"),
            "postgres://nobody@127.0.0.1:1/none".to_string(),
        ),
    ]);
    env.extend(extra);
    let app = spawn_app_on(
        backend,
        &edit(hook_policy(&hook.url, &env_name)),
        env,
        slack,
    )
    .await;
    ((app, hook), secret)
}

/// Two webhook providers: `hooks` (billing-admin, ci-deploy, …) and `other`, with the resource
/// `other-app` (auto-approved for Alice). `edit` may change the policy text first.
pub async fn spawn_two_hooks(
    backend: Backend,
    edit: impl FnOnce(String) -> String,
) -> (
    TestApp,
    jitbot::fakes::WebhookReceiver,
    jitbot::fakes::WebhookReceiver,
) {
    spawn_two_hooks_env(backend, edit, HashMap::new()).await
}

/// Like [`spawn_two_hooks`], with more variables (such as the `TEST_*` timings).
pub async fn spawn_two_hooks_env(
    backend: Backend,
    edit: impl FnOnce(String) -> String,
    extra: HashMap<String, String>,
) -> (
    TestApp,
    jitbot::fakes::WebhookReceiver,
    jitbot::fakes::WebhookReceiver,
) {
    let secret = format!("hook-{}", suffix());
    let hook = jitbot::fakes::WebhookReceiver::start(&secret)
        .await
        .expect("receiver");
    let other = jitbot::fakes::WebhookReceiver::start(&secret)
        .await
        .expect("receiver");
    let env_name = format!("JIT_HOOK_{}", suffix().to_uppercase());
    let mut env = HashMap::from([
        (env_name.clone(), secret),
        (
            format!("{env_name}_PG"),
            "postgres://nobody@127.0.0.1:1/none".to_string(),
        ),
    ]);
    env.extend(extra);
    let policy = hook_policy(&hook.url, &env_name).replace(
        "resources:\n",
        &format!(
            "  other: {{ kind: webhook, url: \"{}\", secret_env: {env_name} }}\nresources:\n  other-app:\n    provider: other\n    grant: {{ app: other }}\n    max_duration: 1h\n    channel: C0OTHER\n    approvers: [dba]\n    auto_approve:\n      - requesters: [{ALICE}]\n        max_duration: 30m\n",
            other.url
        ),
    );
    let app = spawn_app(backend, &edit(policy), env).await;
    (app, hook, other)
}

/// Waits for the revoke of request `id` at `hook` and says how long after the grant's
/// `expires_at` it arrived.
pub async fn revoke_lag(
    app: &TestApp,
    hook: &jitbot::fakes::WebhookReceiver,
    id: i32,
) -> chrono::TimeDelta {
    let ok = eventually(WAIT, || async {
        hook.events_of("revoke")
            .iter()
            .any(|e| e.body["request_id"] == id)
    })
    .await;
    assert!(ok, "no revoke of #{id} arrived");
    let revoke = hook
        .events_of("revoke")
        .into_iter()
        .find(|e| e.body["request_id"] == id)
        .expect("found above");
    let expires_at = app
        .store
        .grant(id)
        .await
        .expect("store")
        .and_then(|g| g.expires_at)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .expect("the grant has an expiry");
    revoke.received_at - expires_at
}
