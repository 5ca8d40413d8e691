//! SQLite: a batch of new requests committed on the writer's own thread, straight through the
//! SQLite library. sqlx runs every SQLite connection on a thread of its own and hands each
//! statement, and each row a statement returns, across threads: measured under the bench's load,
//! a batch of eight requests paid about fourteen such hand-overs (each an `eventfd` write, a
//! futex wake and two context switches) and the two cores sat 45 % idle while the writer
//! waited for them. Here the writer takes sqlx's one write connection from its pool for the
//! whole batch, so nothing else in this process writes meanwhile, and runs the batch's
//! statements itself on a connection of its own to the same file ([`Own`]), kept with its
//! prepared statements from batch to batch: no hand-over at all. (An in-memory database has no
//! file another connection could open: there the writer borrows sqlx's connection for the
//! batch, one hand-over.)
//!
//! The rows are the ones [`super::batch::create_batch`] writes, built by the same builders, with
//! two differences in how: each table's one-row statement is prepared once per batch and run per
//! row ([`Prepared`]), and the requests' audit events are linked into the chain as they are
//! written ([`insert_sealed`]). A batch this module does not take (bundles, requests born
//! closed) goes the general way; a batch that fails here is rolled back whole and retried there,
//! write by write.

use std::collections::HashMap;

use rusqlite::types::Value as Lite;
use sea_orm::{ActiveValue::Set, DbBackend, DbErr, EntityTrait, QueryTrait, Statement};

use super::Request;
use super::audit::{move_head, seal_new};
use super::batch::{capped, followers, over_caps};
use super::entities::{audit, grant, job, request};
use super::queue::job_rows;
use super::requests::{Created, key_of, open_counts_query, request_row};
use super::writer::{Intake, WRITE_DEADLINE};

/// Whether this module commits `intake`: a new open request with no bundle to insert beside it.
pub(super) fn takes(intake: &Intake) -> bool {
    intake.members.is_empty() && intake.state.is_open()
}

/// Why a batch was not committed here.
pub(super) enum NotCommitted {
    /// The connection did not come free within [`WRITE_DEADLINE`].
    TooSlow,
    /// It failed (and was rolled back): retry it the general way.
    Failed(DbErr),
}

/// The writer's own connection to the store's file, kept from batch to batch with its prepared
/// statements. Used only while the writer holds sqlx's one write connection, so it writes only
/// when nothing else in this process does, exactly as that connection would. A statement
/// prepared on the lent connection could not outlive the batch: sqlx may close that connection
/// (idle timeout, lifetime) and open another, and a statement kept on it would dangle.
#[derive(Default)]
pub(super) struct Own(std::sync::Mutex<Option<rusqlite::Connection>>);

/// Prepared statements the writer's own connection keeps: every shape of its batches (one
/// insert per table, the cap's count in its few padded lengths, the chain's ends).
const OWN_STATEMENTS: usize = 32;

/// Opens the file sqlx's write connection has open (`path`, as SQLite names it) for the writer,
/// as [`super::open`] sets up sqlx's: durable commits, foreign keys, statement journals in
/// memory, the writer's page cache. The journal mode is the file's own (WAL, set by sqlx).
fn open_own(path: &str) -> Result<rusqlite::Connection, DbErr> {
    use rusqlite::OpenFlags;
    let lite = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(lite_err)?;
    lite.busy_timeout(super::SQLITE_BUSY_TIMEOUT)
        .map_err(lite_err)?;
    lite.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
         PRAGMA cache_size = -{};",
        super::SQLITE_WRITER_CACHE_KIB
    ))
    .map_err(lite_err)?;
    let journal: String = lite
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .map_err(lite_err)?;
    if !journal.eq_ignore_ascii_case("wal") {
        return Err(DbErr::Custom(format!(
            "the store's journal mode is {journal}, not WAL"
        )));
    }
    lite.set_prepared_statement_cache_capacity(OWN_STATEMENTS);
    Ok(lite)
}

