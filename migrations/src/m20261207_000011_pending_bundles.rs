//! Pending bundles, found without walking every pending request: `/jit pending` asks for them on
//! each call (an approver of any of a bundle's resources decides it), and with a million pending
//! requests reading the pending index for them took ~105 ms a call.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &["CREATE INDEX IF NOT EXISTS idx_requests_pending_bundles \
     ON requests (id) WHERE state = 'pending' AND bundle IS NOT NULL"];
const DOWN: &[&str] = &["DROP INDEX IF EXISTS idx_requests_pending_bundles"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_all(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_all(manager, DOWN).await
    }
}
