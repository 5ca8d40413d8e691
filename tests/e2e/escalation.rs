//! The escalation ladder: a request nobody decides reminds its approvers, then pages the person
//! on call by DM with working buttons; a click in the DM decides like one on the card, the DM is
//! updated like the card, and a decision stops the ladder.

use crate::support::*;

const DAVE: &str = "U0DAVE";
const EVE: &str = "U0EVE";

fn pages_to(app: &TestApp, user: &str, containing: &str) -> usize {
    app.slack
        .calls_to("chat.postMessage")
        .iter()
        .filter(|c| c.str("channel") == user && c.body.to_string().contains(containing))
        .count()
}

async fn the_ladder_pages_the_person_on_call(backend: Backend) {
    // sre: Dave is on call (his 30-day shift began an hour ago), Eve is not. billing-admin
    // reminds after 1s,
    // pages sre after 2s and dba after 4s.
    let start = (chrono::Utc::now() - chrono::TimeDelta::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let ((app, hook), _) = spawn_hook_app_with(backend, |p| {
        p.replacen(
            "groups:\n",
            &format!(
                "groups:\n  sre:\n    rotation: {{ members: [{DAVE}, {EVE}], shift: 30d, start: \"{start}\" }}\n"
            ),
            1,
        )
        .replacen(
            "    approvers: [dba]\n  two-keys:",
            "    approvers: [dba, sre]\n    remind: 1s\n    escalation:\n      - { after: 2s, to: sre }\n      - { after: 4s, to: dba }\n  two-keys:",
            1,
        )
    })
    .await;
    // `explain` says who would be paged, and when.
    let explain = app.say(ALICE, "explain billing-admin").await;
    assert!(
        explain.contains(&format!(
            "after 2s, `sre` is paged: <@{DAVE}> (on call now)"
        )),
        "{explain}"
    );
    assert!(
        explain.contains("a reminder to the approvers after 1s"),
        "{explain}"
    );
    let asked = std::time::Instant::now();
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 20m INC-3").await);

    // The reminder reaches the approvers: dba's members and the one on call, not Eve.
    for approver in [BOB, CAROL, DAVE] {
        app.wait_dm(approver, "Reminder").await;
    }
    app.wait_channel_note("Reminded its approvers").await;
    // Then the page to the person on call, with the card's buttons.
    let page = app.wait_dm(DAVE, "you are on call for").await;
    assert!(has_buttons(&page), "{}", page.body);
    // From the step's due time (2 s after the request) to the DM.
    let late = page
        .at
        .saturating_duration_since(asked)
        .saturating_sub(std::time::Duration::from_secs(2));
    eprintln!(
        "escalation DM {} ms after its step was due",
        late.as_millis()
    );
    assert!(late < std::time::Duration::from_secs(3), "{late:?}");
    app.wait_channel_note("Paged `sre` (on call) after").await;
    assert_eq!(pages_to(&app, EVE, "#"), 0, "Eve is not on call");

    // Eve may not decide; Dave decides from the DM.
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
    // The DM is updated like the card: the decision shown, no buttons left.
    let updated = app
        .wait_calls("the page updated", |calls| {
            calls
                .iter()
                .any(|c| c.method == "chat.update" && c.str("channel") == DAVE && !has_buttons(c))
        })
        .await;
    assert!(
        updated
            .iter()
            .any(|c| c.body.to_string().contains("Approved by"))
    );

    // The decision stopped the ladder: the dba step (at 4s) pages nobody.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(pages_to(&app, BOB, "nobody has decided"), 0);
    assert_eq!(
        pages_to(&app, DAVE, "you are on call for"),
        1,
        "each step pages once"
    );
    let actions = app.audit_actions(id).await;
    assert_eq!(
        actions.iter().filter(|a| *a == "escalated").count(),
        1,
        "{actions:?}"
    );
    assert_eq!(
        actions.iter().filter(|a| *a == "reminded").count(),
        1,
        "{actions:?}"
    );
    // The weekly digest says who was paged and who answered.
    let now = chrono::Utc::now();
    let digest =
        jitbot::service::digest::gather(&app.store, now - chrono::TimeDelta::hours(1), now, now)
            .await
            .expect("the digest");
    assert_eq!(digest.escalations.len(), 1, "{:?}", digest.escalations);
    let (paged_id, paged, answer) = &digest.escalations[0];
    assert_eq!(
        (*paged_id, paged.as_slice()),
        (id, [DAVE.to_string()].as_slice())
    );
    assert!(answer.contains(DAVE), "{answer}");
    app.finish().await;
}

#[tokio::test]
async fn the_ladder_pages_the_person_on_call_on_sqlite() {
    the_ladder_pages_the_person_on_call(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_ladder_pages_the_person_on_call_on_postgres() {
    the_ladder_pages_the_person_on_call(Backend::Postgres).await;
}