/// Commits `intakes` (each [`takes`]) in one transaction, while holding the store's write
/// connection: on the writer's own connection to the same file ([`Own`]), or, for a database
/// with no file (in memory, where another connection would open another database), on that
/// write connection itself.
pub(super) async fn create(
    pool: &sea_orm::sqlx::SqlitePool,
    own: &Own,
    intakes: &[Intake],
) -> Result<Vec<Created>, NotCommitted> {
    let mut conn = match tokio::time::timeout(WRITE_DEADLINE, pool.acquire()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(NotCommitted::Failed(DbErr::Custom(e.to_string()))),
        Err(_) => return Err(NotCommitted::TooSlow),
    };
    {
        // Not held across an await: the batch below runs on this thread, start to end.
        let mut kept = own
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(lite) = kept.as_ref() {
            let result = in_transaction(lite, intakes);
            if result.is_err() {
                // Whatever went wrong, the next batch starts on a fresh connection.
                *kept = None;
            }
            return result.map_err(NotCommitted::Failed);
        }
    }
    let mut handle = conn
        .lock_handle()
        .await
        .map_err(|e| NotCommitted::Failed(DbErr::Custom(e.to_string())))?;
    let raw = handle.as_raw_handle();
    // SAFETY: `handle` locks the connection away from sqlx's worker thread until it is dropped
    // (sqlx's own guarantee for `LockedSqliteHandle`), and the `rusqlite::Connection` made here
    // is dropped below, before that lock. `from_handle` does not take ownership:
    // dropping it finalizes the statements it prepared and leaves the connection open.
    let lent = unsafe { rusqlite::Connection::from_handle(raw.as_ptr()) }
        .map_err(|e| NotCommitted::Failed(lite_err(e)))?;
    let file = lent
        .path()
        .filter(|path| !path.is_empty())
        .map(str::to_string);
    let result = match file {
        Some(path) => match open_own(&path) {
            Ok(lite) => {
                drop(lent);
                drop(handle);
                let result = in_transaction(&lite, intakes);
                if result.is_ok() {
                    *own.0
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(lite);
                }
                return result.map_err(NotCommitted::Failed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not open the writer's own connection to the store; writing on the lent one");
                in_transaction(&lent, intakes)
            }
        },
        None => in_transaction(&lent, intakes),
    };
    drop(lent);
    drop(handle);
    drop(conn);
    result.map_err(NotCommitted::Failed)
}

/// `BEGIN IMMEDIATE` … `COMMIT`, or `ROLLBACK` on any failure. Waits for another process's
/// write lock (`jitbot migrate`) at most [`WRITE_DEADLINE`], not the connection's usual busy
/// timeout, which is restored after.
fn in_transaction(lite: &rusqlite::Connection, intakes: &[Intake]) -> Result<Vec<Created>, DbErr> {
    lite.busy_timeout(WRITE_DEADLINE).map_err(lite_err)?;
    let result = lite
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(lite_err)
        .and_then(|()| match statements(lite, intakes) {
            Ok(created) => match lite.execute_batch("COMMIT") {
                Ok(()) => Ok(created),
                Err(e) => {
                    let _ = lite.execute_batch("ROLLBACK");
                    Err(lite_err(e))
                }
            },
            Err(e) => {
                let _ = lite.execute_batch("ROLLBACK");
                Err(e)
            }
        });
    if let Err(e) = lite.busy_timeout(super::SQLITE_BUSY_TIMEOUT) {
        tracing::warn!(error = %e, "could not restore SQLite's busy timeout");
    }
    result
}

fn statements(lite: &rusqlite::Connection, intakes: &[Intake]) -> Result<Vec<Created>, DbErr> {
    let mut prepared = Prepared::new(lite);
    let capped = capped(intakes);
    let open: HashMap<String, u64> = if capped.is_empty() {
        HashMap::new()
    } else {
        let counts = open_counts_query(&capped).build(DbBackend::Sqlite);
        prepared
            .query(&counts, |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })?
            .into_iter()
            .map(|(who, n)| (who, n.max(0) as u64))
            .collect()
    };
    let over = over_caps(intakes, open);
    let mut inserted: HashMap<String, Request> = HashMap::new();
    for (intake, _) in intakes.iter().zip(&over).filter(|(_, over)| over.is_none()) {
        let mut row = request_row(&intake.new, intake.state, intake.now);
        let mut insert = request::Entity::insert(row.clone())
            .on_conflict_do_nothing_on([request::Column::OpenKey])
            .build(DbBackend::Sqlite);
        insert.sql.push_str(r#" RETURNING "id""#);
        let id = prepared.query(&insert, |row| row.get::<_, i32>(0))?;
        // Nothing returned: the person already has an open request for the resource.
        if let Some(id) = id.first() {
            row.id = Set(*id);
            let model = sea_orm::TryIntoModel::try_into_model(row)?;
            inserted.insert(key_of(&intake.new), model);
        }
    }
    let f = followers(intakes, &over, inserted);
    for row in f.grants {
        prepared.execute(&grant::Entity::insert(row).build(DbBackend::Sqlite))?;
    }
    if !f.jobs.is_empty() {
        let now = intakes.iter().map(|i| i.now).max().unwrap_or_default();
        for row in job_rows(&f.jobs, now)? {
            prepared.execute(&job::Entity::insert(row).build(DbBackend::Sqlite))?;
        }
    }
    if !f.audits.is_empty() {
        insert_sealed(&mut prepared, f.audits)?;
    }
    Ok(f.created)
}

fn lite_err(e: rusqlite::Error) -> DbErr {
    DbErr::Custom(format!("SQLite: {e}"))
}

/// A statement's values as SQLite takes them, the way sqlx binds them: booleans as 0 and 1.
fn values(statement: &Statement) -> Result<Vec<Lite>, DbErr> {
    use sea_orm::Value as V;
    let Some(values) = &statement.values else {
        return Ok(Vec::new());
    };
    values
        .0
        .iter()
        .map(|v| {
            Ok(match v {
                V::Bool(b) => b.map_or(Lite::Null, |b| Lite::Integer(i64::from(b))),
                V::TinyInt(n) => n.map_or(Lite::Null, |n| Lite::Integer(n.into())),
                V::SmallInt(n) => n.map_or(Lite::Null, |n| Lite::Integer(n.into())),
                V::Int(n) => n.map_or(Lite::Null, |n| Lite::Integer(n.into())),
                V::BigInt(n) => n.map_or(Lite::Null, Lite::Integer),
                V::TinyUnsigned(n) => n.map_or(Lite::Null, |n| Lite::Integer(n.into())),
                V::SmallUnsigned(n) => n.map_or(Lite::Null, |n| Lite::Integer(n.into())),
                V::Unsigned(n) => n.map_or(Lite::Null, |n| Lite::Integer(n.into())),
                V::String(s) => s.clone().map_or(Lite::Null, Lite::Text),
                other => {
                    return Err(DbErr::Custom(format!(
                        "a value this path does not bind: {other:?}"
                    )));
                }
            })
        })
        .collect()
}

/// The audit chain's last link, and the last event id SQLite has given (`AUTOINCREMENT` keeps it
/// in `sqlite_sequence`, so an id is never given twice, even after a delete).
const CHAIN_END: &str = r#"SELECT "last_seq", "last_hash", MAX(COALESCE((SELECT "seq" FROM "sqlite_sequence" WHERE "name" = 'audit_events'), 0), COALESCE((SELECT MAX("id") FROM "audit_events"), 0)) FROM "audit_head" WHERE "id" = 1"#;

/// Inserts `rows` already linked into the audit chain, and moves its head past them: the writer
/// holds SQLite's write lock, which any sealing needs, so nothing links events meanwhile. Left
/// to the sealer, they were each written twice, by a transaction per
/// [`super::audit::SEAL_BATCH`] events that took the one write connection from the writer.
fn insert_sealed(prepared: &mut Prepared<'_>, rows: Vec<audit::ActiveModel>) -> Result<(), DbErr> {
    let end = Statement::from_string(DbBackend::Sqlite, CHAIN_END);
    let found = prepared.query(&end, |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    let Some((last_seq, last_hash, last_id)) = found.into_iter().next() else {
        return Err(DbErr::Custom(
            "the audit chain's head row is missing (run jitbot migrate)".into(),
        ));
    };
    let (rows, (seq, hash)) = seal_new((last_seq, last_hash), last_id, rows)?;
    for row in rows {
        prepared.execute(&audit::Entity::insert(row).build(DbBackend::Sqlite))?;
    }
    match prepared.execute(&move_head(seq, hash).build(DbBackend::Sqlite))? {
        1 => Ok(()),
        n => Err(DbErr::Custom(format!(
            "moving the audit chain's head changed {n} rows"
        ))),
    }
}

/// A batch's statements, each taken once from the connection's cache however many rows it runs
/// for: a statement of one row run once per row, instead of a multi-row `INSERT` that SQLite
/// compiles for each batch size. Measured under the bench's load: 5,566 req/s with multi-row
/// inserts, 5,861 with these prepared once per batch (means of four alternated runs), when
/// compiling them was still ~14 % of the writer's time; kept on the writer's own connection
/// ([`Own`]) and compiled once, 9,380 against 7,690 on the lent one (means of three alternated
/// runs, 2026-12-07 evening, a faster host).
struct Prepared<'c> {
    lite: &'c rusqlite::Connection,
    by_sql: HashMap<String, rusqlite::CachedStatement<'c>>,
}

impl<'c> Prepared<'c> {
    fn new(lite: &'c rusqlite::Connection) -> Self {
        Prepared {
            lite,
            by_sql: HashMap::new(),
        }
    }

    fn get(&mut self, sql: &str) -> Result<&mut rusqlite::Statement<'c>, DbErr> {
        use std::collections::hash_map::Entry;
        Ok(match self.by_sql.entry(sql.to_string()) {
            Entry::Occupied(prepared) => prepared.into_mut(),
            Entry::Vacant(slot) => slot.insert(self.lite.prepare_cached(sql).map_err(lite_err)?),
        })
    }

    fn execute(&mut self, statement: &Statement) -> Result<usize, DbErr> {
        let values = values(statement)?;
        self.get(&statement.sql)?
            .execute(rusqlite::params_from_iter(values))
            .map_err(lite_err)
    }

    fn query<T>(
        &mut self,
        statement: &Statement,
        read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, DbErr> {
        let values = values(statement)?;
        let prepared = self.get(&statement.sql)?;
        let rows = prepared
            .query_map(rusqlite::params_from_iter(values), read)
            .map_err(lite_err)?;
        rows.collect::<Result<Vec<T>, _>>().map_err(lite_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{assert_stored, intake, sqlite_store};
    use sea_orm::{ConnectionTrait, PaginatorTrait};

    /// The path must commit, not fall back: a fallback would still store the rows (the general
    /// way), so this calls it directly and checks its own answer.
    #[tokio::test]
    async fn a_batch_of_new_requests_commits_on_the_writers_thread_with_its_jobs_and_events() {
        let (store, dir) = sqlite_store("inline").await;
        let pool = store.db.get_sqlite_connection_pool();
        let own = Own::default();

        let batch = [
            intake("U1", Some(5)),
            intake("U2", Some(5)),
            intake("U3", None),
        ];
        let created = match create(pool, &own, &batch).await {
            Ok(created) => created,
            Err(NotCommitted::TooSlow) => panic!("the write connection did not come free"),
            Err(NotCommitted::Failed(e)) => panic!("the inline path failed: {e}"),
        };
        let ids: Vec<i32> = created
            .iter()
            .map(|c| match c {
                Created::Stored(r) => {
                    assert_eq!(r.state, "pending");
                    assert_eq!(
                        r.open_key.as_deref(),
                        Some(format!("{}|app", r.requester).as_str())
                    );
                    r.id
                }
                _ => panic!("every request of the batch is new"),
            })
            .collect();
        assert_stored(&store, &ids, &["U1", "U2", "U3"]).await;
        // Written on the writer's own connection to the file, kept for the next batch, and as
        // durable as sqlx's: synchronous FULL, with foreign keys enforced.
        {
            let kept = own.0.lock().expect("not poisoned");
            let lite = kept.as_ref().expect("the writer keeps its own connection");
            let pragma = |name: &str| -> i64 {
                lite.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
                    .expect("pragma")
            };
            assert_eq!((pragma("synchronous"), pragma("foreign_keys")), (2, 1));
        }
        // Their events are linked as written: nothing left for the sealer, the chain holds.
        let chain = store.verify_audit().await.expect("verify");
        assert_eq!((chain.sealed, chain.unsealed, chain.broken), (3, 0, None));

        // Again for U1 (already open) and a U4 over a cap of zero: neither stored.
        let again = [intake("U1", Some(5)), intake("U4", Some(0))];
        let created = match create(pool, &own, &again).await {
            Ok(created) => created,
            Err(_) => panic!("the inline path failed"),
        };
        assert!(matches!(created[0], Created::AlreadyOpen));
        assert!(matches!(
            created[1],
            Created::TooMany {
                open: 0,
                max_open: 0
            }
        ));
        let requests = request::Entity::find()
            .count(&store.db)
            .await
            .expect("count");
        assert_eq!(requests, 3);

        // An event written unsealed (another way), then a batch linked as written, then the
        // sealer: one chain through all of them, each event once, none with an id given before.
        store
            .audit(
                None,
                crate::store::audit("U9", "reloaded", serde_json::json!({})),
                2_000,
            )
            .await
            .expect("an event the sealer links");
        match create(pool, &own, &[intake("U5", None)]).await {
            Ok(created) => assert!(matches!(created[0], Created::Stored(_))),
            Err(_) => panic!("the inline path failed"),
        }
        assert_eq!(store.seal_audit().await.expect("seal"), 1);
        let chain = store.verify_audit().await.expect("verify");
        assert_eq!((chain.sealed, chain.unsealed, chain.broken), (5, 0, None));
        let events = store.audit_events(None).await.expect("events");
        let ids: Vec<i32> = events.iter().map(|e| e.id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        let mut seqs: Vec<i64> = events.iter().filter_map(|e| e.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        // The connection is sqlx's again, and answers.
        store
            .db
            .execute_unprepared("SELECT 1")
            .await
            .expect("sqlx uses it after");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
