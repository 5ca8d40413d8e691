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

/// The planner's statistics of `table` on PostgreSQL: how many times it was analyzed, and the
/// row count it estimates.
async fn statistics(url: &str, table: &str) -> (i64, f32) {
    let db = sea_orm::sqlx::PgPool::connect(url)
        .await
        .expect("the test database");
    // The server publishes its table statistics with a short delay; ask afresh each time.
    let _ = sea_orm::sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&db)
        .await;
    let analyzed: i64 = sea_orm::sqlx::query_scalar(
        "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(&db)
    .await
    .expect("pg_stat_user_tables");
    let estimate: f32 =
        sea_orm::sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = $1::regclass")
            .bind(table)
            .fetch_one(&db)
            .await
            .expect("pg_class");
    db.close().await;
    (analyzed, estimate)
}

/// A fresh PostgreSQL store is analyzed while empty, and the server may run without autovacuum
/// (as on many small hosts): the planner then takes the growing tables for a few rows and scans
/// them on every claim and every load of a request. jitbot refreshes the statistics itself as
/// its writes add up.
#[tokio::test]
async fn a_growing_postgresql_store_keeps_its_planner_statistics_current() {
    let (app, _hook) = spawn_hook_app(Backend::Postgres).await;
    let url = app.pg.as_ref().expect("a PostgreSQL store").url.clone();
    let tables = ["jobs", "requests"];
    let mut at_start = Vec::new();
    for table in tables {
        at_start.push(statistics(&url, table).await.0);
    }

    // 2,400 requests from as many people, 16 at a time: about 4,800 jobs.
    let mut senders = tokio::task::JoinSet::new();
    for lane in 0..16 {
        let sender = app.sender.clone();
        senders.spawn(async move {
            for i in 0..150 {
                let user = format!("U0ST{lane:02}{i:04}");
                let answer = sender
                    .command_text(&user, "request billing-admin 1h INC-1 growth")
                    .await
                    .expect("answered");
                assert!(answer.contains("waiting for approval"), "{answer}");
            }
        });
    }
    while let Some(done) = senders.join_next().await {
        done.expect("a sender");
    }

    // Analyzed again once 2,000 had been written: about 2,000 requests and 4,000 jobs by then.
    for (table, (analyzed_at_start, least)) in tables
        .into_iter()
        .zip(at_start.into_iter().zip([3_000.0, 1_500.0]))
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        let (analyzed, estimate) = loop {
            let (analyzed, estimate) = statistics(&url, table).await;
            if (analyzed > analyzed_at_start && estimate >= least)
                || tokio::time::Instant::now() >= deadline
            {
                break (analyzed, estimate);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(
            analyzed > analyzed_at_start && estimate >= least,
            "{table} was not analyzed again as it grew: analyzed {analyzed} times \
             ({analyzed_at_start} at start), {estimate} rows estimated"
        );
    }
    app.finish().await;
}
