//! PostgreSQL: a batch of new requests in one round trip under load, two otherwise. The general
//! way ([`super::batch::create_batch`] in a transaction) pays one per statement: BEGIN, the cap
//! count, the requests' insert, their jobs', their audit events', COMMIT, and then also the
//! pool's ping before it handed out the connection (the writer's pool now tests only idle ones,
//! see [`super::PG_WRITER_TEST_IDLE`]). Measured under the bench's load (2 cores, 16 clients,
//! batches of ~11), a batch took 2.5 ms of which the server worked 1.1 ms: the rest was waiting
//! on those hops.
//!
//! Here a batch of up to [`super::shapes::SMALL`] requests is one statement that inserts the
//! requests (with their ids), their grants, jobs and audit events, chained as data-modifying
//! CTEs. It runs on its own: one statement is one transaction, all of it or none, durable when
//! it answers (`synchronous_commit`). The ids come from the requests' sequence:
//! - under load, from the ones an earlier batch took ahead ([`SpareIds`]). The cap on open
//!   requests is then checked inside the statement ([`CapCheck`]): someone over it fails
//!   the statement, and the batch goes the way below;
//! - otherwise one `SELECT` first takes them (for this batch and, when batches come close
//!   together, for the next ones) and counts the open requests of the capped people among them,
//!   so that the statement leaves out whoever is over their cap and they are told why.
//!
//! The rows are built by the same builders as the general way's, and go in as one array per
//! column ([`super::unnest`]), so the statement's text is the same for every batch. A request
//! already open for its person and resource fails the statement on the open key's unique index,
//! writing nothing; the batch then goes the general way, which says which request it was. Ids
//! taken and not used leave gaps, as `ON CONFLICT DO NOTHING` does on PostgreSQL already. As
//! with a COMMIT in flight when the writer's deadline passes, a statement in flight then may
//! still commit after "try again" is answered; the unique open key keeps a second try from
//! storing it twice.

use std::collections::HashMap;
use std::time::Instant;

use sea_orm::sqlx::{self, Row};
use sea_orm::{
    ActiveValue::Set, DbBackend, DbErr, EntityName, IdenStatic, QueryTrait, TryIntoModel,
};
use sea_query_sqlx::SqlxValues;

use super::batch::{capped, followers, over_caps};
use super::entities::request;
use super::queue::job_rows;
use super::requests::{Created, key_of, open_counts_query, request_row, states};
pub(super) use super::spare_ids::SpareIds;
use super::unnest::{Rows, quoted};
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
    /// Someone in it holds their most open requests already (checked inside the statement):
    /// the batch is counted and tried again.
    #[error("someone in the batch is over their cap")]
    OverCap,
    #[error(transparent)]
    Failed(#[from] DbErr),
}

/// Commits `intakes` (each [`takes`], at most [`super::shapes::SMALL`], one per person) on one
/// connection of `pool`.
pub(super) async fn create(
    pool: &sqlx::PgPool,
    spare: &SpareIds,
    intakes: &[Intake],
) -> Result<Vec<Created>, NotChained> {
    let mut conn = pool.acquire().await.map_err(pg_err)?;
    let now = Instant::now();
    let capped = capped(intakes);
    let mut ids = spare.take(intakes.len(), now);
    if ids.len() == intakes.len() {
        // Under load: one round trip, with the cap checked inside the statement. Someone over
        // it fails the statement, writing nothing; counting below then says who.
        let check = CapCheck::of(intakes);
        let none_over = vec![None; intakes.len()];
        match insert(&mut conn, intakes, ids, &none_over, check).await {
            Err(NotChained::OverCap) => {
                tracing::debug!("someone in a batch of new requests is over their cap");
                ids = spare.take(intakes.len(), now);
            }
            done => return done,
        }
    }
    let need = intakes.len() - ids.len();
    let mut open = HashMap::new();
    if need > 0 || !capped.is_empty() {
        let take = if need > 0 {
            spare.to_take(need, now)
        } else {
            0
        };
        let (mut taken, counts) = ids_and_counts(&mut conn, &capped, take).await?;
        spare.keep(taken.split_off(need.min(taken.len())), now);
        ids.extend(taken);
        ids.sort_unstable();
        open = counts;
    }
    let over = over_caps(intakes, open);
    insert(&mut conn, intakes, ids, &over, None).await
}

