//! Slack errors that end, rate limits that hold back only what they limit, and text that always
//! fits Slack's limits.

use std::time::Duration;

use jitbot::fakes::SlackFault;

use crate::support::*;

fn posts_to(app: &TestApp, channel: &str) -> Vec<jitbot::fakes::SlackCall> {
    app.slack
        .attempts()
        .into_iter()
        .filter(|c| c.method == "chat.postMessage" && c.str("channel") == channel)
        .collect()
}

#[tokio::test]
async fn a_card_slack_will_never_take_is_not_retried_and_the_requester_is_told() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    app.slack.fault(
        "chat.postMessage",
        Some("C0REVIEW"),
        SlackFault::Error("channel_not_found".into()),
        u32::MAX,
    );
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    let dm = app.wait_dm(ALICE, "could not be posted").await;
    assert!(dm.body.to_string().contains("channel_not_found"), "{dm:?}");
    assert!(dm.body.to_string().contains(&format!("/jit approve {id}")));
    let actions = app.audit_actions(id).await;
    assert!(actions.iter().any(|a| a == "slack_failed"), "{actions:?}");
    // Retries would have come after 50, 100, 200 ms…
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(posts_to(&app, "C0REVIEW").len(), 1, "tried once, not again");
    let text = reqwest::get(format!("{}/metrics", app.running.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"jitbot_permanent_failures_total{kind="post_card",error="channel_not_found"} 1"#
        ),
        "{text}"
    );
    // The request still works: an approver decides it by command.
    assert!(
        app.say(BOB, &format!("approve {id}"))
            .await
            .contains("approved")
    );
    app.wait_state(id, "active").await;
    app.finish().await;
}

#[tokio::test]
async fn a_card_over_slacks_limits_is_reported_in_the_channel_too() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    app.slack.fault(
        "chat.postMessage",
        Some("C0REVIEW"),
        SlackFault::Error("invalid_blocks".into()),
        1,
    );
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.wait_dm(ALICE, "could not be posted").await;
    let note = app.wait_channel_note("could not be posted").await;
    assert!(note.body.to_string().contains("invalid_blocks"));
    assert!(
        note.body
            .to_string()
            .contains(&format!("/jit approve {id}"))
    );
    app.finish().await;
}

#[tokio::test]
async fn a_long_reason_is_refused_and_a_reason_that_grows_when_escaped_still_fits_the_card() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    let long = "x".repeat(3_000);
    let answer = app
        .say(ALICE, &format!("request billing-admin 1h {long}"))
        .await;
    assert!(
        answer.contains("3000 characters") && answer.contains("under 1000"),
        "{answer}"
    );
    assert_eq!(app.store.count_requests().await.unwrap(), 0);
    // 999 characters that each become 4 or 5 when escaped for Slack (`&amp;`, `&lt;`).
    let spiky = "&<".repeat(499) + "&";
    let id = TestApp::id_in(
        &app.say(ALICE, &format!("request billing-admin 1h {spiky}"))
            .await,
    );
    let card = app
        .wait_calls("the card", |calls| {
            calls
                .iter()
                .any(|c| c.method == "chat.postMessage" && c.str("channel") == "C0REVIEW")
        })
        .await;
    assert!(
        card.iter()
            .any(|c| c.body.to_string().contains("&amp;&lt;")),
        "the reason is on the card, escaped"
    );
    let stored = eventually(WAIT, || async {
        app.store
            .request(id)
            .await
            .unwrap()
            .unwrap()
            .card_ts
            .is_some()
    })
    .await;
    assert!(stored, "Slack took the card");
    app.finish().await;
}

