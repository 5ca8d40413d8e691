use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Requests {
    Table,
    Id,
    Resource,
    Requester,
    DurationSecs,
    Reason,
    State,
    OpenKey,
    ApprovalsNeeded,
    AutoApproved,
    Channel,
    CardTs,
    CreatedAt,
    DecidedAt,
    DecidedBy,
    DecisionNote,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Approvals {
    Table,
    Id,
    RequestId,
    Approver,
    Decision,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Grants {
    Table,
    Id,
    RequestId,
    ProviderName,
    Provider,
    GrantShape,
    Identity,
    AlreadyHeld,
    GrantedAt,
    ExpiresAt,
    EndReason,
    EndedAt,
    LastError,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    Kind,
    RequestId,
    Payload,
    DedupeKey,
    RunAt,
    Attempts,
    LockedUntil,
    DoneAt,
    LastError,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    At,
    RequestId,
    Actor,
    Action,
    Detail,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Requests::Table)
                    .if_not_exists()
                    .col(pk_auto(Requests::Id))
                    .col(string(Requests::Resource))
                    .col(string(Requests::Requester))
                    .col(big_integer(Requests::DurationSecs))
                    .col(text(Requests::Reason))
                    .col(string(Requests::State))
                    // "requester|resource" while the request is open, NULL after: a unique index
                    // on it stops two open requests for the same access, on SQLite and PostgreSQL.
                    .col(string_null(Requests::OpenKey).unique_key())
                    .col(integer(Requests::ApprovalsNeeded))
                    .col(boolean(Requests::AutoApproved))
                    .col(string(Requests::Channel))
                    .col(string_null(Requests::CardTs))
                    .col(big_integer(Requests::CreatedAt))
                    .col(big_integer_null(Requests::DecidedAt))
                    .col(string_null(Requests::DecidedBy))
                    .col(text_null(Requests::DecisionNote))
                    .col(big_integer(Requests::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_requests_requester")
                    .table(Requests::Table)
                    .col(Requests::Requester)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Approvals::Table)
                    .if_not_exists()
                    .col(pk_auto(Approvals::Id))
                    .col(integer(Approvals::RequestId))
                    .col(string(Approvals::Approver))
                    .col(string(Approvals::Decision))
                    .col(big_integer(Approvals::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Approvals::Table, Approvals::RequestId)
                            .to(Requests::Table, Requests::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_approvals_request_approver")
                    .table(Approvals::Table)
                    .col(Approvals::RequestId)
                    .col(Approvals::Approver)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Grants::Table)
                    .if_not_exists()
                    .col(pk_auto(Grants::Id))
                    .col(integer_uniq(Grants::RequestId))
                    .col(string(Grants::ProviderName))
                    // copies of the provider config and grant shape at approval time (JSON)
                    .col(text(Grants::Provider))
                    .col(text(Grants::GrantShape))
                    .col(text(Grants::Identity))
                    // NULL until checked, before the first grant attempt
                    .col(boolean_null(Grants::AlreadyHeld))
                    .col(big_integer_null(Grants::GrantedAt))
                    .col(big_integer_null(Grants::ExpiresAt))
                    .col(string_null(Grants::EndReason))
                    .col(big_integer_null(Grants::EndedAt))
                    .col(text_null(Grants::LastError))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Grants::Table, Grants::RequestId)
                            .to(Requests::Table, Requests::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .if_not_exists()
                    .col(pk_auto(Jobs::Id))
                    .col(string(Jobs::Kind))
                    .col(integer_null(Jobs::RequestId))
                    .col(text(Jobs::Payload))
                    // one job per key ("grant:42"): enqueueing twice is harmless
                    .col(string_null(Jobs::DedupeKey).unique_key())
                    .col(big_integer(Jobs::RunAt))
                    .col(integer(Jobs::Attempts).default(0))
                    .col(big_integer_null(Jobs::LockedUntil))
                    .col(big_integer_null(Jobs::DoneAt))
                    .col(text_null(Jobs::LastError))
                    .col(big_integer(Jobs::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_jobs_due")
                    .table(Jobs::Table)
                    .col(Jobs::DoneAt)
                    .col(Jobs::RunAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .if_not_exists()
                    .col(pk_auto(AuditEvents::Id))
                    .col(big_integer(AuditEvents::At))
                    .col(integer_null(AuditEvents::RequestId))
                    .col(string(AuditEvents::Actor))
                    .col(string(AuditEvents::Action))
                    .col(text(AuditEvents::Detail))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_request")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::RequestId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditEvents::Table.into_iden(),
            Jobs::Table.into_iden(),
            Grants::Table.into_iden(),
            Approvals::Table.into_iden(),
            Requests::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
