//! The only module that knows sea-orm. One method per operation; every state change is one
//! guarded statement (`… WHERE state IN (…)`) inside a transaction with its side effects (jobs,
//! audit events), so two clicks or two replicas cannot both win and a crash loses nothing.
//!
//! - [`requests`]: requests, guarded transitions, grants, the audit trail.
//! - [`decisions`]: approvals and denials, one per person, in one transaction each.
//! - [`queue`]: the durable job queue: lanes, claims, leases, retries.
//! - `writer`: group commit: concurrent transitions applied together in one transaction.

pub mod audit;
mod batch;
mod bundles;
mod chained;
mod commit;
pub mod decisions;
pub mod entities;
mod extensions;
#[cfg(test)]
mod fixtures;
mod holds;
mod inline;
mod lookups;
pub mod marks;
pub mod queue;
pub mod requests;
mod shapes;
mod spare_ids;
mod transition;
mod unnest;
mod writer;

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use migration::MigratorTrait;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr, SqlErr,
    Statement,
};

use crate::config::UserError;
pub use bundles::{BundleSpec, NewMember};
pub use decisions::Verdict;
pub use entities::{
    approval::Model as Approval, audit::Model as AuditEvent, grant::Model as Grant,
    job::Model as JobRow, request::Model as Request,
};
pub use extensions::Extension;
pub use holds::{Join, Leave};
pub use lookups::Waiting;
pub use queue::{Claim, LaneStats};
pub use requests::{GrantChange, NewAudit, NewGrant, NewRequest, NotCreated, Transition, audit};
pub use writer::{TooSlow, WRITE_DEADLINE};

/// SQLite waits this long for a lock held by another process (`jitbot migrate`) before failing.
pub(super) const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections to a PostgreSQL store; the scheduler's lanes and the HTTP edge share them. Each
/// keeps buffers as large as the largest batch it carried, so more connections cost memory
/// (measured: 24 took an expiry storm to 76 MB, 8 to 60 MB) for no throughput on a small host.
const PG_POOL: u32 = 8;
/// Prepared statements kept per PostgreSQL connection. Batches make statements of many shapes (a
/// multi-row insert per batch size, an `IN` list per length); sqlx's default of 100 would parse
/// the common ones again and again. A PostgreSQL statement lives on the server; here it costs
/// only its description.
const STATEMENT_CACHE: usize = 250;
/// Prepared statements kept by SQLite's write connection and by each reader. A SQLite statement
/// is compiled in this process, a multi-row insert or a long `IN` list tens of kilobytes: 250
/// per connection held ~10 MB through an expiry storm and took its peak RSS from 62 to 73 MB
/// (measured). Preparing one again costs tens of microseconds; the new requests' inserts are
/// prepared per batch anyway (`inline`).
const SQLITE_WRITER_STATEMENTS: usize = 64;
const SQLITE_READER_STATEMENTS: usize = 32;
/// Page cache of each SQLite connection, in KiB (SQLite's default is 2,000 per connection). The
/// caches filled with a large store and were most of the memory that grew with it: with a
/// million requests stored, anonymous memory rose by ~8 MB over the empty store's. A page a
/// connection does not keep is read again from the operating system's cache, which holds the
/// file anyway. The writer keeps more: its inserts walk the same index pages batch after batch.
/// Measured with a million stored (`cargo bench --bench footprint`): anonymous memory 19.2 MB
/// with the defaults, 12.5 MB with 512 KiB readers, 11.2 MB with a 1 MiB writer too; the ack
/// latency within the run's noise.
const SQLITE_READER_CACHE_KIB: u32 = 512;
pub(super) const SQLITE_WRITER_CACHE_KIB: u32 = 1_024;
/// Refreshes the planner's statistics of every table on PostgreSQL.
const ANALYZE: &str = "ANALYZE requests, approvals, grants, jobs, audit_events";
/// Batches the writer commits at once on PostgreSQL, each on a connection of its own (the
/// server commits them together; SQLite has one write lock, so one batch at a time there). The
/// second and third start only beside a batch that is slow or behind a long queue: while
/// commits flow, one at a time makes bigger batches (measured: 4,660 → 5,140 requests/s, means
/// of alternated runs).
const PG_WRITER_BATCHES: u32 = 3;
/// Reader connections to a SQLite store (WAL lets them read while the one writer writes).
const SQLITE_READERS: u32 = 4;

/// The writer's PostgreSQL connections are tested (a round trip) before use only once idle this
/// long. Under load each is handed out again within milliseconds, and a test before every batch
/// was one round trip of each commit's two: without it, batches committed in 1.8 ms instead of
/// 2.2 and the bench's load ran at 6,244 requests/s instead of 5,188 (means of three alternated
/// runs, 2026-12-07). sqlx still tests each connection as it comes back, and closes it if that
/// fails; one broken since fails its batch like any store error: retried write by write, and
/// answered "try again" if the store is down.
const PG_WRITER_TEST_IDLE: Duration = Duration::from_secs(1);