/// The chained statement for `intakes`, with `ids` (ascending, at least one per intake not
/// `over` its cap) and, if given, `check` as its first CTE. Each table's rows go in as one array
/// per column ([`super::unnest`]): the text is the same for every batch of the same tables.
async fn insert(
    conn: &mut sqlx::PgConnection,
    intakes: &[Intake],
    ids: Vec<i32>,
    over: &[Option<(u64, u32)>],
    check: Option<CapCheck>,
) -> Result<Vec<Created>, NotChained> {
    let mut ids = ids.into_iter();
    let mut inserted = HashMap::new();
    let mut rows = Vec::with_capacity(intakes.len());
    for (intake, over) in intakes.iter().zip(over) {
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
    let f = followers(intakes, over, inserted);
    if rows.is_empty() {
        return Ok(f.created);
    }
    let now = intakes.iter().map(|i| i.now).max().unwrap_or_default();
    // One list for writing the CTEs and binding their parameters, so both go in the same order.
    let mut tables = vec![("new_requests", Rows::of(&rows)?)];
    if !f.grants.is_empty() {
        tables.push(("new_grants", Rows::of(&f.grants)?));
    }
    if !f.jobs.is_empty() {
        tables.push(("new_jobs", Rows::of(&job_rows(&f.jobs, now)?)?));
    }
    // Every stored request has its audit event: the statement the CTEs hang on.
    let audits = Rows::of(&f.audits)?;
    let mut next = 1;
    let mut ctes = Vec::with_capacity(tables.len() + 1);
    let checked = check.is_some();
    if let Some(check) = &check {
        ctes.push(format!(
            "{} AS ({})",
            quoted("over_cap"),
            check.sql(&mut next)
        ));
    }
    for (name, rows) in &tables {
        ctes.push(format!(
            "{} AS ({})",
            quoted(name),
            rows.insert_sql(&mut next)
        ));
    }
    let sql = format!("WITH {} {}", ctes.join(", "), audits.insert_sql(&mut next));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    if let Some(check) = check {
        query = check.bind(query);
    }
    for (_, rows) in tables {
        query = rows.bind(query);
    }
    query = audits.bind(query);
    match query.execute(&mut *conn).await {
        Ok(_) => Ok(f.created),
        Err(e) => match e.as_database_error().and_then(|d| d.code()).as_deref() {
            Some(UNIQUE_VIOLATION) => Err(NotChained::AlreadyOpen),
            Some(NOT_NULL_VIOLATION) if checked => Err(NotChained::OverCap),
            _ => Err(pg_err(e).into()),
        },
    }
}

/// A CTE for the chained statement that fails it if any capped person among the batch already
/// holds their most open requests: for each such person it inserts a request with no id, which
/// the primary key refuses (`NOT NULL`). With none over, it inserts nothing. Every CTE of a
/// statement sees the tables as they were when it began, so this counts the open requests stored
/// before the batch; a batch carries at most one new request per person.
struct CapCheck {
    requesters: Vec<String>,
    max_open: Vec<i64>,
}

impl CapCheck {
    /// The capped people among `intakes`, or `None` if there are none.
    fn of(intakes: &[Intake]) -> Option<CapCheck> {
        let (requesters, max_open): (Vec<String>, Vec<i64>) = intakes
            .iter()
            .filter_map(|i| Some((i.new.requester.clone(), i64::from(i.new.max_open?))))
            .unzip();
        (!requesters.is_empty()).then_some(CapCheck {
            requesters,
            max_open,
        })
    }

    /// Its insert, with three parameters numbered from `*next`.
    fn sql(&self, next: &mut usize) -> String {
        let n = *next;
        *next += 3;
        let (requests, requester, state) = (
            quoted(request::Entity.table_name()),
            quoted(request::Column::Requester.as_str()),
            quoted(request::Column::State.as_str()),
        );
        format!(
            "INSERT INTO {requests} ({id}) SELECT NULL FROM unnest(${n}::text[], ${m}::int8[]) \
             AS \"capped\" (\"who\", \"max_open\") WHERE (SELECT count(*) FROM {requests} \
             WHERE {requests}.{requester} = \"capped\".\"who\" \
             AND {requests}.{state} = ANY(${o}::text[])) >= \"capped\".\"max_open\"",
            id = quoted(request::Column::Id.as_str()),
            m = n + 1,
            o = n + 2,
        )
    }

    fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let open: Vec<&'static str> = states(&crate::domain::State::OPEN);
        query.bind(self.requesters).bind(self.max_open).bind(open)
    }
}

