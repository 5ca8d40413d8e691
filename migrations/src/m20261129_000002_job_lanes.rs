//! Lanes for the job queue: each job names its lane (access, grants, messages, housekeeping) and
//! the key it is limited by (a provider's name, a Slack channel), and a claimed job names the
//! worker holding it, so a lease can be renewed while the job runs and taken back when it stops.
//!
//! Indexes are partial, over unfinished jobs only, so finding the next due job costs the same
//! with a million finished rows as with none. Both SQLite and PostgreSQL read the same SQL.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Lane,
    QueueKey,
    LockedBy,
    Outcome,
    Paced,
}

/// The lane of each kind of job that existed before lanes did.
const BACKFILL: &str = "UPDATE jobs SET lane = CASE kind \
     WHEN 'end_access' THEN 'access' WHEN 'cleanup' THEN 'access' \
     WHEN 'grant' THEN 'grants' WHEN 'timeout' THEN 'housekeeping' \
     ELSE 'messages' END";

const INDEXES: &[&str] = &[
    "DROP INDEX IF EXISTS idx_jobs_due",
    // claim and next wake-up: the earliest free job of a lane (a claimed job leaves this index)
    "CREATE INDEX IF NOT EXISTS idx_jobs_lane_due ON jobs (lane, run_at) \
     WHERE done_at IS NULL AND locked_until IS NULL",
    // leases: the earliest lease to run out in a lane (a dead worker's jobs are free then)
    "CREATE INDEX IF NOT EXISTS idx_jobs_lane_lease ON jobs (lane, locked_until) \
     WHERE done_at IS NULL AND locked_until IS NOT NULL",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per ALTER: SQLite takes no more.
        let columns = [
            ColumnDef::new(Jobs::Lane)
                .string()
                .not_null()
                .default("messages")
                .to_owned(),
            ColumnDef::new(Jobs::QueueKey)
                .string()
                .not_null()
                .default("")
                .to_owned(),
            ColumnDef::new(Jobs::LockedBy).string().null().to_owned(),
            // how a finished job ended: done, failed (permanently), settled (made pointless)
            ColumnDef::new(Jobs::Outcome).string().null().to_owned(),
            // a Slack post booked into its channel's pace: runs when due, without pacing again
            ColumnDef::new(Jobs::Paced)
                .boolean()
                .not_null()
                .default(false)
                .to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(Jobs::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        let db = manager.get_connection();
        db.execute_unprepared(BACKFILL).await?;
        for sql in INDEXES {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for index in ["idx_jobs_lane_due", "idx_jobs_lane_lease"] {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {index}"))
                .await?;
        }
        for column in [
            Jobs::Lane,
            Jobs::QueueKey,
            Jobs::LockedBy,
            Jobs::Outcome,
            Jobs::Paced,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Jobs::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