/// Opens a pool of at most `max` connections to the store at `url`; on SQLite each keeps up to
/// `sqlite_statements` prepared statements and, given `sqlite_cache_kib`, a page cache that size.
/// A PostgreSQL connection is tested before each use, or with `test_idle`, only once idle that
/// long.
async fn open(
    url: &str,
    max: u32,
    sqlite_statements: usize,
    sqlite_cache_kib: Option<u32>,
    test_idle: Option<Duration>,
) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_string());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(15))
        .max_connections(max)
        // A SQLite connection is a file, not a socket that can drop: no test query (a round
        // trip to its thread) before each use.
        .test_before_acquire(!url.starts_with("sqlite:"));
    if let Some(idle) = test_idle.filter(|_| !url.starts_with("sqlite:")) {
        options.test_before_acquire_if_idle_for(idle);
    }
    options
        .map_sqlx_sqlite_opts(move |o| {
            let o = o
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
                .statement_cache_capacity(sqlite_statements)
                // Statement journals (a multi-row insert inside a transaction keeps one) in
                // memory, not in a temporary file opened, written and deleted per statement.
                .pragma("temp_store", "memory");
            match sqlite_cache_kib {
                // Negative: a size in KiB, not a number of pages.
                Some(kib) => o.pragma("cache_size", format!("-{kib}")),
                None => o,
            }
        })
        .map_sqlx_postgres_opts(|o| o.statement_cache_capacity(STATEMENT_CACHE));
    let mut db = Database::connect(options)
        .await
        .with_context(|| format!("cannot open the database at {}", redact_url(url)))?;
    if let Some(recorded) = RECORDED.get() {
        db.set_metric_callback(move |info| {
            recorded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(info.statement.sql.clone())
                .or_insert_with(|| info.statement.clone());
        });
    }
    Ok(db)
}

#[derive(Clone)]
pub struct Store {
    /// Writes, and transactions that read then write. SQLite: one connection, so writers never
    /// wait on each other's locks (SQLite's busy handler sleeps in steps of up to 100 ms).
    db: DatabaseConnection,
    /// Plain reads. SQLite: a small pool beside the writer; PostgreSQL: the same pool.
    read: DatabaseConnection,
    /// Lease renewals. PostgreSQL: a connection of their own, so a busy pool cannot make a live
    /// worker's leases run out; SQLite: the writer.
    lease: DatabaseConnection,
    backend: DatabaseBackend,
    /// Applies transitions, many per transaction.
    writer: writer::Writer,
}

/// Holds the SQLite store for this process: a second `jitbot serve` on the same file refuses to
/// start. Released when dropped.
pub struct SingleProcess {
    _file: File,
    pub path: PathBuf,
}

fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// Distinct statements sent to any store of this process, once [`record_statements`] is called.
static RECORDED: std::sync::OnceLock<std::sync::Mutex<HashMap<String, Statement>>> =
    std::sync::OnceLock::new();

/// From now on, every store this process opens keeps each distinct statement it sends (SQL and
/// one set of its values), for checking their plans with `EXPLAIN` (see `tests/plans.rs`).
pub fn record_statements() {
    RECORDED.get_or_init(Default::default);
}

/// The statements recorded so far (see [`record_statements`]).
pub fn recorded_statements() -> Vec<Statement> {
    RECORDED
        .get()
        .map(|r| {
            r.lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// A PostgreSQL URL for a server on this host (127.0.0.1, ::1, localhost) that names no
/// `sslmode` gets `sslmode=disable`: sqlx's default (`prefer`) would encrypt every message to a
/// server one hop away, for no protection (`prefer` falls back to plain text anyway), at a cost
/// measured in the README. Any other URL is left as it is.
pub fn loopback_without_tls(url: &str) -> String {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return url.to_string();
    };
    if url.contains("sslmode=") {
        return url.to_string();
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "::1") {
        return url.to_string();
    }
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}sslmode=disable")
}

/// How long the first connection may take before `connect` says the database is unreachable.
const PROBE_DEADLINE: Duration = Duration::from_secs(5);

/// The file of a `sqlite:` URL (`None` for an in-memory database or another scheme).
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
}

