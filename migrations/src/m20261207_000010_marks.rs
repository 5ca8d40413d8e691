//! `marks`: small named values the store keeps for itself, one row each. The first is the digest
//! of the policy whose pending requests were last walked (`policy_enforced`), so a start under
//! an unchanged policy does not walk them all again.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] =
    &["CREATE TABLE IF NOT EXISTS marks (name TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL)"];
const DOWN: &[&str] = &["DROP TABLE IF EXISTS marks"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_all(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_all(manager, DOWN).await
    }
}
