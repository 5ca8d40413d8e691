//! Test fixtures shared by the store's ways of committing new requests.

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use super::entities::{audit, job};
use super::writer::Intake;
use super::{NewRequest, Store};
use crate::domain::{Job, State};

/// A new pending request of `who` for `app`, with two jobs (its timeout, its card) and one event.
pub(super) fn intake(who: &str, max_open: Option<u32>) -> Intake {
    Intake {
        new: NewRequest {
            resource: "app".into(),
            requester: who.into(),
            duration_secs: 3600,
            reason: "fixture".into(),
            approvals_needed: 1,
            auto_approved: false,
            channel: "C1".into(),
            max_open,
            bundle: None,
            bundle_of: None,
            extends: None,
        },
        state: State::Pending,
        grant: None,
        jobs: Box::new(|id| {
            vec![
                Job::Timeout { request_id: id }.at(9_000),
                Job::PostCard {
                    request_id: id,
                    channel: "C1".into(),
                }
                .at(1_000),
            ]
        }),
        event: super::audit(who, "requested", serde_json::json!({"resource": "app"})),
        now: 1_000,
        members: Vec::new(),
    }
}

/// Each of `ids` is stored as [`intake`] made it for the person at the same place in `who`,
/// open, with its two jobs and its event.
pub(super) async fn assert_stored(store: &Store, ids: &[i32], who: &[&str]) {
    assert_eq!(ids.len(), who.len());
    for (id, who) in ids.iter().zip(who) {
        let stored = store.request(*id).await.expect("read").expect("stored");
        assert_eq!(stored.requester, *who);
        assert_eq!(stored.state, "pending");
        assert_eq!(
            stored.open_key.as_deref(),
            Some(format!("{who}|app").as_str())
        );
        assert_eq!(stored.created_at, 1_000);
        let jobs = job::Entity::find()
            .filter(job::Column::RequestId.eq(*id))
            .count(&store.db)
            .await
            .expect("jobs");
        assert_eq!(jobs, 2, "request {id} has its two jobs");
        let events = audit::Entity::find()
            .filter(audit::Column::RequestId.eq(Some(*id)))
            .count(&store.db)
            .await
            .expect("events");
        assert_eq!(events, 1, "request {id} has its audit event");
    }
}

/// A migrated SQLite store in a directory of its own (`name` tells tests apart), emptied
/// first; the directory, for the test to remove.
pub(super) async fn sqlite_store(name: &str) -> (Store, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("jitbot-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("store.db");
    let _ = std::fs::remove_file(&file);
    let url = format!("sqlite://{}?mode=rwc", file.display());
    let store = Store::connect(&url).await.expect("open SQLite");
    store.migrate().await.expect("migrate");
    (store, dir)
}