/// `take` ids from the requests' sequence, ascending, and the open requests of the `capped`
/// people, in one query.
async fn ids_and_counts(
    conn: &mut sqlx::PgConnection,
    capped: &[&str],
    take: usize,
) -> Result<(Vec<i32>, HashMap<String, u64>), DbErr> {
    let (mut sql, mut values) = if capped.is_empty() {
        (String::new(), Vec::new())
    } else {
        let counts = open_counts_query(capped).build(DbBackend::Postgres);
        let values = counts.values.map(|v| v.0).unwrap_or_default();
        (format!("({}) UNION ALL ", counts.sql), values)
    };
    values.push(sea_orm::Value::BigInt(Some(take as i64)));
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
    let mut ids = Vec::with_capacity(take);
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
/// PostgreSQL's SQLSTATE for a `NULL` where the column refuses one ([`over_cap_check`]).
const NOT_NULL_VIOLATION: &str = "23502";

fn pg_err(e: sqlx::Error) -> DbErr {
    DbErr::Custom(format!("PostgreSQL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::entities::{grant, job};
    use crate::store::fixtures::{assert_stored, intake};
    use sea_orm::{ConnectionTrait, EntityTrait, PaginatorTrait};

    /// A fresh database on the test PostgreSQL (`JIT_TEST_PG_URL`, default this machine's).
    async fn fresh_store(test: &str) -> (Store, String, String) {
        let admin = std::env::var("JIT_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("jitbot_chained_{test}_{}", std::process::id());
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

    /// The ids `created` stored; every request in it must be new.
    fn stored(created: &[Created]) -> Vec<i32> {
        created
            .iter()
            .map(|c| match c {
                Created::Stored(r) => r.id,
                other => panic!("every request of the batch is new: {other:?}"),
            })
            .collect()
    }

    /// Requests and jobs stored in all.
    async fn rows(store: &Store) -> (u64, u64) {
        let requests = request::Entity::find()
            .count(&store.db)
            .await
            .expect("count requests");
        let jobs = job::Entity::find()
            .count(&store.db)
            .await
            .expect("count jobs");
        (requests, jobs)
    }

    async fn drop_database(store: Store, admin: &str, name: &str) {
        drop(store);
        let server = sea_orm::Database::connect(admin).await.expect("admin");
        let _ = server
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .await;
    }

    /// Under load the ids come from the spare ones: the sequence is not asked again until they
    /// run out, and the requests are stored with them, in order.
    #[tokio::test]
    async fn close_batches_use_ids_taken_ahead_and_store_them_in_order() {
        let (store, admin, name) = fresh_store("ahead").await;
        let pool = store.db.get_postgres_connection_pool();
        let spare = SpareIds::default();
        let last_value = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence('\"requests\"', 'id')::regclass)",
            )
                .fetch_one(pool)
                .await
                .expect("the requests' sequence")
        };
        let first = stored(
            &create(pool, &spare, &[intake("U1", None)])
                .await
                .expect("first"),
        );
        let second = stored(
            &create(pool, &spare, &[intake("U2", None), intake("U3", None)])
                .await
                .expect("second"),
        );
        assert_eq!(first, [1]);
        assert_eq!(second, [2, 3]);
        let taken = last_value().await;
        assert!(
            taken > 3,
            "the second batch took ids ahead: last_value {taken}"
        );
        let third = stored(
            &create(pool, &spare, &[intake("U4", None), intake("U5", None)])
                .await
                .expect("third"),
        );
        assert_eq!(third, [4, 5], "the next ids, from the spare ones");
        assert_eq!(last_value().await, taken, "the sequence was not asked");
        assert_stored(&store, &[1, 2, 3, 4, 5], &["U1", "U2", "U3", "U4", "U5"]).await;

        // Capped people under their caps, checked inside the statement: still one round trip.
        let other = |resource: &str, who: &str, max_open: u32| {
            let mut i = intake(who, Some(max_open));
            i.new.resource = resource.into();
            i
        };
        let under = stored(
            &create(pool, &spare, &[other("db", "U1", 2), intake("U6", Some(1))])
                .await
                .expect("under their caps"),
        );
        assert_eq!(under, [6, 7]);
        assert_eq!(last_value().await, taken, "the sequence was not asked");

        // U1 now holds two open requests: over a cap of two, the statement fails, the batch is
        // counted, and U1 is told while U7 beside them is stored.
        let over = create(
            pool,
            &spare,
            &[other("web", "U1", 2), intake("U7", Some(1))],
        )
        .await
        .expect("one over the cap");
        assert!(
            matches!(
                over[0],
                Created::TooMany {
                    open: 2,
                    max_open: 2
                }
            ),
            "{:?}",
            over[0]
        );
        let Created::Stored(ref u7) = over[1] else {
            panic!("U7 is under the cap: {:?}", over[1])
        };
        assert!(u7.id > 7, "a later id: {}", u7.id);
        let (requests, jobs) = rows(&store).await;
        assert_eq!(requests, 8, "U1-U6, U1's second and U7; no third for U1");
        assert_eq!(
            jobs, 16,
            "two jobs per stored request, none from the failed statement"
        );

        drop_database(store, &admin, &name).await;
    }

    /// An auto-approved request goes in with its grant, in the same statement (the grants'
    /// CTE is there only when a batch has one).
    #[tokio::test]
    async fn an_auto_approved_request_is_stored_with_its_grant() {
        let (store, admin, name) = fresh_store("grant").await;
        let pool = store.db.get_postgres_connection_pool();
        let mut approved = intake("U1", None);
        approved.new.auto_approved = true;
        approved.state = crate::domain::State::Approved;
        approved.grant = Some(super::super::requests::NewGrant {
            provider_name: "hooks".into(),
            provider: serde_json::json!({"kind": "webhook"}),
            grant_shape: serde_json::json!({"app": "bench"}),
            identity: serde_json::json!({"slack": "U1"}),
            approved_by: Vec::new(),
        });
        let created = create(pool, &SpareIds::default(), &[approved, intake("U2", None)])
            .await
            .unwrap_or_else(|e| panic!("the chained path failed: {e}"));
        let ids = stored(&created);
        let grants = grant::Entity::find().all(&store.db).await.expect("grants");
        assert_eq!(grants.len(), 1, "one grant, for the approved request");
        assert_eq!(grants[0].request_id, ids[0]);
        assert_eq!(grants[0].provider_name, "hooks");
        assert_eq!(grants[0].granted_at, None, "granted by its job, not here");
        let approved = store.request(ids[0]).await.expect("read").expect("stored");
        assert_eq!(approved.state, "approved");
        assert!(approved.auto_approved);

        drop_database(store, &admin, &name).await;
    }

    /// The path must commit, not fall back: a fallback would still store the rows (the general
    /// way), so this calls it directly and checks its own answer.
    #[tokio::test]
    async fn a_batch_of_new_requests_commits_in_two_round_trips_with_its_jobs_and_events() {
        let (store, admin, name) = fresh_store("batch").await;
        let pool = store.db.get_postgres_connection_pool();

        let batch = [
            intake("U1", Some(5)),
            intake("U2", Some(5)),
            intake("U3", None),
        ];
        let created = create(pool, &SpareIds::default(), &batch)
            .await
            .unwrap_or_else(|e| panic!("the chained path failed: {e}"));
        let ids = stored(&created);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in order: {ids:?}");
        assert_stored(&store, &ids, &["U1", "U2", "U3"]).await;

        // A person over their cap is refused here, and not stored.
        let capped = [intake("U4", Some(0)), intake("U5", Some(1))];
        let created = create(pool, &SpareIds::default(), &capped)
            .await
            .expect("chained");
        assert!(matches!(
            created[0],
            Created::TooMany {
                open: 0,
                max_open: 0
            }
        ));
        assert!(matches!(created[1], Created::Stored(_)));
        // U5 again: over the cap of one now that the first is open.
        let created = create(
            pool,
            &SpareIds::default(),
            &[intake("U5", Some(1)), intake("U6", Some(1))],
        )
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
            create(pool, &SpareIds::default(), &again).await,
            Err(NotChained::AlreadyOpen)
        ));
        let (requests, orphans) = rows(&store).await;
        assert_eq!(requests, 5, "U1-U3, U5, U6; not U4, U7 nor a second U1");
        assert_eq!(
            orphans, 10,
            "two jobs per stored request, none for the failed statement"
        );

        drop_database(store, &admin, &name).await;
    }
}