/// One direct connection attempt, so an unreachable database is reported at once with its real
/// cause ("Connection refused", "password authentication failed", a missing directory), once,
/// instead of after a pool's whole acquire timeout as "pool timed out".
async fn probe(url: &str) -> anyhow::Result<()> {
    use sea_orm::sqlx::Connection;
    let unreachable = |cause: String| {
        crate::config::UserError(format!(
            "cannot open the database at {}: {cause}",
            redact_url(url)
        ))
    };
    if let Some(file) = sqlite_file(url) {
        let creates = url.contains("mode=rwc");
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if creates && !dir.is_dir() {
            return Err(unreachable(format!(
                "the directory {} does not exist; create it (mkdir -p {}) or point JIT_DATABASE_URL at a file in an existing directory",
                dir.display(),
                dir.display()
            ))
            .into());
        }
        if !creates && !file.exists() {
            return Err(unreachable(format!(
                "{} does not exist; add ?mode=rwc to the URL to create it",
                file.display()
            ))
            .into());
        }
        return Ok(());
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options: sea_orm::sqlx::postgres::PgConnectOptions = url
            .parse()
            .map_err(|e| unreachable(format!("not a PostgreSQL URL ({e})")))?;
        return match tokio::time::timeout(
            PROBE_DEADLINE,
            sea_orm::sqlx::PgConnection::connect_with(&options),
        )
        .await
        {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
            Ok(Err(e)) => Err(unreachable(e.to_string()).into()),
            Err(_) => {
                Err(unreachable(format!("no answer within {} s", PROBE_DEADLINE.as_secs())).into())
            }
        };
    }
    Err(unreachable("JIT_DATABASE_URL must start with sqlite: or postgres://".to_string()).into())
}

