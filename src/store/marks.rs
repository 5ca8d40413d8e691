//! Named values the store keeps for itself (`marks`): read one, set one.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, QueryResult};

use super::Store;

/// The digest of the policy whose pending requests were last walked in full.
pub const POLICY_ENFORCED: &str = "policy_enforced";

impl Store {
    /// The value of mark `name`, if set.
    pub async fn mark(&self, name: &str) -> anyhow::Result<Option<String>> {
        let mut select = Query::select();
        select
            .column(Alias::new("value"))
            .from(Alias::new("marks"))
            .and_where(Expr::col(Alias::new("name")).eq(name));
        let row: Option<QueryResult> = self.db.query_one(&select).await?;
        Ok(match row {
            Some(row) => Some(row.try_get("", "value")?),
            None => None,
        })
    }

    /// Sets mark `name` to `value`, replacing what it held.
    pub async fn set_mark(&self, name: &str, value: &str) -> anyhow::Result<()> {
        let mut insert = Query::insert();
        insert
            .into_table(Alias::new("marks"))
            .columns([Alias::new("name"), Alias::new("value")]);
        insert.values([name.into(), value.into()])?.on_conflict(
            OnConflict::column(Alias::new("name"))
                .update_column(Alias::new("value"))
                .to_owned(),
        );
        self.db.execute(&insert).await?;
        Ok(())
    }
}
