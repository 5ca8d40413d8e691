//! Break-glass: on a resource that allows it, the requester approves their own request, with a
//! reason, and every approver and the channel are told at once.

use crate::support::*;

async fn break_glass_is_loud(backend: Backend) {
    let ((app, hook), _) = spawn_hook_app_with(backend, |p| {
        p.replacen(
            "    approvers: [dba]\n  two-keys:",
            "    approvers: [dba]\n    break_glass: true\n  two-keys:",
            1,
        )
    })
    .await;

    // Without a reason, no break-glass.
    let id = TestApp::id_in(&app.say(ALICE, "request billing-admin 20m").await);
    app.click(ALICE, APPROVE, id).await;
    app.wait_ephemeral(ALICE, "Break-glass needs a reason")
        .await;
    assert_eq!(app.state(id).await, "pending");
    app.say(ALICE, &format!("cancel {id}")).await;

    let id = TestApp::id_in(
        &app.say(ALICE, "request billing-admin 20m INC-99 payments down")
            .await,
    );
    let answer = app.say(ALICE, &format!("approve {id}")).await;
    assert!(answer.contains("break-glass"), "{answer}");
    app.wait_state(id, "active").await;
    hook.wait_for("grant", 1, WAIT).await.expect("granted");
    // The channel and every approver hear of it; the card says it.
    app.wait_channel_note("Break-glass").await;
    for approver in [BOB, CAROL] {
        let dm = app.wait_dm(approver, "Break-glass").await;
        assert!(
            dm.str("text").contains("INC-99 payments down"),
            "{:?}",
            dm.body
        );
    }
    app.wait_card_update("Break-glass: approved by the requester")
        .await;
    assert!(
        app.audit_actions(id)
            .await
            .contains(&"break_glass".to_string()),
        "an audit event"
    );

    let explain = app.say(ALICE, "explain billing-admin").await;
    assert!(explain.contains("break-glass"), "{explain}");

    // Elsewhere, one's own request is still someone else's to decide.
    let other = TestApp::id_in(&app.say(ALICE, "request two-keys 20m INC-99").await);
    let refused = app.say(ALICE, &format!("approve {other}")).await;
    assert!(refused.contains("cannot approve your own"), "{refused}");
    app.finish().await;
}

#[tokio::test]
async fn break_glass_is_loud_on_sqlite() {
    break_glass_is_loud(Backend::Sqlite).await;
}

#[tokio::test]
async fn break_glass_is_loud_on_postgres() {
    break_glass_is_loud(Backend::Postgres).await;
}