impl Store {
    /// Connects to `sqlite://…` or `postgres://…`. SQLite runs in WAL mode with a busy timeout.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        let url = loopback_without_tls(url);
        probe(&url).await?;
        if url.starts_with("sqlite:") {
            let db = open(
                &url,
                1,
                SQLITE_WRITER_STATEMENTS,
                Some(SQLITE_WRITER_CACHE_KIB),
                None,
            )
            .await?;
            let read = if url.contains(":memory:") {
                db.clone()
            } else {
                open(
                    &url,
                    SQLITE_READERS,
                    SQLITE_READER_STATEMENTS,
                    Some(SQLITE_READER_CACHE_KIB),
                    None,
                )
                .await?
            };
            let for_writer = db.clone();
            Ok(Store {
                lease: db.clone(),
                read,
                writer: writer::Writer::start(async move { Ok(for_writer) }, 1, None).await?,
                db,
                backend: DatabaseBackend::Sqlite,
            })
        } else {
            let db = open(&url, PG_POOL, 0, None, None).await?;
            let lease = open(&url, 1, 0, None, None).await?;
            let writer_url = url.clone();
            // One connection more than batches: the statistics refresh runs beside them.
            let writer = writer::Writer::start(
                async move {
                    open(
                        &writer_url,
                        PG_WRITER_BATCHES + 1,
                        0,
                        None,
                        Some(PG_WRITER_TEST_IDLE),
                    )
                    .await
                },
                PG_WRITER_BATCHES as usize,
                Some(writer::Statistics {
                    // A tenth of the usual sample (the ten-minute round takes the full one):
                    // the plans need the tables' sizes, and a full sample of large tables took
                    // 400 ms of a core here against 60 ms, taken from the answers meanwhile.
                    sql: "SET LOCAL default_statistics_target = 10; \
                          ANALYZE requests, grants, approvals, jobs",
                    jobs_rows_sql: "SELECT reltuples::bigint FROM pg_class WHERE oid = 'jobs'::regclass",
                }),
            )
            .await?;
            Ok(Store {
                read: db.clone(),
                lease,
                writer,
                db,
                backend: DatabaseBackend::Postgres,
            })
        }
    }

    pub fn is_sqlite(&self) -> bool {
        self.backend == DatabaseBackend::Sqlite
    }

    /// Applies pending migrations, then gathers the planner's statistics: a database without
    /// them plans the hot queries badly until someone runs `ANALYZE` (and the PostgreSQL that
    /// jitbot shares may run without autovacuum).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.refuse_a_newer_schema().await?;
        migration::Migrator::up(&self.db, None)
            .await
            .context("applying migrations")?;
        self.refresh_statistics().await
    }

    /// A database another jitbot migrated further than this one knows (a replica of a newer
    /// version is running, or ran) is refused with a clear line, before anything is changed:
    /// this version would misread the newer schema.
    async fn refuse_a_newer_schema(&self) -> anyhow::Result<()> {
        let known: std::collections::BTreeSet<String> = migration::Migrator::migrations()
            .iter()
            .map(|m| m.name().to_string())
            .collect();
        let backend = self.db.get_database_backend();
        // No table yet: a new database.
        let Ok(rows) = self
            .db
            .query_all_raw(sea_orm::Statement::from_string(
                backend,
                "SELECT version FROM seaql_migrations",
            ))
            .await
        else {
            return Ok(());
        };
        let unknown: Vec<String> = rows
            .iter()
            .filter_map(|row| row.try_get::<String>("", "version").ok())
            .filter(|v| !known.contains(v))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(UserError(format!(
            "the database was migrated by a newer jitbot ({}): this version ({}) does not know that schema. Run the newer version on every replica.",
            unknown.join(", "),
            env!("CARGO_PKG_VERSION")
        ))
        .into())
    }

    /// `ANALYZE` on PostgreSQL, `PRAGMA optimize` on SQLite: after migrating, and now and then
    /// (see the scheduler's maintenance job).
    pub async fn refresh_statistics(&self) -> anyhow::Result<()> {
        let sql = if self.is_sqlite() {
            "PRAGMA optimize"
        } else {
            ANALYZE
        };
        self.db
            .execute_unprepared(sql)
            .await
            .context("refreshing the planner's statistics")?;
        Ok(())
    }

    pub async fn ping(&self) -> bool {
        self.read.ping().await.is_ok()
    }

    /// SQLite: takes the store for this process, or says which process has it. PostgreSQL, or an
    /// in-memory SQLite: nothing to hold (replicas share a PostgreSQL store).
    pub async fn single_process(&self) -> anyhow::Result<Option<SingleProcess>> {
        if !self.is_sqlite() {
            return Ok(None);
        }
        let rows = self
            .db
            .query_all_raw(Statement::from_string(
                self.backend,
                "PRAGMA database_list".to_string(),
            ))
            .await?;
        let file = rows
            .iter()
            .find(|r| r.try_get::<String>("", "name").ok().as_deref() == Some("main"))
            .and_then(|r| r.try_get::<String>("", "file").ok())
            .filter(|f| !f.is_empty());
        let Some(file) = file else { return Ok(None) };
        let path = PathBuf::from(format!("{file}.serve-lock"));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        match lock.try_lock() {
            Ok(()) => Ok(Some(SingleProcess { _file: lock, path })),
            Err(std::fs::TryLockError::WouldBlock) => Err(UserError(format!(
                "another `jitbot serve` is already using {file}; SQLite allows one per database file (run several replicas on PostgreSQL)"
            ))
            .into()),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

/// A database URL with any password replaced, fit for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{loopback_without_tls, redact_url};

    #[test]
    fn a_server_on_this_host_is_reached_without_tls_unless_the_url_says_otherwise() {
        assert_eq!(
            loopback_without_tls("postgres://jit:pw@127.0.0.1:5432/jit"),
            "postgres://jit:pw@127.0.0.1:5432/jit?sslmode=disable"
        );
        assert_eq!(
            loopback_without_tls("postgres://localhost/jit?application_name=x"),
            "postgres://localhost/jit?application_name=x&sslmode=disable"
        );
        assert_eq!(
            loopback_without_tls("postgresql://u@[::1]:5432/jit"),
            "postgresql://u@[::1]:5432/jit?sslmode=disable"
        );
        for kept in [
            "postgres://jit@127.0.0.1/jit?sslmode=require",
            "postgres://jit@db.internal:5432/jit",
            "postgres://jit@10.0.0.5/jit",
            "sqlite://jitbot.db?mode=rwc",
        ] {
            assert_eq!(loopback_without_tls(kept), kept);
        }
    }

    /// What every SQLite connection runs with: durable commits on all of them, and small page
    /// caches.
    #[tokio::test]
    async fn sqlite_connections_keep_small_page_caches_and_commit_durably() {
        use sea_orm::{ConnectionTrait, Statement};
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let store = super::Store::connect(&url).await.expect("open SQLite");
        let pragma = |db: &sea_orm::DatabaseConnection, name: &str| {
            let (db, sql) = (db.clone(), format!("PRAGMA {name}"));
            async move {
                db.query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                    .await
                    .expect("a pragma answers")
                    .expect("one row")
                    .try_get_by_index::<i64>(0)
                    .expect("a number")
            }
        };
        // Two at once, so the pool hands out a second reader too.
        let (a, b) = tokio::join!(
            pragma(&store.read, "cache_size"),
            pragma(&store.read, "cache_size")
        );
        let kib = -i64::from(super::SQLITE_READER_CACHE_KIB);
        assert_eq!((a, b), (kib, kib), "readers: KiB, written negative");
        assert_eq!(
            pragma(&store.db, "cache_size").await,
            -i64::from(super::SQLITE_WRITER_CACHE_KIB),
            "the writer"
        );
        // 2 is FULL: an fsync at every commit.
        assert_eq!(pragma(&store.db, "synchronous").await, 2);
        assert_eq!(pragma(&store.read, "synchronous").await, 2);
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://jit:s3cret@db:5432/jit"),
            "postgres://jit:***@db:5432/jit"
        );
        assert_eq!(
            redact_url("sqlite://jitbot.db?mode=rwc"),
            "sqlite://jitbot.db?mode=rwc"
        );
    }
}
