//! The store does not grow with history where it need not: finished jobs are pruned after their
//! retention (the audit trail stays), and the maintenance round requeues itself.

use std::time::Duration;

use jitbot::domain::Job;

use crate::support::*;

async fn finished_jobs_are_pruned(backend: Backend) {
    let ((app, hook), _) = spawn_hook_app_env(
        backend,
        |p| p,
        [(TEST_JOB_RETENTION_MS.to_string(), "1".to_string())].into(),
    )
    .await;
    let id = TestApp::id_in(&app.say(ALICE, "request ci-deploy 2s release").await);
    app.wait_state(id, "expired").await;
    hook.wait_for("revoke", 1, WAIT).await.unwrap();
    app.wait_dm(ALICE, "has expired").await;
    let waiting = TestApp::id_in(&app.say(BOB, "request billing-admin 1h later").await);
    let audit_before = app.audit_actions(id).await;
    let settled = eventually(WAIT, || async {
        app.store
            .jobs_of(id)
            .await
            .unwrap()
            .iter()
            .all(|j| j.done_at.is_some())
    })
    .await;
    assert!(settled, "every job of the expired request finished");

    // A maintenance round, due now.
    let now = chrono::Utc::now().timestamp_millis();
    app.store
        .enqueue(&[Job::Maintain { round: 1 }.at(now)], now)
        .await
        .unwrap();
    let pruned = eventually(WAIT, || async {
        app.store.jobs_of(id).await.unwrap().is_empty()
    })
    .await;
    assert!(pruned, "finished jobs past their retention are gone");
    assert_eq!(
        app.audit_actions(id).await,
        audit_before,
        "the audit trail stays"
    );
    assert!(
        app.store
            .jobs_of(waiting)
            .await
            .unwrap()
            .iter()
            .any(|j| j.kind == "timeout" && j.done_at.is_none()),
        "unfinished jobs stay"
    );
    // The round queued the next one.
    assert!(
        app.store
            .pending_jobs()
            .await
            .unwrap()
            .iter()
            .any(|j| j.kind == "maintain" && j.run_at > now),
        "the next round is queued"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.finish().await;
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_their_retention_on_sqlite() {
    finished_jobs_are_pruned(Backend::Sqlite).await;
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_their_retention_on_postgres() {
    finished_jobs_are_pruned(Backend::Postgres).await;
}
