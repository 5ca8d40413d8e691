//! The policy in force decides every step:
//! - `/jit pending` lists every request an approver may decide, however many wait: the pending
//!   requests of their resources, in id order, read through a partial index a page at a time;
//! - a grant records whose approvals counted when it was approved (`approved_by`), so a later
//!   policy, or an approval that stopped counting, never changes who is named as approver.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS idx_requests_pending_resource \
     ON requests (resource, id) WHERE state = 'pending'",
    "ALTER TABLE grants ADD COLUMN approved_by TEXT",
];
const DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS idx_requests_pending_resource",
    "ALTER TABLE grants DROP COLUMN approved_by",
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
