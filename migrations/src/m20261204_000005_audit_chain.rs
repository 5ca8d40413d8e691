//! A tamper-evident audit trail: each event is sealed into a hash chain (`seq`, `hash`), and
//! `audit_head` holds the chain's last link. Events are written as before and sealed shortly
//! after, in the order they are sealed, by whichever process holds the head row's lock.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "ALTER TABLE audit_events ADD COLUMN seq BIGINT",
    "ALTER TABLE audit_events ADD COLUMN hash TEXT",
    "CREATE UNIQUE INDEX IF NOT EXISTS idx_audit_seq ON audit_events (seq)",
    "CREATE INDEX IF NOT EXISTS idx_audit_unsealed ON audit_events (id) WHERE seq IS NULL",
    "CREATE TABLE IF NOT EXISTS audit_head (id INTEGER PRIMARY KEY, last_seq BIGINT NOT NULL, last_hash TEXT NOT NULL)",
    "INSERT INTO audit_head (id, last_seq, last_hash) VALUES \
     (1, 0, '0000000000000000000000000000000000000000000000000000000000000000')",
];

const DOWN: &[&str] = &[
    "DROP TABLE IF EXISTS audit_head",
    "DROP INDEX IF EXISTS idx_audit_unsealed",
    "DROP INDEX IF EXISTS idx_audit_seq",
    "ALTER TABLE audit_events DROP COLUMN hash",
    "ALTER TABLE audit_events DROP COLUMN seq",
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
