//! PostgreSQL: a batch of new requests in two round trips. The general way
//! ([`super::batch::create_batch`] in a transaction) pays one per statement: BEGIN, the cap
//! count, the requests' insert, their jobs', their audit events', COMMIT, and the pool's ping
//! before it hands out the connection. Measured under the bench's load (2 cores, 16 clients,
//! batches of ~11), a batch took 2.5 ms of which the server worked 1.1 ms: the rest was waiting
//! on those hops.
//!
//! Here a batch of up to [`super::shapes::SMALL`] requests is:
//! 1. one `SELECT` that takes their ids from the requests' sequence and counts the open requests
//!    of the capped people among them;
//! 2. one statement that inserts the requests (with those ids), their grants, jobs and audit
//!    events, chained as data-modifying CTEs. It runs on its own: one statement is one
//!    transaction, all of it or none, durable when it answers (`synchronous_commit`).
//!
//! The statements are built by the same builders as the general way's. A request already open for
//! its person and resource makes step 2 fail on the open key's unique index, writing nothing; the
//! batch then goes the general way, which says which request it was. Ids taken and not used leave
//! gaps, as `ON CONFLICT DO NOTHING` does on PostgreSQL already. As with a COMMIT in flight when
//! the writer's deadline passes, step 2 in flight then may still commit after "try again" is
//! answered; the unique open key keeps a second try from storing it twice.

use std::collections::HashMap;

use sea_orm::sea_query::{Alias, CommonTableExpression, PostgresQueryBuilder, WithClause};
use sea_orm::sqlx::{self, Row};
use sea_orm::{ActiveValue::Set, DbBackend, DbErr, EntityTrait, QueryTrait, TryIntoModel};
use sea_query_sqlx::SqlxValues;

use super::batch::{capped, followers, over_caps};
use super::entities::{audit, grant, job, request};
use super::queue::job_rows;
use super::requests::{Created, key_of, open_counts_query, request_row};
use super::writer::Intake;

/// Whether this module commits `intake`: a new open request with no bundle to insert beside it
/// (the same as SQLite's [`super::inline`]).
pub(super) fn takes(intake: &Intake) -> bool {
    super::inline::takes(intake)
}

/// Why a batch was not committed here; either way nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub(super) enum NotChained {
    /// One of its requests is already open for its person and resource (the open key's unique
    /// index): expected now and then; the general way says which.
    #[error("one of the new requests is already open")]
    AlreadyOpen,
    #[error(transparent)]
    Failed(#[from] DbErr),
}

/// Commits `intakes` (each [`takes`], at most [`super::shapes::SMALL`], one per person) on one
/// connection of `pool`.
pub(super) async fn create(
    pool: &sqlx::PgPool,
    intakes: &[Intake],
) -> Result<Vec<Created>, NotChained> {
    let mut conn = pool.acquire().await.map_err(pg_err)?;
    let (ids, open) = ids_and_counts(&mut conn, intakes).await?;
    let over = over_caps(intakes, open);
    let mut ids = ids.into_iter();
    let mut inserted = HashMap::new();
    let mut rows = Vec::with_capacity(intakes.len());
    for (intake, over) in intakes.iter().zip(&over) {
        if over.is_some() {
            continue;
        }
        let id = ids.next().ok_or_else(|| {
            DbErr::Custom("the requests' sequence gave fewer ids than asked".into())
        })?;
        let mut row = request_row(&intake.new, intake.state, intake.now);
        row.id = Set(id);
        inserted.insert(key_of(&intake.new), row.clone().try_into_model()?);
        rows.push(row);
    }
    let f = followers(intakes, &over, inserted);
    if rows.is_empty() {
        return Ok(f.created);
    }
    let now = intakes.iter().map(|i| i.now).max().unwrap_or_default();
    let mut with = WithClause::new();
    with.cte(cte(
        "new_requests",
        request::Entity::insert_many(rows).into_query(),
    ));
    if !f.grants.is_empty() {
        with.cte(cte(
            "new_grants",
            grant::Entity::insert_many(f.grants).into_query(),
        ));
    }
    if !f.jobs.is_empty() {
        with.cte(cte(
            "new_jobs",
            job::Entity::insert_many(job_rows(&f.jobs, now)?).into_query(),
        ));
    }
    // Every stored request has its audit event: the statement the CTEs hang on.
    let (sql, values) = with
        .query(audit::Entity::insert_many(f.audits).into_query())
        .build(PostgresQueryBuilder);
    match sqlx::query_with(sqlx::AssertSqlSafe(sql), SqlxValues(values))
        .execute(&mut *conn)
        .await
    {
        Ok(_) => Ok(f.created),
        Err(e)
            if e.as_database_error()
                .is_some_and(|d| d.code().as_deref() == Some(UNIQUE_VIOLATION)) =>
        {
            Err(NotChained::AlreadyOpen)
        }
        Err(e) => Err(pg_err(e).into()),
    }
}

fn cte(name: &str, insert: sea_orm::sea_query::InsertStatement) -> CommonTableExpression {
    CommonTableExpression::new()
        .query(insert)
        .table_name(Alias::new(name))
        .to_owned()
}

