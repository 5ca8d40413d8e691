//! Every query on a hot path is served by an index, so none slows down with history:
//! a person's requests newest first (`/jit list`), the pending requests (`/jit pending`), and the
//! finished jobs old enough to prune.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS idx_requests_requester_id ON requests (requester, id)",
    "DROP INDEX IF EXISTS idx_requests_requester",
    "CREATE INDEX IF NOT EXISTS idx_requests_pending ON requests (id) WHERE state = 'pending'",
    "CREATE INDEX IF NOT EXISTS idx_jobs_finished ON jobs (done_at) WHERE done_at IS NOT NULL",
];

const DOWN: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS idx_requests_requester ON requests (requester)",
    "DROP INDEX IF EXISTS idx_requests_requester_id",
    "DROP INDEX IF EXISTS idx_requests_pending",
    "DROP INDEX IF EXISTS idx_jobs_finished",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_all(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_all(manager, DOWN).await
    }
}
