//! Who is on call, as PagerDuty says, and Slack user groups as approvers: the page reaches the
//! person PagerDuty has on call (through a fake PagerDuty that checks the token), the group's
//! members stand in when PagerDuty is down (said on the card), a user group's members approve,
//! and someone removed from the group is refused at the click.

use std::collections::HashMap;
use std::time::Duration;

use jitbot::fakes::{FakePagerDuty, FakeSlack, PagerDutyMode};

use crate::support::*;

const DAVE: &str = "U0DAVE";
const EVE: &str = "U0EVE";
const ANNA: &str = "U0ANNA";

fn pages_to(app: &TestApp, user: &str, containing: &str) -> usize {
    app.slack
        .calls_to("chat.postMessage")
        .iter()
        .filter(|c| c.str("channel") == user && c.body.to_string().contains(containing))
        .count()
}

/// A fake Slack where Dave and Eve have accounts, a fake PagerDuty with Dave on call (Eve at the
/// second level), and the app: billing-admin is approved by `dba` or the on-call of `sre`, and
/// pages `sre` after 2 s.
async fn spawn_on_call(
    backend: Backend,
    mode: PagerDutyMode,
) -> (TestApp, jitbot::fakes::WebhookReceiver, FakePagerDuty) {
    let token = format!("pd-{}", suffix());
    let pd = FakePagerDuty::start(&token).await.expect("fake PagerDuty");
    pd.set_on_call("PSRE1", 1, "PDAVE", "Dave@example.com");
    pd.set_on_call("PSRE1", 2, "PEVE", "eve@example.com");
    pd.set_mode(mode);
    let slack = FakeSlack::start().await.expect("fake Slack");
    slack.set_email(DAVE, "dave@example.com");
    slack.set_email(EVE, "eve@example.com");
    let token_env = format!("JIT_PD_{}", suffix().to_uppercase());
    let group = format!(
        "groups:\n  sre:\n    pagerduty: {{ schedule_id: PSRE1, token_env: {token_env}, api_url: \"{}\" }}\n    members: [{DAVE}, {EVE}]\n",
        pd.url
    );
    let ((app, hook), _) = spawn_hook_app_on(
        backend,
        |p| {
            p.replacen("groups:\n", &group, 1).replacen(
                "    approvers: [dba]\n  two-keys:",
                "    approvers: [dba, sre]\n    escalation: { after: 2s, to: sre }\n  two-keys:",
                1,
            )
        },
        HashMap::from([(token_env, token)]),
        slack,
    )
    .await;
    (app, hook, pd)
}

async fn pagerduty_names_the_person_paged(backend: Backend) {
    let (app, hook, pd) = spawn_on_call(backend, PagerDutyMode::Up).await;
    let explain = app.say(ALICE, "explain billing-admin").await;
    assert!(
        explain.contains(&format!(
            "after 2s, `sre` is paged: <@{DAVE}> (on call now)"
        )),
        "{explain}"
    );
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 20m INC-7").await);

    let page = app.wait_dm(DAVE, "you are on call for `sre`").await;
    assert!(has_buttons(&page), "{}", page.body);
    let note = app.wait_channel_note("Paged `sre` (on call)").await;
    assert!(note.str("text").contains(DAVE), "{}", note.body);
    assert!(!note.str("text").contains("stand in"), "{}", note.body);
    assert_eq!(pages_to(&app, EVE, "#"), 0, "Eve is second in line");

    // Eve is in the group but not on call: she may not decide. Dave decides from the DM.
    app.sender
        .click_with_trigger(EVE, APPROVE, &id.to_string(), "D0EVE", "trig-e")
        .await
        .expect("answered");
    app.wait_ephemeral(EVE, "not an approver").await;
    app.sender
        .click_with_trigger(DAVE, APPROVE, &id.to_string(), "D0DAVE", "trig-d")
        .await
        .expect("answered");
    app.wait_state(id, "active").await;
    hook.wait_for("grant", 1, WAIT).await.expect("granted");
    app.wait_calls("the page updated with the decision", |calls| {
        calls.iter().any(|c| {
            c.method == "chat.update"
                && c.str("channel") == DAVE
                && !has_buttons(c)
                && c.body.to_string().contains("Approved by")
        })
    })
    .await;
    assert_eq!(pages_to(&app, DAVE, "you are on call for"), 1, "paged once");

    // Every call to PagerDuty carried the token (the fake answers 401 otherwise) and asked for
    // this schedule with the people's emails.
    let calls = pd.calls();
    assert!(!calls.is_empty());
    for call in &calls {
        assert_eq!(call.status, 200, "{call:?}");
        let has = |k: &str, v: &str| call.query.iter().any(|(a, b)| a == k && b == v);
        assert!(
            has("schedule_ids[]", "PSRE1") && has("include[]", "users"),
            "{call:?}"
        );
    }
    // One email lookup for Dave, however often PagerDuty was asked.
    assert_eq!(app.slack.calls_to("users.lookupByEmail").len(), 1);
    app.finish().await;
}

