//! Database access for both backends through one `MultiConnection`.
//!
//! `MultiConnection::establish` tries each backend in turn and swallows the real error, so the
//! pool uses its own manager that dispatches on the URL scheme and reports what went wrong.

pub mod admin_keys;
pub mod alerts;
pub mod carriers;
pub mod compartments;
pub mod deadlines;
pub mod device_calls;
pub mod direct;
pub mod faults;
pub mod inbound;
pub mod interrupted;
pub mod journal;
pub mod local_lists;
pub mod locker_carriers;
pub mod lockers;
pub mod lockouts;
pub mod notifications;
pub mod outbox;
pub mod page;
pub mod parcels;
pub mod quotas;
pub mod recipients;
pub mod remote_opens;
pub mod schema;
pub mod sites;
pub mod size_classes;
pub mod ts;
pub mod wake;
pub mod writer;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::error::AppError;

pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Sqlite(diesel::SqliteConnection),
    Pg(diesel::PgConnection),
}

/// The backend type of `DbConn`, for boxed queries.
pub type DbBackend = <DbConn as diesel::Connection>::Backend;

pub type Pool = r2d2::Pool<ConnectionManager>;
pub type PooledConn = r2d2::PooledConnection<ConnectionManager>;

/// Which backend a database URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database URL, parsed once at the edge.
#[derive(Clone)]
pub struct DatabaseUrl {
    backend: Backend,
    /// What the driver is given: a path for SQLite, the URL (with a connect timeout) for PostgreSQL.
    target: String,
    /// Host (PostgreSQL) or path (SQLite), safe to print: no password.
    display: String,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}({})", self.backend, self.display)
    }
}

impl DatabaseUrl {
    pub fn parse(raw: &str, connect_timeout: Duration) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            let mut url = url::Url::parse(raw).map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
            let host = url.host_str().unwrap_or("localhost").to_string();
            let port = url.port().unwrap_or(5432);
            if !url.query_pairs().any(|(k, _)| k == "connect_timeout") {
                let secs = connect_timeout.as_secs().max(1).to_string();
                url.query_pairs_mut().append_pair("connect_timeout", &secs);
            }
            let db = url.path().trim_start_matches('/').to_string();
            Ok(Self {
                backend: Backend::Postgres,
                target: url.to_string(),
                display: format!("postgres://{host}:{port}/{db}"),
            })
        } else {
            let path = raw
                .strip_prefix("sqlite://")
                .or_else(|| raw.strip_prefix("sqlite:"))
                .unwrap_or(raw);
            if path.is_empty() {
                return Err("empty SQLite path".into());
            }
            if raw.contains("://") && !raw.starts_with("sqlite://") {
                return Err(format!(
                    "unsupported database URL scheme in {:?}: use sqlite://PATH or postgres://",
                    raw.split("://").next().unwrap_or("")
                ));
            }
            Ok(Self {
                backend: Backend::Sqlite,
                target: path.to_string(),
                display: path.to_string(),
            })
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Printable description (never contains the password).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The raw target, for tests and tools that need it.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn establish(&self) -> Result<DbConn, String> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = diesel::SqliteConnection::establish(&self.target)
                    .map_err(|e| format!("cannot open SQLite database {}: {e}", self.display))?;
                // WAL lets readers run beside the writer; the busy timeout makes writers queue
                // instead of failing with SQLITE_BUSY; foreign keys are off by default in SQLite.
                conn.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                )
                .map_err(|e| format!("cannot configure SQLite database {}: {e}", self.display))?;
                Ok(DbConn::Sqlite(conn))
            }
            Backend::Postgres => diesel::PgConnection::establish(&self.target)
                .map(DbConn::Pg)
                .map_err(|e| {
                    format!(
                        "cannot connect to PostgreSQL at {}: {}",
                        self.display,
                        e.to_string().trim()
                    )
                }),
        }
    }
}

/// r2d2 manager that knows the backend up front.
pub struct ConnectionManager {
    url: DatabaseUrl,
    /// SQLite readers beside the writer: a write through one fails loudly instead of waiting
    /// for the writer's lock.
    read_only: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConnectError(String);

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = DbConn;
    type Error = ConnectError;

    fn connect(&self) -> Result<DbConn, ConnectError> {
        let mut conn = self.url.establish().map_err(ConnectError)?;
        if self.read_only && self.url.backend == Backend::Sqlite {
            // A reader's page cache is discarded whenever the writer has committed since its
            // last read, which under load is nearly every read: a small one (1 MiB, SQLite's
            // default is 2) costs nothing and keeps 16 readers from holding 32 MiB of stale
            // pages. The operating system's page cache holds the file either way.
            conn.batch_execute("PRAGMA query_only = ON; PRAGMA cache_size = -1024")
                .map_err(|e| ConnectError(e.to_string()))?;
        }
        Ok(conn)
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), ConnectError> {
        match conn {
            // A server connection can die while idle; a SQLite file connection cannot.
            DbConn::Pg(_) => conn.batch_execute("SELECT 1").map_err(|e| ConnectError(e.to_string())),
            DbConn::Sqlite(_) => Ok(()),
        }
    }

