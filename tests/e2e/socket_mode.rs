//! Socket Mode: with `SLACK_APP_TOKEN`, jitbot connects to Slack over WebSocket (a local fake
//! speaking Slack's envelopes) and a request goes from the command to the grant through it:
//! the command answered in its ack, the card's Approve click acked and acted on, the request
//! form's field errors in the submission's ack; after Slack's `disconnect` it connects again
//! and goes on serving.

use jitbot::fakes::{FakeSlack, FakeSocketMode, SlackCall};
use serde_json::{Value, json};
use std::collections::HashMap;

use crate::support::*;

const APP_TOKEN: &str = "xapp-1-A0JITBOT-test";

fn command(slack: &FakeSlack, user: &str, text: &str, n: u32) -> Value {
    json!({
        "token": "unused", "team_id": jitbot::fakes::slack::TEAM_ID, "team_domain": "fake",
        "channel_id": "C0GENERAL", "channel_name": "general", "user_id": user,
        "user_name": user.to_lowercase(), "command": "/jit", "text": text,
        "api_app_id": "A0JITBOT", "is_enterprise_install": "false",
        "response_url": slack.response_url(&format!("socket-{n}")),
        "trigger_id": format!("trig-socket-{n}"),
    })
}

/// A click on the card `card` (its post to the reviewers' channel), with the message as Slack
/// sends it back.
fn click(slack: &FakeSlack, card: &SlackCall, user: &str, action: &str, id: i32) -> Value {
    let ts = card.body["ts"]
        .as_str()
        .unwrap_or("1700000000.000001")
        .to_string();
    json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(),
                 "team_id": jitbot::fakes::slack::TEAM_ID},
        "api_app_id": "A0JITBOT", "token": "unused",
        "container": {"type": "message", "message_ts": ts, "channel_id": "C0REVIEW",
                      "is_ephemeral": false},
        "trigger_id": "trig-click",
        "team": {"id": jitbot::fakes::slack::TEAM_ID, "domain": "fake"},
        "is_enterprise_install": false,
        "channel": {"id": "C0REVIEW", "name": "review"},
        "message": {"type": "message", "ts": ts, "text": card.str("text"),
                    "blocks": card.body["blocks"].clone()},
        "response_url": slack.response_url("socket-click"),
        "actions": [{"action_id": action, "block_id": "decide",
                     "text": {"type": "plain_text", "text": "Approve"},
                     "value": id.to_string(), "type": "button", "action_ts": "1700000001.000001"}],
    })
}

fn view_of(call: &SlackCall) -> Value {
    match &call.body["view"] {
        Value::String(s) => serde_json::from_str(s).expect("a view"),
        v => v.clone(),
    }
}

#[tokio::test]
async fn a_request_goes_from_command_to_grant_over_socket_mode_and_survives_a_disconnect() {
    let socket = FakeSocketMode::start().await.expect("fake Socket Mode");
    let slack = FakeSlack::start().await.expect("fake Slack");
    slack.set_socket_mode(&socket.url, APP_TOKEN);
    let ((app, hook), _) = spawn_hook_app_on(
        Backend::Sqlite,
        |p| p,
        HashMap::from([("SLACK_APP_TOKEN".to_string(), APP_TOKEN.to_string())]),
        slack,
    )
    .await;
    // Both connections (the second opens a second after the first).
    socket.wait_live(2, WAIT).await.expect("connected");

    // The command is answered in its ack, as it would be in the HTTP answer.
    let ack = socket
        .exchange(
            "slash_commands",
            command(&app.slack, ALICE, "request billing-admin 20m INC-12", 1),
        )
        .await
        .expect("acked");
    let text = ack["payload"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(ack["payload"]["response_type"], "ephemeral", "{ack}");
    let id = TestApp::id_in(&text);
    let ack = socket
        .exchange(
            "slash_commands",
            command(&app.slack, ALICE, "request billing-admn 20m INC-12", 2),
        )
        .await
        .expect("acked");
    assert!(
        ack["payload"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("billing-admin")),
        "a mistyped resource gets a hint: {ack}"
    );

    // Bob approves on the card; the click is acked and acted on.
    let calls = app
        .wait_calls("the card", |calls| {
            calls.iter().any(|c| {
                c.method == "chat.postMessage" && c.str("channel") == "C0REVIEW" && has_buttons(c)
            })
        })
        .await;
    let card = calls
        .iter()
        .find(|c| {
            c.method == "chat.postMessage" && c.str("channel") == "C0REVIEW" && has_buttons(c)
        })
        .expect("found above")
        .clone();
    let ack = socket
        .exchange("interactive", click(&app.slack, &card, BOB, APPROVE, id))
        .await
        .expect("acked");
    assert!(ack.get("payload").is_none_or(Value::is_null), "{ack}");
    app.wait_state(id, "active").await;
    hook.wait_for("grant", 1, WAIT).await.expect("granted");
    app.wait_card_update("Approved by").await;

    // `/jit request` alone opens the form; a wrong field comes back in the submission's ack.
    let ack = socket
        .exchange("slash_commands", command(&app.slack, CAROL, "request", 3))
        .await
        .expect("acked");
    assert!(ack["payload"].get("text").is_none(), "{ack}");
    let opened = app
        .wait_calls("the form opened", |calls| {
            calls.iter().any(|c| c.method == "views.open")
        })
        .await;
    let opened = opened
        .iter()
        .find(|c| c.method == "views.open")
        .expect("found");
    assert_eq!(opened.str("trigger_id"), "trig-socket-3");
    let mut view = view_of(opened);
    let fields = view.as_object_mut().expect("a view object");
    fields.insert("id".into(), json!("V0FORM"));
    fields.insert("team_id".into(), json!(jitbot::fakes::slack::TEAM_ID));
    fields.insert("hash".into(), json!("1700000000.abc"));
    fields.insert(
        "state".into(),
        json!({"values": {
            "resource": {"pick": {"type": "static_select",
                                  "selected_option": {"value": "billing-admin",
                                                      "text": {"type": "plain_text", "text": "billing-admin"}}}},
            "duration": {"text": {"type": "plain_text_input", "value": "soon"}},
            "reason": {"text": {"type": "plain_text_input", "value": "INC-13"}}
        }}),
    );
    let submission = json!({
        "type": "view_submission", "team": {"id": jitbot::fakes::slack::TEAM_ID, "domain": "fake"},
        "user": {"id": CAROL, "username": "carol", "name": "carol", "team_id": jitbot::fakes::slack::TEAM_ID},
        "api_app_id": "A0JITBOT", "token": "unused", "trigger_id": "trig-submit", "view": view,
        "is_enterprise_install": false,
    });
    let ack = socket
        .exchange("interactive", submission)
        .await
        .expect("acked");
    assert_eq!(ack["payload"]["response_action"], "errors", "{ack}");
    assert!(
        ack["payload"]["errors"]["duration"]
            .as_str()
            .is_some_and(|e| e.contains("30m or 1h30m")),
        "{ack}"
    );

    // Slack rotates the connections: jitbot opens new ones and goes on serving.
    let opened = socket.opened();
    socket.disconnect_all();
    assert!(
        eventually(WAIT, || async {
            socket.opened() >= opened + 2 && socket.live() == 2
        })
        .await,
        "reconnected: {} opened, {} live",
        socket.opened(),
        socket.live()
    );
    let ack = socket
        .exchange("slash_commands", command(&app.slack, ALICE, "list", 4))
        .await
        .expect("acked after the reconnection");
    assert!(
        ack["payload"]["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("#{id}"))),
        "{ack}"
    );
    app.finish().await;
}
