//! Posts go out at Slack's pace per channel: in order, a channel at a time, and a busy channel
//! holds back no other channel and no revoke.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;

const CHANNELS: usize = 12;

fn policy(hook_url: &str, secret_env: &str) -> String {
    let hot_requesters: Vec<String> = (0..CHANNELS).map(|i| format!("U0P{i:02}")).collect();
    let mut text = format!(
        "settings: {{ min_duration: 2s, max_open_per_user: 100 }}\ngroups:\n  dba: {{ members: [{BOB}] }}\nidentities:\n  {ALICE}: {{ email: alice@example.com }}\n\
         providers:\n  hooks: {{ kind: webhook, url: \"{hook_url}\", secret_env: {secret_env} }}\nresources:\n  \
         hot:\n    provider: hooks\n    max_duration: 1h\n    channel: C0HOT\n    approvers: [dba]\n    requesters: [{}]\n  \
         quick:\n    provider: hooks\n    max_duration: 1h\n    channel: C0QUICK\n    approvers: [dba]\n    \
         auto_approve: [{{ requesters: [{ALICE}], max_duration: 1h }}]\n",
        hot_requesters.join(", ")
    );
    for i in 0..CHANNELS {
        text.push_str(&format!(
            "  spread-{i}:\n    provider: hooks\n    max_duration: 1h\n    channel: C0CH{i:02}\n    approvers: [dba]\n"
        ));
    }
    text
}

#[tokio::test]
async fn a_busy_channel_gets_its_cards_in_order_at_its_pace_and_holds_back_nothing_else() {
    let secret = format!("hook-{}", suffix());
    let hook = jitbot::fakes::WebhookReceiver::start(&secret)
        .await
        .unwrap();
    let secret_env = format!("JIT_HOOK_{}", suffix().to_uppercase());
    let env = HashMap::from([
        (secret_env.clone(), secret),
        (TEST_POST_INTERVAL_MS.to_string(), "150".to_string()),
        (TEST_POST_BURST.to_string(), "1".to_string()),
    ]);
    let app = spawn_app(Backend::Sqlite, &policy(&hook.url, &secret_env), env).await;
    // Twelve cards for one channel, twelve spread over twelve channels, and a short grant.
    let mut hot = Vec::new();
    for i in 0..CHANNELS {
        hot.push(TestApp::id_in(
            &app.say(&format!("U0P{i:02}"), "request hot 1h x").await,
        ));
    }
    for i in 0..CHANNELS {
        app.say(ALICE, &format!("request spread-{i} 1h y")).await;
    }
    let quick = TestApp::id_in(&app.say(ALICE, "request quick 2s z").await);

    let posts_in = |calls: &[jitbot::fakes::SlackCall], prefix: &str| {
        calls
            .iter()
            .filter(|c| c.method == "chat.postMessage" && c.str("channel").starts_with(prefix))
            .cloned()
            .collect::<Vec<_>>()
    };
    let calls = app
        .wait_calls("every card of the busy channel", |calls| {
            posts_in(calls, "C0HOT").len() == CHANNELS
        })
        .await;
    let hot_posts = posts_in(&calls, "C0HOT");
    // In order of asking…
    let order: Vec<i32> = hot_posts
        .iter()
        .map(|c| TestApp::id_in(&c.body.to_string()))
        .collect();
    assert_eq!(order, hot, "cards in the order they were asked for");
    // …never faster than one per interval: post k goes out no earlier than k intervals after the
    // first (each waits for its slot; the first may itself be a little late).
    for (k, post) in hot_posts.iter().enumerate() {
        let since_first = post.at - hot_posts[0].at;
        let earliest =
            Duration::from_millis(150 * k as u64).saturating_sub(Duration::from_millis(100));
        assert!(
            since_first >= earliest,
            "post {k} went out {since_first:?} after the first"
        );
    }
    // …while every other channel had its card long before the busy one was done.
    let spread = posts_in(&calls, "C0CH");
    assert_eq!(spread.len(), CHANNELS, "every other channel got its card");
    let last_spread = spread.iter().map(|c| c.at).max().unwrap();
    assert!(
        last_spread < hot_posts[3].at,
        "the spread cards waited behind the busy channel"
    );
    // And the grant that expired meanwhile was revoked on time.
    let lag = revoke_lag(&app, &hook, quick).await;
    assert!(lag < chrono::TimeDelta::seconds(1), "revoked {lag} late");
    app.finish().await;
}