/// One id from the requests' sequence per intake, and the open requests of the capped people
/// among them, in one query.
async fn ids_and_counts(
    conn: &mut sqlx::PgConnection,
    intakes: &[Intake],
) -> Result<(Vec<i32>, HashMap<String, u64>), DbErr> {
    let capped = capped(intakes);
    let (mut sql, mut values) = if capped.is_empty() {
        (String::new(), Vec::new())
    } else {
        let counts = open_counts_query(&capped).build(DbBackend::Postgres);
        let values = counts.values.map(|v| v.0).unwrap_or_default();
        (format!("({}) UNION ALL ", counts.sql), values)
    };
    values.push(sea_orm::Value::BigInt(Some(intakes.len() as i64)));
    sql.push_str(&format!(
        "SELECT NULL::text, nextval(pg_get_serial_sequence('\"requests\"', 'id')) \
         FROM generate_series(1, ${})",
        values.len()
    ));
    let rows = sqlx::query_with(
        sqlx::AssertSqlSafe(sql),
        SqlxValues(sea_orm::sea_query::Values(values)),
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(pg_err)?;
    let mut ids = Vec::with_capacity(intakes.len());
    let mut open = HashMap::new();
    for row in rows {
        let who: Option<String> = row.try_get(0).map_err(pg_err)?;
        let n: i64 = row.try_get(1).map_err(pg_err)?;
        match who {
            Some(who) => {
                open.insert(who, n.max(0) as u64);
            }
            None => ids.push(
                i32::try_from(n)
                    .map_err(|_| DbErr::Custom(format!("request id {n} is past 32 bits")))?,
            ),
        }
    }
    // Earlier requests of the batch get the smaller numbers.
    ids.sort_unstable();
    Ok((ids, open))
}

/// PostgreSQL's SQLSTATE for a unique index refusing a row.
const UNIQUE_VIOLATION: &str = "23505";

fn pg_err(e: sqlx::Error) -> DbErr {
    DbErr::Custom(format!("PostgreSQL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::fixtures::{assert_stored, intake};
    use sea_orm::{ConnectionTrait, PaginatorTrait};

    /// A fresh database on the test PostgreSQL (`JIT_TEST_PG_URL`, default this machine's).
    async fn fresh_store() -> (Store, String, String) {
        let admin = std::env::var("JIT_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("jitbot_chained_{}", std::process::id());
        let server = sea_orm::Database::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no PostgreSQL at {admin} ({e}): start one (scripts/test-services.sh prints \
                 JIT_TEST_PG_URL) or set JIT_TEST_PG_URL"
                )
            });
        server
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\""))
            .await
            .expect("drop");
        server
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create");
        let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
        let store = Store::connect(&format!("{base}/{name}"))
            .await
            .expect("open PostgreSQL");
        store.migrate().await.expect("migrate");
        (store, admin, name)
    }

    /// The path must commit, not fall back: a fallback would still store the rows (the general
    /// way), so this calls it directly and checks its own answer.
    #[tokio::test]
    async fn a_batch_of_new_requests_commits_in_two_round_trips_with_its_jobs_and_events() {
        let (store, admin, name) = fresh_store().await;
        let pool = store.db.get_postgres_connection_pool();

        let batch = [
            intake("U1", Some(5)),
            intake("U2", Some(5)),
            intake("U3", None),
        ];
        let created = create(pool, &batch)
            .await
            .unwrap_or_else(|e| panic!("the chained path failed: {e}"));
        let ids: Vec<i32> = created
            .iter()
            .map(|c| match c {
                Created::Stored(r) => r.id,
                _ => panic!("every request of the batch is new"),
            })
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in order: {ids:?}");
        assert_stored(&store, &ids, &["U1", "U2", "U3"]).await;

        // A person over their cap is refused here, and not stored.
        let capped = [intake("U4", Some(0)), intake("U5", Some(1))];
        let created = create(pool, &capped).await.expect("chained");
        assert!(matches!(
            created[0],
            Created::TooMany {
                open: 0,
                max_open: 0
            }
        ));
        assert!(matches!(created[1], Created::Stored(_)));
        // U5 again: over the cap of one now that the first is open.
        let created = create(pool, &[intake("U5", Some(1)), intake("U6", Some(1))])
            .await
            .expect("chained");
        assert!(matches!(
            created[0],
            Created::TooMany {
                open: 1,
                max_open: 1
            }
        ));

        // U1 again (already open) beside a new U7: the statement fails whole, neither stored,
        // for the general way to sort out.
        let again = [intake("U1", None), intake("U7", None)];
        assert!(matches!(
            create(pool, &again).await,
            Err(NotChained::AlreadyOpen)
        ));
        let requests = request::Entity::find()
            .count(&store.db)
            .await
            .expect("count");
        assert_eq!(requests, 5, "U1-U3, U5, U6; not U4, U7 nor a second U1");
        let orphans = job::Entity::find().count(&store.db).await.expect("jobs");
        assert_eq!(
            orphans, 10,
            "two jobs per stored request, none for the failed statement"
        );

        drop(store);
        let server = sea_orm::Database::connect(&admin).await.expect("admin");
        let _ = server
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
    }
}