    /// A connection given back inside a transaction (work that panicked half-way, or returned
    /// without committing) is discarded, never lent out again: its next user would otherwise
    /// run inside someone else's transaction, and on SQLite hold the write lock for everyone.
    fn has_broken(&self, conn: &mut DbConn) -> bool {
        if std::thread::panicking() {
            return true;
        }
        match conn {
            // Every PostgreSQL transaction goes through diesel's transaction manager.
            DbConn::Pg(pg) => {
                use diesel::connection::{AnsiTransactionManager, TransactionManager};
                !matches!(
                    AnsiTransactionManager::transaction_manager_status_mut(pg).transaction_depth(),
                    Ok(None)
                )
            }
            // SQLite transactions are begun by hand (`BEGIN IMMEDIATE`, see write_transaction):
            // ask SQLite. A deferred BEGIN takes no lock; inside a transaction it fails.
            DbConn::Sqlite(_) => conn.batch_execute("BEGIN; ROLLBACK").is_err(),
        }
    }
}

/// Opens the pool and applies pending migrations.
///
/// The first connection is made directly so that an unreachable database fails within the
/// connect timeout with the driver's own message, instead of r2d2's generic one.
pub fn connect(url: &DatabaseUrl, pool_size: u32, connect_timeout: Duration) -> Result<Pool, String> {
    connect_pool(url, pool_size, connect_timeout, false)
}

/// [`connect`] for the server: on SQLite the pool is for reads only, beside the [`writer`].
pub fn connect_readers(url: &DatabaseUrl, pool_size: u32, connect_timeout: Duration) -> Result<Pool, String> {
    connect_pool(url, pool_size, connect_timeout, url.backend == Backend::Sqlite)
}

fn connect_pool(url: &DatabaseUrl, pool_size: u32, connect_timeout: Duration, read_only: bool) -> Result<Pool, String> {
    if url.backend == Backend::Sqlite {
        if let Some(parent) = std::path::Path::new(&url.target).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create directory {}: {e}", parent.display()))?;
            }
        }
    }
    let mut first = url.establish()?;
    run_migrations(&mut first)?;
    drop(first);
    r2d2::Pool::builder()
        .max_size(pool_size)
        .min_idle(Some(1))
        .connection_timeout(connect_timeout.max(Duration::from_secs(1)))
        // No test query on every checkout (it was a round trip per operation on PostgreSQL);
        // a connection that died while idle fails its operation, is found broken on return
        // and replaced.
        .test_on_check_out(false)
        .error_handler(Box::new(r2d2::LoggingErrorHandler))
        .build(ConnectionManager {
            url: url.clone(),
            read_only,
        })
        .map_err(|e| format!("cannot open database pool for {}: {e}", url.display))
}

/// Applies any embedded migrations not yet applied; returns how many ran.
pub fn run_migrations(conn: &mut DbConn) -> Result<usize, String> {
    let applied = match conn {
        DbConn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
        DbConn::Pg(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|v| v.len()),
    };
    applied.map_err(|e| format!("migration failed: {e}"))
}

/// Called with what a unit of work queued for the outbox actors, after the work is done.
pub type CommitHook = Box<dyn Fn(wake::Wakeups) + Send + Sync>;

/// Shared handle the HTTP layer and actors use to run blocking diesel work off the async threads.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    backend: Backend,
    /// SQLite's one writer; `None` on PostgreSQL, where pooled connections write under row locks.
    writer: Option<writer::Writer>,
    on_commit: Arc<OnceLock<CommitHook>>,
}

impl Db {
    pub fn new(pool: Pool, backend: Backend) -> Self {
        Self {
            pool,
            backend,
            writer: None,
            on_commit: Arc::default(),
        }
    }

    /// Sends every write through `writer` (SQLite); the pool then serves reads.
    pub fn with_writer(mut self, writer: writer::Writer) -> Self {
        self.writer = Some(writer);
        self
    }

    pub fn writer(&self) -> Option<&writer::Writer> {
        self.writer.as_ref()
    }

