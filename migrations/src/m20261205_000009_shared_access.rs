//! Overlapping grants of the same access (two resources naming one role, say) are counted: each
//! grant that relies on jitbot's access at the target holds it (`hold`), keyed by what it gives
//! (`access_key`, a digest of the provider and the access), and only the last holder's revoke
//! removes it. `access_locks` has one row per key, locked while a grant joins or leaves, so two
//! replicas never both decide they are the last.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "ALTER TABLE grants ADD COLUMN access_key TEXT",
    "ALTER TABLE grants ADD COLUMN hold TEXT",
    "ALTER TABLE grants ADD COLUMN handed_to INTEGER",
    "CREATE INDEX IF NOT EXISTS idx_grants_holds ON grants (access_key) WHERE hold IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS access_locks (access_key TEXT NOT NULL PRIMARY KEY)",
];
const DOWN: &[&str] = &[
    "DROP TABLE IF EXISTS access_locks",
    "DROP INDEX IF EXISTS idx_grants_holds",
    "ALTER TABLE grants DROP COLUMN handed_to",
    "ALTER TABLE grants DROP COLUMN hold",
    "ALTER TABLE grants DROP COLUMN access_key",
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
