//! `jitbot demo`: the whole life of a request in the terminal, through the same code as `serve`
//! (signed HTTP requests, store, scheduler, provider trait), with a temporary SQLite store, the
//! built-in fake Slack and a local webhook receiver standing in for the target system.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::app;
use crate::config::{Config, Env, Secret, Tuning};
use crate::domain::Policy;
use crate::fakes::{FakeSlack, SlackCall, SlackSender, WebhookReceiver};
use crate::slack::blocks::strip_mrkdwn;

const REQUESTER: &str = "U0ALICE";
const APPROVER: &str = "U0BOB";
/// How long the demo's access lasts: long enough to watch, short enough to wait for.
const DEMO_GRANT: &str = "8s";
/// Longest wait for any one step before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

fn demo_policy(hook_url: &str) -> String {
    format!(
        r#"settings:
  request_ttl: 10m
  min_duration: 5s
groups:
  dba:
    members: [{APPROVER}]
identities:
  {REQUESTER}: {{ postgres: alice, email: alice@example.com }}
providers:
  local-hook:
    kind: webhook
    url: {hook_url}
    secret_env: JIT_DEMO_WEBHOOK_SECRET
resources:
  demo-db:
    description: Demo database, read-write
    provider: local-hook
    grant: {{ role: demo_rw }}
    max_duration: 1m
    channel: C0REVIEW
    approvers: [dba]
    reason_required: true
"#
    )
}

fn random_hex() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