#[tokio::test]
async fn pagerduty_names_the_person_paged_on_sqlite() {
    pagerduty_names_the_person_paged(Backend::Sqlite).await;
}

#[tokio::test]
async fn pagerduty_names_the_person_paged_on_postgres() {
    pagerduty_names_the_person_paged(Backend::Postgres).await;
}

#[tokio::test]
async fn with_pagerduty_down_the_members_stand_in_and_the_card_says_why() {
    let (app, hook, pd) = spawn_on_call(Backend::Sqlite, PagerDutyMode::Down).await;
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 20m INC-8").await);
    for member in [DAVE, EVE] {
        let page = app.wait_dm(member, "paged as a member of `sre`").await;
        assert!(has_buttons(&page), "{}", page.body);
    }
    app.wait_channel_note("`sre`: PagerDuty answered HTTP 503; its members stand in")
        .await;
    assert!(pd.calls().iter().all(|c| c.status == 503));
    // Standing in, every member may approve.
    app.sender
        .click_with_trigger(EVE, APPROVE, &id.to_string(), "D0EVE", "trig-e")
        .await
        .expect("answered");
    app.wait_state(id, "active").await;
    hook.wait_for("grant", 1, WAIT).await.expect("granted");
    let escalated = app
        .audit_details(id, "escalated")
        .await
        .expect("an escalated event");
    assert!(escalated.contains("HTTP 503"), "{escalated}");
    app.finish().await;
}

#[tokio::test]
async fn a_slack_user_group_approves_and_a_removed_member_is_refused_at_the_click() {
    let slack = FakeSlack::start().await.expect("fake Slack");
    slack.set_usergroup("S0DBATEAM", &[BOB]);
    let ((app, hook), _) = spawn_hook_app_on(
        Backend::Postgres,
        |p| {
            p.replacen(
                &format!("dba: {{ members: [{BOB}, {CAROL}] }}"),
                &format!("dba: {{ members: [S0DBATEAM, {CAROL}] }}"),
                1,
            )
        },
        HashMap::new(),
        slack,
    )
    .await;
    let first = TestApp::id_in(&app.say(ALICE, "request billing-admin 20m INC-9").await);
    app.click(MALLORY, APPROVE, first).await;
    app.wait_ephemeral(MALLORY, "not an approver").await;
    app.click(BOB, APPROVE, first).await;
    app.wait_state(first, "active").await;
    hook.wait_for("grant", 1, WAIT).await.expect("granted");

    // Bob leaves @dba-team and Anna joins. Once the last answer is older than a click's
    // freshness, the next click reads the group again.
    app.slack.set_usergroup("S0DBATEAM", &[ANNA]);
    tokio::time::sleep(jitbot::directory::CLICK_FRESHNESS + Duration::from_millis(500)).await;
    let lists_before = app.slack.calls_to("usergroups.users.list").len();
    let second = TestApp::id_in(&app.say(ALICE, "request restricted 15m INC-10").await);
    app.click(BOB, APPROVE, second).await;
    app.wait_ephemeral(BOB, "not an approver").await;
    assert_eq!(app.state(second).await, "pending");
    assert!(app.slack.calls_to("usergroups.users.list").len() > lists_before);
    app.click(ANNA, APPROVE, second).await;
    app.wait_state(second, "active").await;
    app.finish().await;
}