    /// Sets, once, what to call after a unit of work that queued webhooks or notifications (the
    /// hub, which wakes their actors). Work that failed after queueing calls it too: a
    /// needless wake costs one read of the outbox, a missed one a scan interval.
    pub fn on_commit(&self, hook: CommitHook) {
        if self.on_commit.set(hook).is_err() {
            tracing::warn!("database commit hook set twice; the first one stays");
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs `f`, which may write, on its own: in a savepoint of the writer's next batch on
    /// SQLite, with a pooled connection on PostgreSQL.
    pub async fn run<T, F>(&self, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut DbConn) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        self.run_as(f).await
    }

    /// [`Db::run`] for callers with their own error type (the locker actor's refusals).
    pub async fn run_as<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<AppError> + From<diesel::result::Error> + Send + 'static,
    {
        match &self.writer {
            Some(w) => self.written(w, f).await,
            None => self.pooled(f).await,
        }
    }

    /// Runs `f`, which only reads, with a pooled connection; on SQLite it never waits for the
    /// writer (WAL) and may see the state one commit behind. Whatever decides a state change
    /// reads inside the writer's transaction ([`Db::transaction`]) or from an actor's memory;
    /// listings, lookups and authentication read here.
    pub async fn read<T, F>(&self, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut DbConn) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        self.pooled(f).await
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    async fn pooled<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<AppError> + Send + 'static,
    {
        let pool = self.pool.clone();
        let (result, queued) = tokio::task::spawn_blocking(move || {
            let _ = wake::take(); // nothing left over from other work on this thread
            let result = pool
                .get()
                .map_err(|e| E::from(AppError::Unavailable(e.to_string())))
                .and_then(|mut conn| f(&mut conn));
            (result, wake::take())
        })
        .await
        .map_err(|e| E::from(AppError::Internal(format!("database task failed: {e}"))))?;
        self.wake(queued);
        result
    }

    async fn written<T, E, F>(&self, w: &writer::Writer, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<AppError> + From<diesel::result::Error> + Send + 'static,
    {
        let (result, queued) = w.submit(f).await;
        self.wake(queued);
        result
    }

    fn wake(&self, queued: wake::Wakeups) {
        if !queued.is_empty() {
            if let Some(hook) = self.on_commit.get() {
                hook(queued);
            }
        }
    }

    /// [`Db::transaction`] for callers with their own error type.
    pub async fn transaction_as<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<AppError> + From<diesel::result::Error> + Send + 'static,
    {
        match &self.writer {
            // The writer's savepoint is the operation's transaction.
            Some(w) => self.written(w, f).await,
            None => self.pooled(move |conn| write_transaction(conn, f)).await,
        }
    }

    /// Runs `f` inside one transaction, so the state change and its outbox rows commit together.
    pub async fn transaction<T, F>(&self, f: F) -> Result<T, AppError>
    where
        F: FnOnce(&mut DbConn) -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        self.transaction_as(f).await
    }
}

/// Runs `f` in a transaction that may write. On SQLite it begins `IMMEDIATE`: a deferred
/// transaction that reads first cannot wait for the write lock in WAL mode (it fails at once
/// with "database is locked"), while an immediate one queues on the busy timeout.
pub fn write_transaction<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    match conn {
        DbConn::Pg(_) => conn.transaction(f),
        // Already inside the writer's batch: the operation's savepoint is its transaction.
        DbConn::Sqlite(_) if writer::in_batch() => savepoint(conn, f),
        DbConn::Sqlite(_) => {
            conn.batch_execute("BEGIN IMMEDIATE")?;
            match f(conn) {
                Ok(v) => match conn.batch_execute("COMMIT") {
                    Ok(()) => Ok(v),
                    Err(e) => {
                        let _ = conn.batch_execute("ROLLBACK");
                        Err(e.into())
                    }
                },
                Err(e) => {
                    let _ = conn.batch_execute("ROLLBACK");
                    Err(e)
                }
            }
        }
    }
}

/// Runs `f` inside a savepoint of the transaction in progress: if `f` fails, what it wrote is
/// undone and the transaction goes on, so one operation of several in a transaction (one
/// interrupted session decided at a boot, later one of a batch) can be refused alone.
/// Plain SQL rather than nested `transaction()`: on SQLite the outer transaction is begun by
/// hand (`write_transaction`), which diesel's transaction manager does not know about.
pub fn savepoint<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    conn.batch_execute("SAVEPOINT lh_op")?;
    match f(conn) {
        Ok(v) => {
            conn.batch_execute("RELEASE SAVEPOINT lh_op")?;
            Ok(v)
        }
        Err(e) => {
            conn.batch_execute("ROLLBACK TO SAVEPOINT lh_op; RELEASE SAVEPOINT lh_op")?;
            Err(e)
        }
    }
}

/// Current time as the naive UTC timestamp both backends store.
pub fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// RFC 3339 UTC text of a stored timestamp, as clients and webhooks see it.
pub fn ts_string(t: chrono::NaiveDateTime) -> String {
    crate::domain::effects::rfc3339(t)
}

/// A new time-ordered id: sorts by creation, so it doubles as the pagination cursor.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_is_the_default_scheme() {
        let url = DatabaseUrl::parse("sqlite://data/lockerhub.db", Duration::from_secs(3)).unwrap();
        assert_eq!(url.backend(), Backend::Sqlite);
        assert_eq!(url.display(), "data/lockerhub.db");
    }

    #[test]
    fn postgres_url_hides_password_and_gets_timeout() {
        let url = DatabaseUrl::parse("postgres://u:hunter2@db.example:6432/lh", Duration::from_secs(3)).unwrap();
        assert_eq!(url.display(), "postgres://db.example:6432/lh");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(url.target().contains("connect_timeout=3"));
        assert!(DatabaseUrl::parse("mysql://x", Duration::from_secs(1)).is_err());
    }
}
