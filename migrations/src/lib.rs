//! jitbot's schema, one migration per file. Never imports from the application crate.
//!
//! Timestamps are stored as milliseconds since the Unix epoch (`BIGINT`), so SQLite and
//! PostgreSQL compare and order them the same way.

pub use sea_orm_migration::prelude::*;

mod m20261124_000001_create_tables;
mod m20261129_000002_job_lanes;
mod m20261129_000003_hot_path_indexes;
mod m20261204_000004_policy_at_every_step;
mod m20261204_000005_audit_chain;
mod m20261204_000006_bundles;
mod m20261204_000007_extensions;
mod m20261204_000008_pages;
mod m20261205_000009_shared_access;
mod m20261207_000010_marks;
mod m20261207_000011_pending_bundles;

pub struct Migrator;

/// Runs raw statements in order: the migrations that are a list of SQL each way.
pub(crate) async fn run_all(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    for sql in statements {
        manager.get_connection().execute_unprepared(sql).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_tables::Migration),
            Box::new(m20261129_000002_job_lanes::Migration),
            Box::new(m20261129_000003_hot_path_indexes::Migration),
            Box::new(m20261204_000004_policy_at_every_step::Migration),
            Box::new(m20261204_000005_audit_chain::Migration),
            Box::new(m20261204_000006_bundles::Migration),
            Box::new(m20261204_000007_extensions::Migration),
            Box::new(m20261204_000008_pages::Migration),
            Box::new(m20261205_000009_shared_access::Migration),
            Box::new(m20261207_000010_marks::Migration),
            Box::new(m20261207_000011_pending_bundles::Migration),
        ]
    }
}
