//! Bundles: one request, one card, one decision for several resources; one grant per resource,
//! each at its own provider, each revoked on time, and one failing without holding back the rest.

use std::collections::HashMap;

use jitbot::fakes::WebhookReceiver;

use crate::support::*;

const DAVE: &str = "U0DAVE";
const TOKEN: &str = "jit-test-bundle-client-3c5e7a9b1d2f4e6a";

struct Bundled {
    app: TestApp,
    /// billing-admin, other-app, third-app: one receiver each.
    hooks: [WebhookReceiver; 3],
}

/// Three webhook providers, a resource at each, and the bundle `incident` of all three.
/// `edit` may change the policy first.
async fn spawn_bundled(backend: Backend, edit: impl FnOnce(String) -> String) -> Bundled {
    let secret = format!("hook-{}", suffix());
    let hooks = [
        WebhookReceiver::start(&secret).await.expect("receiver"),
        WebhookReceiver::start(&secret).await.expect("receiver"),
        WebhookReceiver::start(&secret).await.expect("receiver"),
    ];
    let env_name = format!("JIT_HOOK_{}", suffix().to_uppercase());
    let sha = hex::encode(jitbot::domain::policy::token_sha256(TOKEN));
    let policy = format!(
        r#"
settings: {{ request_ttl: 1h, min_duration: 2s, grant_deadline: 4s }}
groups:
  dba: {{ members: [{BOB}, {CAROL}] }}
providers:
  hooks: {{ kind: webhook, url: "{}", secret_env: {env_name} }}
  other: {{ kind: webhook, url: "{}", secret_env: {env_name} }}
  third: {{ kind: webhook, url: "{}", secret_env: {env_name} }}
resources:
  billing-admin:
    provider: hooks
    grant: {{ app: billing }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
    auto_approve:
      - requesters: [deployer]
        max_duration: 30m
  other-app:
    provider: other
    grant: {{ app: other }}
    max_duration: 1h
    channel: C0OTHER
    approvers: [dba]
    auto_approve:
      - requesters: [deployer]
        max_duration: 30m
  third-app:
    provider: third
    grant: {{ app: third }}
    max_duration: 1h
    channel: C0REVIEW
    approvers: [dba]
bundles:
  incident: [billing-admin, other-app, third-app]
clients:
  deployer: {{ token_sha256: {sha} }}
"#,
        hooks[0].url, hooks[1].url, hooks[2].url
    );
    let env = HashMap::from([(env_name, secret)]);
    let app = spawn_app(backend, &edit(policy), env).await;
    Bundled { app, hooks }
}

/// The request id each receiver got a grant for.
fn granted_id(hook: &WebhookReceiver) -> Option<i32> {
    hook.events_of("grant")
        .first()
        .and_then(|e| e.body["request_id"].as_i64())
        .map(|id| id as i32)
}

async fn one_card_one_click_three_grants_each_revoked_on_time(backend: Backend) {
    let Bundled { app, hooks } = spawn_bundled(backend, |p| p).await;
    let answer = app.say(ALICE, "request incident 3s INC-42 outage").await;
    assert!(
        answer.contains("billing-admin, other-app, third-app")
            && answer.contains("waiting for approval"),
        "{answer}"
    );
    let id = TestApp::id_in(&answer);

    // One card, in the first resource's channel, with the three resources.
    let calls = app
        .wait_calls("the card", |c| {
            c.iter()
                .any(|c| c.method == "chat.postMessage" && c.str("channel") == "C0REVIEW")
        })
        .await;
    let cards: Vec<_> = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage" && has_buttons(c))
        .collect();
    assert_eq!(cards.len(), 1, "one card: {calls:?}");
    let text = cards[0].body.to_string();
    for name in ["billing-admin", "other-app", "third-app", "INC-42 outage"] {
        assert!(text.contains(name), "the card lacks {name}: {text}");
    }

    // One click: three grants, one at each provider, for Alice.
    app.click(BOB, APPROVE, id).await;
    for hook in &hooks {
        hook.wait_for("grant", 1, WAIT).await.expect("a grant");
        let grant = &hook.events_of("grant")[0];
        assert_eq!(grant.body["requester"], ALICE);
        assert_eq!(grant.body["approved_by"], serde_json::json!([BOB]));
        assert_eq!(grant.body["reason"], "INC-42 outage");
    }
    let ids: Vec<i32> = hooks.iter().filter_map(granted_id).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(
        ids[0], id,
        "the first resource's grant is the request's own"
    );
    assert!(ids[1] != ids[2] && ids[1] != id && ids[2] != id, "{ids:?}");
    for member in &ids {
        app.wait_state(*member, "active").await;
    }
    let calls = app
        .wait_calls("a card with three active resources", |calls| {
            calls.iter().any(|c| {
                c.method == "chat.update" && c.body.to_string().matches("active until").count() == 3
            })
        })
        .await;
    let card = calls
        .iter()
        .find(|c| {
            c.method == "chat.update" && c.body.to_string().matches("active until").count() == 3
        })
        .expect("found above");
    assert!(!has_buttons(card));

    // Each is revoked at its own expiry, by its own provider.
    for (hook, member) in hooks.iter().zip(&ids) {
        let lag = revoke_lag(&app, hook, *member).await;
        assert!(
            lag < chrono::TimeDelta::seconds(3),
            "#{member} revoked {lag} after expiry"
        );
        app.wait_state(*member, "expired").await;
    }
    // The card ends with all three expired.
    app.wait_calls("a card with three expired resources", |calls| {
        calls.iter().any(|c| {
            c.method == "chat.update" && c.body.to_string().matches("⌛ expired").count() == 3
        })
    })
    .await;

    // `/jit list` shows which request holds which resource.
    let list = app.say(ALICE, "list").await;
    assert!(list.contains(&format!("(with #{id})")), "{list}");
    app.finish().await;
}

#[tokio::test]
async fn one_card_one_click_three_grants_each_revoked_on_time_on_sqlite() {
    one_card_one_click_three_grants_each_revoked_on_time(Backend::Sqlite).await;
}

#[tokio::test]
async fn one_card_one_click_three_grants_each_revoked_on_time_on_postgres() {
    one_card_one_click_three_grants_each_revoked_on_time(Backend::Postgres).await;
}

async fn one_failing_provider_leaves_the_others_granted(backend: Backend) {
    let Bundled { app, hooks } = spawn_bundled(backend, |p| p).await;
    hooks[1].fail_next(10_000);
    let answer = app
        .say(ALICE, "request billing-admin,other-app,third-app 30m INC-7")
        .await;
    let id = TestApp::id_in(&answer);
    app.click(CAROL, APPROVE, id).await;

    hooks[0]
        .wait_for("grant", 1, WAIT)
        .await
        .expect("billing-admin granted");
    hooks[2]
        .wait_for("grant", 1, WAIT)
        .await
        .expect("third-app granted");
    let (first, third) = (
        granted_id(&hooks[0]).expect("id"),
        granted_id(&hooks[2]).expect("id"),
    );
    app.wait_state(first, "active").await;
    app.wait_state(third, "active").await;
    assert!(hooks[1].events_of("grant").is_empty());

    // other-app fails by the grant deadline; the card says which, and the others stay active.
    let shows = |c: &jitbot::fakes::SlackCall| {
        let text = c.body.to_string();
        c.method == "chat.update"
            && text.contains("grant failed")
            && text.matches("active until").count() == 2
    };
    let calls = app
        .wait_calls("a card with one failed and two active resources", |calls| {
            calls.iter().any(shows)
        })
        .await;
    let text = calls
        .iter()
        .find(|c| shows(c))
        .expect("found above")
        .body
        .to_string();
    let failed_line = text
        .split("\\n")
        .find(|l| l.contains("grant failed"))
        .unwrap_or_default()
        .to_string();
    assert!(failed_line.contains("other-app"), "{text}");
    app.wait_dm(ALICE, "other-app").await;
    assert_eq!(app.state(first).await, "active");
    assert_eq!(app.state(third).await, "active");

    // `/jit revoke` of the request ends every resource still granted.
    let answer = app.say(ALICE, &format!("revoke {id}")).await;
    assert!(answer.contains("being revoked"), "{answer}");
    app.wait_state(first, "revoked").await;
    app.wait_state(third, "revoked").await;
    hooks[0].wait_for("revoke", 1, WAIT).await.expect("revoked");
    hooks[2].wait_for("revoke", 1, WAIT).await.expect("revoked");
    app.finish().await;
}

#[tokio::test]
async fn one_failing_provider_leaves_the_others_granted_on_sqlite() {
    one_failing_provider_leaves_the_others_granted(Backend::Sqlite).await;
}

#[tokio::test]
async fn one_failing_provider_leaves_the_others_granted_on_postgres() {
    one_failing_provider_leaves_the_others_granted(Backend::Postgres).await;
}

#[tokio::test]
async fn every_resource_needs_its_own_approvers() {
    // third-app is approved by Dave alone; Bob approves the other two.
    let Bundled { app, hooks } = spawn_bundled(Backend::Sqlite, |p| {
        p.replacen(
            "    channel: C0REVIEW\n    approvers: [dba]\nbundles:",
            &format!("    channel: C0REVIEW\n    approvers: [{DAVE}]\nbundles:"),
            1,
        )
    })
    .await;
    let answer = app.say(ALICE, "request incident 10m INC-9").await;
    let id = TestApp::id_in(&answer);

    // Dave approves none of the first resource, yet the bundle waits for him too.
    let pending = app.say(DAVE, "pending").await;
    assert!(pending.contains(&format!("#{id}")), "{pending}");
    let mallory = app.say(MALLORY, &format!("approve {id}")).await;
    assert!(mallory.contains("not an approver"), "{mallory}");

    // Dave first: his approval counts for third-app alone, and the card shows it.
    let dave = app.say(DAVE, &format!("approve {id}")).await;
    assert!(
        dave.contains("still needs approval for *billing-admin, other-app*"),
        "{dave}"
    );
    assert_eq!(app.state(id).await, "pending");
    let card = app
        .wait_card_update(&format!("approved by <@{DAVE}>"))
        .await;
    assert!(has_buttons(&card), "still pending: {}", card.body);
    assert!(hooks.iter().all(|h| h.events().is_empty()));

    let bob = app.say(BOB, &format!("approve {id}")).await;
    assert!(bob.contains("access is being granted"), "{bob}");
    for hook in &hooks {
        hook.wait_for("grant", 1, WAIT).await.expect("granted");
    }
    // Each grant names whose approval counted for it.
    assert_eq!(
        hooks[0].events_of("grant")[0].body["approved_by"],
        serde_json::json!([BOB])
    );
    assert_eq!(
        hooks[2].events_of("grant")[0].body["approved_by"],
        serde_json::json!([DAVE])
    );
    app.finish().await;
}

#[tokio::test]
async fn a_denied_bundle_grants_nothing() {
    let Bundled { app, hooks } = spawn_bundled(Backend::Sqlite, |p| p).await;
    let answer = app.say(ALICE, "request incident 10m INC-1").await;
    let id = TestApp::id_in(&answer);
    app.click(CAROL, DENY, id).await;
    app.wait_state(id, "denied").await;
    app.wait_dm(ALICE, "denied").await;
    let twice = app.say(ALICE, "request other-app,other-app 10m x").await;
    assert!(twice.contains("named twice"), "{twice}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(hooks.iter().all(|h| h.events().is_empty()));
    assert!(
        app.store
            .bundle_members(id)
            .await
            .expect("store")
            .is_empty()
    );
    app.finish().await;
}

async fn a_client_gets_a_bundle_at_once(backend: Backend) {
    let Bundled { app, hooks } = spawn_bundled(backend, |p| p).await;
    let url = app.running.url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_jitbot"))
            .args(["request", "billing-admin,other-app", "10m", "deploy"])
            .env("JIT_API_URL", url)
            .env("JIT_API_TOKEN", TOKEN)
            .output()
            .expect("jitbot request runs")
    })
    .await
    .expect("joined");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let request: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the request as JSON");
    assert_eq!(request["active"], true, "{request}");
    let resources = request["resources"].as_array().expect("resources");
    assert_eq!(resources.len(), 2);
    assert!(
        resources.iter().all(|r| r["state"] == "active"),
        "{request}"
    );
    assert!(!hooks[0].events_of("grant").is_empty() && !hooks[1].events_of("grant").is_empty());
    app.finish().await;
}