/// A message's blocks as a person would read them.
fn render(call: &SlackCall) -> String {
    let mut lines = Vec::new();
    for block in call
        .body
        .get("blocks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block["type"].as_str() {
            Some("section") => {
                if let Some(t) = block["text"]["text"].as_str() {
                    lines.push(strip_mrkdwn(t));
                }
                for f in block["fields"].as_array().into_iter().flatten() {
                    lines.push(format!(
                        "  {}",
                        strip_mrkdwn(f["text"].as_str().unwrap_or("")).replace('\n', ": ")
                    ));
                }
            }
            Some("context") => {
                for e in block["elements"].as_array().into_iter().flatten() {
                    lines.push(format!(
                        "  {}",
                        strip_mrkdwn(e["text"].as_str().unwrap_or(""))
                    ));
                }
            }
            Some("actions") => {
                let buttons: Vec<String> = block["elements"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| format!("[ {} ]", b["text"]["text"].as_str().unwrap_or("?")))
                    .collect();
                lines.push(format!("  {}", buttons.join(" ")));
            }
            _ => {}
        }
    }
    if lines.is_empty() {
        lines.push(strip_mrkdwn(call.str("text")));
    }
    lines
        .iter()
        .map(|l| format!("    │ {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn step(who: &str, what: &str) {
    println!("\n▶ {who}: {what}");
}

pub async fn run() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir()?;
    let hook_secret = random_hex();
    let slack = FakeSlack::start().await?;
    let hook = WebhookReceiver::start(&hook_secret).await?;
    let (policy, _) = Policy::parse("demo-policy.yaml", &demo_policy(&hook.url))
        .map_err(|e| anyhow::anyhow!("demo policy: {e}"))?;
    let signing_secret = random_hex();
    let config = Config {
        database_url: format!("sqlite://{}?mode=rwc", dir.path().join("demo.db").display()),
        policy: "demo-policy.yaml".into(),
        listen: "127.0.0.1:0".into(),
        signing_secret: Secret::new(signing_secret.clone()),
        bot_token: Secret::new("xoxb-demo"),
        slack_api_url: slack.base_url.clone(),
        team_id: None,
        app_token: None,
        tuning: Tuning {
            retry_base: std::time::Duration::from_millis(200),
            ..Tuning::default()
        },
    };
    let env = Env::with_overrides(HashMap::from([(
        "JIT_DEMO_WEBHOOK_SECRET".to_string(),
        hook_secret,
    )]));
    let running = app::build(config, env, policy).await?.spawn();
    let demo = SlackSender::new(&running.url(), &signing_secret);
    println!("jitbot demo: a temporary SQLite store, a fake Slack and a local webhook receiver.");
    println!(
        "Alice (U0ALICE) needs the demo database; Bob (U0BOB) approves. Access lasts {DEMO_GRANT}."
    );

    step(
        "Alice types",
        &format!("/jit request demo-db {DEMO_GRANT} debugging INC-4312"),
    );
    let answer = demo
        .command_text(
            REQUESTER,
            &format!("request demo-db {DEMO_GRANT} debugging INC-4312"),
        )
        .await?;
    println!(
        "  jitbot → Alice (only she sees this): {}",
        strip_mrkdwn(&answer)
    );
    let calls = slack
        .wait_until(STEP_TIMEOUT, "the approval card", |c| {
            c.iter().any(|c| c.method == "chat.postMessage")
        })
        .await?;
    let card = calls
        .iter()
        .find(|c| c.method == "chat.postMessage")
        .context("card")?;
    let id = card.body["blocks"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["type"] == "actions"))
        .and_then(|b| b["elements"][0]["value"].as_str())
        .unwrap_or("1")
        .to_string();
    println!(
        "  jitbot → #review (C0REVIEW), the approval card:\n{}",
        render(card)
    );

    step("Alice clicks", "Approve on her own request");
    demo.click(REQUESTER, crate::slack::payload::APPROVE_ACTION, &id)
        .await?;
    let calls = slack
        .wait_until(STEP_TIMEOUT, "the refusal", |c| {
            c.iter().any(|c| c.method == "chat.postEphemeral")
        })
        .await?;
    if let Some(refusal) = calls.iter().find(|c| c.method == "chat.postEphemeral") {
        println!(
            "  jitbot → Alice (only she sees this): {}",
            strip_mrkdwn(refusal.str("text"))
        );
    }

    step("Bob clicks", "Approve");
    demo.click(APPROVER, crate::slack::payload::APPROVE_ACTION, &id)
        .await?;
    let grants = hook.wait_for("grant", 1, STEP_TIMEOUT).await?;
    println!(
        "  provider (webhook, signature checked) received: {}",
        grants[0].body
    );
    let calls = slack
        .wait_until(STEP_TIMEOUT, "the approval DM", |c| {
            c.iter()
                .any(|c| c.method == "chat.postMessage" && c.str("channel") == REQUESTER)
        })
        .await?;
    if let Some(update) = calls.iter().rev().find(|c| c.method == "chat.update") {
        println!("  jitbot updates the card:\n{}", render(update));
    }
    if let Some(dm) = calls
        .iter()
        .find(|c| c.method == "chat.postMessage" && c.str("channel") == REQUESTER)
    {
        println!("  jitbot → Alice (DM): {}", strip_mrkdwn(dm.str("text")));
    }

    step(
        "time passes",
        &format!("the grant expires after {DEMO_GRANT}"),
    );
    let revokes = hook.wait_for("revoke", 1, STEP_TIMEOUT).await?;
    println!("  provider (webhook) received: {}", revokes[0].body);
    let calls = slack
        .wait_until(STEP_TIMEOUT, "the expiry DM", |c| {
            c.iter()
                .filter(|c| c.method == "chat.postMessage" && c.str("channel") == REQUESTER)
                .count()
                >= 2
        })
        .await?;
    if let Some(dm) = calls
        .iter()
        .rev()
        .find(|c| c.method == "chat.postMessage" && c.str("channel") == REQUESTER)
    {
        println!("  jitbot → Alice (DM): {}", strip_mrkdwn(dm.str("text")));
    }
    let final_card = slack
        .wait_until(STEP_TIMEOUT, "the final card", |c| {
            c.iter()
                .rev()
                .find(|c| c.method == "chat.update")
                .is_some_and(|u| u.body.to_string().contains("expired"))
        })
        .await?;
    if let Some(update) = final_card.iter().rev().find(|c| c.method == "chat.update") {
        println!("  jitbot updates the card:\n{}", render(update));
    }

    step("the audit trail", "every step, kept forever");
    for event in running.store.audit_events(None).await? {
        let at = chrono::DateTime::from_timestamp_millis(event.at)
            .map(|t| t.format("%H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        println!(
            "    {at}  #{:<3} {:<9} {:<18} {}",
            event.request_id.map(|i| i.to_string()).unwrap_or_default(),
            event.actor,
            event.action,
            event.detail
        );
    }
    println!(
        "\nDone in {:.1}s. Run `jitbot serve` with a real Slack app to do this for real (see README).",
        started.elapsed().as_secs_f64()
    );
    drop(running);
    Ok(())
}