#[tokio::test]
async fn a_rate_limit_holds_back_only_that_channel_and_its_retry_after_is_honoured() {
    let (app, _hook, other_hook) = spawn_two_hooks(Backend::Sqlite, |p| p).await;
    app.slack.fault(
        "chat.postMessage",
        Some("C0REVIEW"),
        SlackFault::RateLimited(2),
        1,
    );
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    // Posts elsewhere go on: another card, and a DM.
    let other = TestApp::id_in(&app.say(ALICE, "request other-app 2s y").await);
    app.wait_calls("the other card", |calls| {
        calls.iter().any(|c| c.str("channel") == "C0OTHER")
    })
    .await;
    app.wait_dm(ALICE, "was approved").await;
    let lag = revoke_lag(&app, &other_hook, other).await;
    assert!(lag < chrono::TimeDelta::seconds(1), "revoke {lag} late");
    // The limited channel gets its card once, after Retry-After.
    app.wait_calls("the card after the limit", |calls| {
        calls.iter().any(|c| c.str("channel") == "C0REVIEW")
    })
    .await;
    let tries = posts_to(&app, "C0REVIEW");
    assert_eq!(tries.len(), 2, "{tries:#?}");
    let waited = tries[1].at - tries[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cards = app
        .slack
        .calls_to("chat.postMessage")
        .into_iter()
        .filter(|c| c.str("channel") == "C0REVIEW")
        .count();
    assert_eq!(cards, 1, "one card, not two");
    assert!(
        app.store
            .request(id)
            .await
            .unwrap()
            .unwrap()
            .card_ts
            .is_some()
    );
    app.finish().await;
}

#[tokio::test]
async fn an_ok_answer_that_lacks_fields_is_not_sent_again() {
    let (app, _hook) = spawn_hook_app(Backend::Sqlite).await;
    app.slack
        .fault("chat.postMessage", Some("C0REVIEW"), SlackFault::Lean, 1);
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    assert!(
        eventually(WAIT, || async {
            app.store
                .request(id)
                .await
                .unwrap()
                .unwrap()
                .card_ts
                .is_some()
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(posts_to(&app, "C0REVIEW").len(), 1, "one card");
    // It is still updated in place.
    app.click(BOB, APPROVE, id).await;
    app.wait_card_update("Approved by").await;
    app.finish().await;
}

#[tokio::test]
async fn a_slack_call_that_never_answers_times_out_and_is_retried() {
    let ((app, _hook), _) = spawn_hook_app_env(
        Backend::Sqlite,
        |p| p,
        [(TEST_SLACK_TIMEOUT_MS.to_string(), "500".to_string())].into(),
    )
    .await;
    app.slack
        .fault("chat.postMessage", Some("C0REVIEW"), SlackFault::Hang, 1);
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 1h x").await);
    app.wait_calls("the card, once Slack answers", |calls| {
        calls.iter().any(|c| c.str("channel") == "C0REVIEW")
    })
    .await;
    let tries = posts_to(&app, "C0REVIEW");
    assert_eq!(tries.len(), 2, "{tries:#?}");
    assert!(tries[1].at - tries[0].at >= Duration::from_millis(500));
    let stored = eventually(WAIT, || async {
        app.store
            .request(id)
            .await
            .unwrap()
            .unwrap()
            .card_ts
            .is_some()
    })
    .await;
    assert!(stored, "the card's ts is kept");
    app.finish().await;
}

#[tokio::test]
async fn a_429_storm_then_5xx_posts_each_card_once_updates_after_posts_and_delays_no_revoke() {
    let (app, _hook, other_hook) = spawn_two_hooks_env(
        Backend::Postgres,
        |p| p,
        [(TEST_POST_INTERVAL_MS.to_string(), "200".to_string())].into(),
    )
    .await;
    // Slack limits the reviewers' channel, then falls over for a moment.
    app.slack.fault(
        "chat.postMessage",
        Some("C0REVIEW"),
        SlackFault::RateLimited(1),
        4,
    );
    app.slack
        .fault("chat.postMessage", None, SlackFault::Status(503), 3);
    app.slack
        .fault("chat.update", None, SlackFault::Status(502), 3);
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(TestApp::id_in(
            &app.say(&format!("U0Q{i}"), "request billing-admin 1h storm")
                .await,
        ));
    }
    for id in &ids[..4] {
        app.click(BOB, APPROVE, *id).await;
    }
    let quick = TestApp::id_in(&app.say(ALICE, "request other-app 2s check").await);
    let lag = revoke_lag(&app, &other_hook, quick).await;
    assert!(lag < chrono::TimeDelta::seconds(1), "revoked {lag} late");

    let card_of = |c: &jitbot::fakes::SlackCall, id: i32| {
        c.str("channel") == "C0REVIEW" && c.body.to_string().contains(&format!("(#{id})"))
    };
    // Every card posted, and every approved card showing its approval (posted late enough to
    // be drawn approved, or updated after its post).
    let latest = |calls: &[jitbot::fakes::SlackCall], id: i32| {
        calls
            .iter()
            .filter(|c| {
                (c.method == "chat.postMessage" || c.method == "chat.update") && card_of(c, id)
            })
            .max_by_key(|c| c.at)
            .map(|c| c.body.to_string())
    };
    app.wait_calls("every card, each approved one shown approved", |calls| {
        ids.iter().all(|id| latest(calls, *id).is_some())
            && ids[..4]
                .iter()
                .all(|id| latest(calls, *id).is_some_and(|b| b.contains("Approved by")))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = app.slack.calls();
    for id in &ids {
        let posts: Vec<_> = calls
            .iter()
            .filter(|c| c.method == "chat.postMessage" && card_of(c, *id))
            .collect();
        assert_eq!(posts.len(), 1, "card #{id} posted once");
        let first_update = calls
            .iter()
            .filter(|c| c.method == "chat.update" && card_of(c, *id))
            .map(|c| c.at)
            .min();
        if let Some(update) = first_update {
            assert!(
                update > posts[0].at,
                "card #{id} updated before it was posted"
            );
        }
    }
    // Nothing went to the limited channel before its Retry-After had passed.
    let attempts = posts_to(&app, "C0REVIEW");
    for (i, limited) in attempts
        .iter()
        .enumerate()
        .filter(|(_, c)| c.answer == "429")
    {
        if let Some(next) = attempts.get(i + 1) {
            assert!(
                next.at - limited.at >= Duration::from_millis(990),
                "retried {:?} after a 429",
                next.at - limited.at
            );
        }
    }
    app.finish().await;
}
