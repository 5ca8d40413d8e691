//! Bundles: one request, one card, one decision for several resources, one grant per resource.
//! - `requests.bundle`: on the request people decide (the lead), the resources it covers, as a
//!   JSON object `{"name": …, "resources": […]}`; NULL for a request of one resource;
//! - `requests.bundle_of`: on each other resource's request, created at the approval, the lead's
//!   id. Each has its own grant, jobs and end; the lead's card shows them all.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "ALTER TABLE requests ADD COLUMN bundle TEXT",
    "ALTER TABLE requests ADD COLUMN bundle_of INTEGER",
    "CREATE INDEX IF NOT EXISTS idx_requests_bundle_of ON requests (bundle_of) WHERE bundle_of IS NOT NULL",
];
const DOWN: &[&str] = &[
    "DROP INDEX IF EXISTS idx_requests_bundle_of",
    "ALTER TABLE requests DROP COLUMN bundle_of",
    "ALTER TABLE requests DROP COLUMN bundle",
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