#[tokio::test]
async fn a_client_gets_a_bundle_at_once_on_sqlite() {
    a_client_gets_a_bundle_at_once(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_client_gets_a_bundle_at_once_on_postgres() {
    a_client_gets_a_bundle_at_once(Backend::Postgres).await;
}

#[tokio::test]
async fn resources_shows_a_template_on_one_line_and_the_bundles() {
    let Bundled { app, .. } = spawn_bundled(Backend::Sqlite, |p| {
        p.replacen(
            "resources:\n",
            "resources:\n  app-{env}-{level}:\n    for: { env: [prod, staging, dev], level: [read, admin] }\n    provider: hooks\n    grant: { app: \"{env}\", level: \"{level}\" }\n    max_duration: 2h\n    channel: C0REVIEW\n    approvers: [dba]\n",
            1,
        )
    })
    .await;
    let answer = app.say(ALICE, "resources").await;
    let line = answer
        .lines()
        .find(|l| l.contains("app-{env}-{level}"))
        .unwrap_or_else(|| panic!("no line for the template: {answer}"));
    assert!(
        line.contains("6 resources · up to 2h · 1 approval"),
        "{line}"
    );
    for env in ["prod", "staging", "dev"] {
        for level in ["read", "admin"] {
            assert!(line.contains(&format!("app-{env}-{level}")), "{line}");
        }
    }
    assert_eq!(answer.matches("app-prod-read").count(), 1, "{answer}");
    assert!(
        answer.contains("*incident*: billing-admin, other-app, third-app"),
        "{answer}"
    );
    // An expanded resource is asked for by its name, alone or in a list.
    let asked = app.say(ALICE, "request app-dev-read,third-app 10m x").await;
    assert!(asked.contains("app-dev-read, third-app"), "{asked}");
    app.finish().await;
}
