//! Escalation pages: each DM that paged someone about a request, so it is updated like the card
//! when the request is decided.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Pages {
    Table,
    Id,
    RequestId,
    UserId,
    Channel,
    Ts,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Pages::Table)
                    .if_not_exists()
                    .col(pk_auto(Pages::Id))
                    .col(integer(Pages::RequestId))
                    .col(string(Pages::UserId))
                    .col(string(Pages::Channel))
                    .col(string(Pages::Ts))
                    .col(big_integer(Pages::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_pages_request")
                    .table(Pages::Table)
                    .col(Pages::RequestId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Pages::Table).if_exists().to_owned())
            .await
    }
}
