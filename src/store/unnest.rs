//! PostgreSQL: rows of one table as one array per column, inserted with
//! `INSERT INTO t (a, b, …) SELECT * FROM unnest($1::int4[], $2::text[], …)`.
//!
//! A multi-row `VALUES` list has a placeholder per value: a batch of 13 new requests, with their
//! jobs and audit events, was a statement of ~750 parameters, a different text for every batch
//! length ([`super::shapes`]), which the writer built and encoded value by value and the server
//! parsed and bound each time (~0.25 ms of its ~0.9 ms per batch, from its statement log). Here
//! each column is one parameter whatever the number of rows, so the text depends only on which
//! columns are set: one prepared statement, kept by the connection, for every batch.

use sea_orm::sea_query::Value;
use sea_orm::sqlx::{self, Postgres, postgres::PgArguments};
use sea_orm::{
    ActiveModelTrait, ActiveValue, DbErr, EntityName, EntityTrait, IdenStatic, Iterable,
};

/// One column's values, one per row.
enum Array {
    Int(Vec<Option<i32>>),
    BigInt(Vec<Option<i64>>),
    Text(Vec<Option<String>>),
    Bool(Vec<Option<bool>>),
}

impl Array {
    /// An empty array of `value`'s type, or `None` for a type no table here has.
    fn like(value: &Value, rows: usize) -> Option<Array> {
        Some(match value {
            Value::Int(_) => Array::Int(Vec::with_capacity(rows)),
            Value::BigInt(_) => Array::BigInt(Vec::with_capacity(rows)),
            Value::String(_) => Array::Text(Vec::with_capacity(rows)),
            Value::Bool(_) => Array::Bool(Vec::with_capacity(rows)),
            _ => return None,
        })
    }

    /// Appends `value`; `false` if it is of another type than the column's.
    fn push(&mut self, value: Value) -> bool {
        match (self, value) {
            (Array::Int(a), Value::Int(v)) => a.push(v),
            (Array::BigInt(a), Value::BigInt(v)) => a.push(v),
            (Array::Text(a), Value::String(v)) => a.push(v),
            (Array::Bool(a), Value::Bool(v)) => a.push(v),
            _ => return false,
        }
        true
    }

    fn sql_type(&self) -> &'static str {
        match self {
            Array::Int(_) => "int4[]",
            Array::BigInt(_) => "int8[]",
            Array::Text(_) => "text[]",
            Array::Bool(_) => "bool[]",
        }
    }
}

/// The rows of one table, column by column.
pub(super) struct Rows {
    table: &'static str,
    names: Vec<&'static str>,
    arrays: Vec<Array>,
}

impl Rows {
    /// `models` (at least one), with the columns the first one sets; every other must set the
    /// same ones, with values of the same types.
    pub(super) fn of<A>(models: &[A]) -> Result<Rows, DbErr>
    where
        A: ActiveModelTrait,
        <A::Entity as EntityTrait>::Column: IdenStatic,
    {
        let table = A::Entity::default().table_name();
        let Some(first) = models.first() else {
            return Err(DbErr::Custom(format!("no rows to insert into {table}")));
        };
        let mut columns = Vec::new();
        let mut names = Vec::new();
        let mut arrays = Vec::new();
        for column in <A::Entity as EntityTrait>::Column::iter() {
            let value = match first.get(column) {
                ActiveValue::Set(v) | ActiveValue::Unchanged(v) => v,
                ActiveValue::NotSet => continue,
            };
            let array = Array::like(&value, models.len()).ok_or_else(|| {
                DbErr::Custom(format!(
                    "{table}.{} has a type the batched insert does not carry",
                    column.as_str()
                ))
            })?;
            columns.push(column);
            names.push(column.as_str());
            arrays.push(array);
        }
        for model in models {
            for (column, array) in columns.iter().zip(&mut arrays) {
                let pushed = match model.get(*column) {
                    ActiveValue::Set(v) | ActiveValue::Unchanged(v) => array.push(v),
                    ActiveValue::NotSet => false,
                };
                if !pushed {
                    return Err(DbErr::Custom(format!(
                        "the rows for {table} do not all set {} alike",
                        column.as_str()
                    )));
                }
            }
        }
        Ok(Rows {
            table,
            names,
            arrays,
        })
    }

    /// `INSERT INTO "table" ("a", …) SELECT * FROM unnest($n::…[], …)`, its parameters numbered
    /// from `*next`, which it advances.
    pub(super) fn insert_sql(&self, next: &mut usize) -> String {
        let columns: Vec<String> = self.names.iter().map(|n| quoted(n)).collect();
        let params: Vec<String> = self
            .arrays
            .iter()
            .map(|a| {
                *next += 1;
                format!("${}::{}", *next - 1, a.sql_type())
            })
            .collect();
        format!(
            "INSERT INTO {} ({}) SELECT * FROM unnest({})",
            quoted(self.table),
            columns.join(", "),
            params.join(", ")
        )
    }

    /// Binds the columns, in the order of [`Rows::insert_sql`]'s parameters.
    pub(super) fn bind<'q>(
        self,
        mut query: sqlx::query::Query<'q, Postgres, PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, PgArguments> {
        for array in self.arrays {
            query = match array {
                Array::Int(a) => query.bind(a),
                Array::BigInt(a) => query.bind(a),
                Array::Text(a) => query.bind(a),
                Array::Bool(a) => query.bind(a),
            };
        }
        query
    }
}

/// `name` as a quoted SQL identifier.
pub(super) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entities::audit;
    use sea_orm::ActiveValue::{NotSet, Set};

    fn event(request_id: Option<i32>, action: &str) -> audit::ActiveModel {
        audit::ActiveModel {
            id: NotSet,
            at: Set(7),
            request_id: Set(request_id),
            actor: Set("U1".into()),
            action: Set(action.into()),
            detail: Set("{}".into()),
            seq: Set(None),
            hash: Set(None),
        }
    }

    #[test]
    fn one_parameter_per_column_whatever_the_rows() {
        let one = Rows::of(&[event(Some(1), "requested")]).expect("rows");
        let many = Rows::of(&vec![event(Some(1), "requested"); 40]).expect("rows");
        let (mut a, mut b) = (3, 3);
        let sql = one.insert_sql(&mut a);
        assert_eq!(sql, many.insert_sql(&mut b), "one text for 1 and 40 rows");
        assert_eq!(
            sql,
            "INSERT INTO \"audit_events\" (\"at\", \"request_id\", \"actor\", \"action\", \
             \"detail\", \"seq\", \"hash\") SELECT * FROM unnest($3::int8[], $4::int4[], \
             $5::text[], $6::text[], $7::text[], $8::int8[], $9::text[])"
        );
        assert_eq!(a, 10, "the next parameter's number");
    }

    #[test]
    fn rows_that_set_different_columns_are_refused() {
        let mut odd = event(None, "requested");
        odd.hash = NotSet;
        assert!(Rows::of(&[event(None, "requested"), odd]).is_err());
        assert!(Rows::of::<audit::ActiveModel>(&[]).is_err());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
    }
}
