//! `/jit extend`: an extension is a request of its own (`extends` = the request whose grant it
//! lengthens), decided like any other; once approved (or auto-approved) it is `extended` and the
//! grant it extends ends later.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "ALTER TABLE requests ADD COLUMN extends INTEGER",
    "CREATE INDEX IF NOT EXISTS idx_requests_extends ON requests (extends) WHERE extends IS NOT NULL",
];
const DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS idx_requests_extends",
    "ALTER TABLE requests DROP COLUMN extends",
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
