//! The one writer on SQLite, with group commit.
//!
//! SQLite lets one connection write at a time. With a pool of writers, each waits for the lock
//! in SQLite's busy handler, which sleeps rather than queues, and every commit pays its own
//! fsync. Here one connection on its own thread owns every write instead: operations from all
//! locker actors and HTTP handlers queue to it, and it runs what is queued in one
//! `BEGIN IMMEDIATE … COMMIT`, each operation in its own savepoint, so a refused or failing
//! operation rolls back alone and the others commit. A caller is answered only after the commit
//! that holds its operation (durable before acknowledged); if that commit fails, every
//! operation of the batch fails with a retryable `Unavailable` and nothing of it is kept, so
//! callers (which update their memory only on success) never disagree with the database.
//!
//! Bounds: a batch holds at most `max_batch` operations and stops taking more after
//! `max_batch_time`; the queue holds at most `queue` operations, and a full queue answers
//! `Overloaded` (503 `unavailable` on the wire) at once instead of growing.
//!
//! Checkpoints run off the request path: the writer's connection never checkpoints on its own
//! (`wal_autocheckpoint = 0`); when the WAL passes `checkpoint_bytes` after a commit it asks a
//! checkpointer thread, which has its own connection, for a passive checkpoint (it copies
//! pages beside the writer and never blocks it), and when the writer has been idle for a second
//! the checkpointer truncates the WAL.
//!
//! A passive checkpoint alone never lets the WAL start over under steady load: SQLite restarts
//! the log only when every frame has been copied back, and the writer appends new frames while
//! the checkpointer copies. The WAL then grew without bound (1.4 GB after 20 s at 800 deposits
//! a second), every page lookup searched a longer WAL index, and checkpoints ran back to back,
//! since the file never shrank below the threshold. So the checkpointer runs passive checkpoints
//! until what the writer appended during the last one is small, and then the writer, between two
//! batches, finishes with a restarting one (`wal_checkpoint(RESTART)`): only those frames are
//! left to copy, so the pause is short, and the next batch writes the log from its start. `journal_size_limit` then cuts the file back to a quarter of the
//! threshold, so the threshold measures new frames again.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;

use super::{savepoint, wake, DatabaseUrl, DbConn};
use crate::error::AppError;

/// How the writer batches and how durable a commit is.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub max_batch: usize,
    pub max_batch_time: Duration,
    pub queue: usize,
    pub checkpoint_bytes: u64,
    /// `FULL` (the default): a commit is on disk before anyone is answered, across a power
    /// cut too. `NORMAL` may lose the last commits on a power cut (never on a process crash).
    pub synchronous_full: bool,
    /// How long a batch waits for the write lock when another process holds it (a `lockerhub`
    /// command run beside the server); then its operations fail with a retryable error.
    pub busy_timeout: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_batch_time: Duration::from_millis(20),
            queue: 8192,
            checkpoint_bytes: 16 * 1024 * 1024,
            synchronous_full: true,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// What the finished operation is told once its batch is settled: `None` if the batch
/// committed, else why it did not.
type Finish = Box<dyn FnOnce(Option<&str>) + Send>;

/// One queued operation: run inside the batch's transaction, or refused without running (the
/// batch could not begin), so nothing of it is written outside a transaction.
trait Operation: Send {
    fn run(self: Box<Self>, conn: &mut DbConn) -> Finish;
    fn refuse(self: Box<Self>, why: &str);
}

type Job = Box<dyn Operation>;

type Answer<T, E> = tokio::sync::oneshot::Sender<(Result<T, E>, wake::Wakeups)>;

struct Op<F, T, E> {
    f: F,
    answer: Answer<T, E>,
}

impl<F, T, E> Operation for Op<F, T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<AppError> + From<diesel::result::Error> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut DbConn) -> Finish {
        let Op { f, answer } = *self;
        let _ = wake::take();
        let result = savepoint(conn, f);
        let queued = wake::take();
        Box::new(move |failed: Option<&str>| {
            let result = match (result, failed) {
                (Ok(_), Some(why)) => Err(E::from(AppError::Unavailable(why.to_string()))),
                (result, _) => result,
            };
            let _ = answer.send((result, queued));
        })
    }

    fn refuse(self: Box<Self>, why: &str) {
        let _ = self.answer.send((
            Err(E::from(AppError::Unavailable(why.to_string()))),
            wake::Wakeups::default(),
        ));
    }
}

/// Counters for the metrics endpoint and the benchmark.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub operations: AtomicU64,
    pub failed_batches: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Restarting checkpoints the writer ran, and how many of them let the WAL start over.
    pub restarts: AtomicU64,
    pub restarts_done: AtomicU64,
    /// Operations waiting in the queue now.
    pub queued: AtomicU64,
    /// Set by the checkpointer after a passive checkpoint: the writer finishes it with a
    /// restarting one between two batches.
    restart_due: AtomicBool,
}

/// Handle to the writer thread; cheap to clone. The thread ends when the last handle is gone.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<Job>,
    stats: Arc<WriterStats>,
}

thread_local! {
    /// Set on the writer's thread while a batch's transaction is open, so that work which
    /// begins its own transaction (`write_transaction`) nests in a savepoint instead.
    static IN_BATCH: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside the writer's open transaction.
pub fn in_batch() -> bool {
    IN_BATCH.with(Cell::get)
}

impl Writer {
    /// Opens the writer's connection (and the checkpointer's) and starts their threads.
    pub fn start(url: &DatabaseUrl, config: WriterConfig) -> Result<Self, String> {
        let mut conn = url.establish()?;
        let sync = if config.synchronous_full { "FULL" } else { "NORMAL" };
        // Savepoint journals in memory, not in temporary files; a page cache (64 MiB) that
        // holds the hot tables, since this one connection does every write.
        // When the log starts over, its file is cut back to a quarter of the checkpoint
        // threshold, so the file's size tells how much was written since.
        conn.batch_execute(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA wal_autocheckpoint = 0; PRAGMA temp_store = MEMORY; \
             PRAGMA cache_size = -65536; PRAGMA busy_timeout = {}; PRAGMA journal_size_limit = {};",
            config.busy_timeout.as_millis(),
            config.checkpoint_bytes / 4
        ))
        .map_err(|e| format!("cannot configure the SQLite writer: {e}"))?;
        let mut checkpointer = url.establish()?;
        // The checkpointer gives way quickly: a truncating checkpoint that would wait for the
        // writer is simply tried again at the next idle second.
        checkpointer
            .batch_execute(&format!(
                "PRAGMA synchronous = {sync}; PRAGMA wal_autocheckpoint = 0; PRAGMA busy_timeout = 50;"
            ))
            .map_err(|e| format!("cannot configure the SQLite checkpointer: {e}"))?;
        let wal = PathBuf::from(format!("{}-wal", url.target()));
        let stats = Arc::new(WriterStats::default());
        let (tx, rx) = mpsc::sync_channel::<Job>(config.queue.max(1));
        let (ck_tx, ck_rx) = mpsc::sync_channel::<()>(1);
        let ck_stats = stats.clone();
        std::thread::Builder::new()
            .name("lh-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, ck_rx, ck_stats))
            .map_err(|e| format!("cannot start the checkpointer: {e}"))?;
        let w_stats = stats.clone();
        std::thread::Builder::new()
            .name("lh-writer".into())
            .spawn(move || write_loop(conn, rx, config, wal, ck_tx, w_stats))
            .map_err(|e| format!("cannot start the writer: {e}"))?;
        Ok(Self { tx, stats })
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Runs `f` in its own savepoint of the next batch and answers after that batch commits,
    /// with what `f` queued for the outbox actors.
    pub async fn submit<T, E, F>(&self, f: F) -> (Result<T, E>, wake::Wakeups)
    where
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<AppError> + From<diesel::result::Error> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(Op { f, answer });
        // Counted before the send: the writer may take the job before `try_send` returns.
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                return (
                    Err(E::from(AppError::Overloaded("the write queue is full; retry".into()))),
                    wake::Wakeups::default(),
                );
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                return (
                    Err(E::from(AppError::Unavailable("the database writer has stopped".into()))),
                    wake::Wakeups::default(),
                );
            }
        }
        answered.await.unwrap_or_else(|_| {
            (
                Err(E::from(AppError::Unavailable(
                    "the write batch holding this operation failed; retry".into(),
                ))),
                wake::Wakeups::default(),
            )
        })
    }
}

fn write_loop(
    mut conn: DbConn,
    rx: Receiver<Job>,
    config: WriterConfig,
    wal: PathBuf,
    checkpoint: SyncSender<()>,
    stats: Arc<WriterStats>,
) {
    loop {
        let first = match rx.recv() {
            Ok(job) => job,
            Err(_) => return, // every handle is gone: the server is stopping
        };
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        let started = Instant::now();
        if let Err(e) = conn.batch_execute("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "the database writer cannot begin a transaction");
            // Should a transaction have been left open (a COMMIT and its ROLLBACK both failed),
            // end it, or no batch could ever begin again. Harmless when none is open.
            let _ = conn.batch_execute("ROLLBACK");
            let why = format!("the database is not writable now ({e}); retry");
            first.refuse(&why);
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        IN_BATCH.with(|b| b.set(true));
        let mut finishes: Vec<Finish> = Vec::new();
        let mut next = Some(first);
        let mut panicked = false;
        while let Some(job) = next.take() {
            match catch_unwind(AssertUnwindSafe(|| job.run(&mut conn))) {
                Ok(finish) => finishes.push(finish),
                Err(_) => {
                    // What the panicking operation left is unknown: nothing of the batch is
                    // kept, and everyone is told to retry. Its own caller sees its answer
                    // dropped, which is the same retryable error.
                    tracing::error!("an operation panicked in the database writer; its batch is rolled back");
                    panicked = true;
                    break;
                }
            }
            if finishes.len() >= config.max_batch || started.elapsed() >= config.max_batch_time {
                break;
            }
            next = rx.try_recv().ok();
            if next.is_some() {
                stats.queued.fetch_sub(1, Ordering::Relaxed);
            }
        }
        IN_BATCH.with(|b| b.set(false));
        let failed = if panicked {
            let _ = conn.batch_execute("ROLLBACK");
            Some("the write batch holding this operation failed; retry".to_string())
        } else {
            match conn.batch_execute("COMMIT") {
                Ok(()) => None,
                Err(e) => {
                    tracing::error!(error = %e, operations = finishes.len(), "a write batch failed to commit");
                    let _ = conn.batch_execute("ROLLBACK");
                    Some(format!("the database could not commit ({e}); retry"))
                }
            }
        };
        if failed.is_some() {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.operations.fetch_add(finishes.len() as u64, Ordering::Relaxed);
        for finish in finishes {
            finish(failed.as_deref());
        }
        if stats.restart_due.swap(false, Ordering::AcqRel) {
            restart_log(&mut conn, &config, &stats);
        } else if std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) > config.checkpoint_bytes {
            let _ = checkpoint.try_send(());
        }
    }
}

/// Finishes the checkpointer's passive checkpoint on the writer's connection, between two
/// batches: copies what was appended since and, if no reader still needs the log, lets the
/// next batch write it from its start. Readers are waited for briefly (they run one short
/// statement at a time); if one is still reading, the log goes on and the next passive
/// checkpoint tries again.
fn restart_log(conn: &mut DbConn, config: &WriterConfig, stats: &WriterStats) {
    let _ = conn.batch_execute("PRAGMA busy_timeout = 100");
    let done = checkpoint(conn, "RESTART");
    let _ = conn.batch_execute(&format!("PRAGMA busy_timeout = {}", config.busy_timeout.as_millis()));
    stats.restarts.fetch_add(1, Ordering::Relaxed);
    match done {
        Ok(r) if r.busy == 0 => {
            stats.restarts_done.fetch_add(1, Ordering::Relaxed);
        }
        Ok(_) => tracing::debug!("the WAL could not start over: a reader still uses it"),
        Err(e) => tracing::warn!(error = %e, "restarting checkpoint failed"),
    }
}

/// What a checkpoint reports (SQLite's `busy` and `log` columns): whether it was kept from
/// finishing, and the frames in the log when it began.
#[derive(diesel::QueryableByName)]
struct Checkpointed {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    busy: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    log: i32,
}

fn checkpoint(conn: &mut DbConn, mode: &str) -> diesel::QueryResult<Checkpointed> {
    use diesel::RunQueryDsl;
    let DbConn::Sqlite(c) = conn else {
        return Err(diesel::result::Error::QueryBuilderError(
            "checkpoints are SQLite's; the writer runs on SQLite only".into(),
        ));
    };
    diesel::sql_query(format!("PRAGMA wal_checkpoint({mode})")).get_result(c)
}

/// Frames the writer may append while a passive checkpoint runs, and still be asked to finish it:
/// copying these is the pause a restart puts on the write path (4 MiB of 4 KiB pages).
const RESIDUAL_FRAMES: i32 = 1024;

/// Passive checkpoints beside the writer until what it appended during the last one is small
/// (at most four), so the restarting checkpoint the writer then runs copies little. Whether one
/// ran.
fn catch_up(conn: &mut DbConn, stats: &WriterStats) -> bool {
    let mut before: Option<i32> = None;
    for _ in 0..4 {
        match checkpoint(conn, "PASSIVE") {
            Ok(r) => {
                stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                let appended = before.map(|b| r.log - b);
                before = Some(r.log);
                if appended.is_some_and(|n| (0..=RESIDUAL_FRAMES).contains(&n)) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "passive checkpoint failed");
                break;
            }
        }
    }
    before.is_some()
}

fn checkpoint_loop(mut conn: DbConn, asked: Receiver<()>, stats: Arc<WriterStats>) {
    let mut wal_dirty = false;
    let mut batches_seen = stats.batches.load(Ordering::Relaxed);
    loop {
        match asked.recv_timeout(Duration::from_secs(1)) {
            // A restart already asked of the writer finishes the last passive checkpoint.
            Ok(()) if stats.restart_due.load(Ordering::Acquire) => {}
            Ok(()) => {
                if catch_up(&mut conn, &stats) {
                    stats.restart_due.store(true, Ordering::Release);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let batches = stats.batches.load(Ordering::Relaxed);
                if batches != batches_seen {
                    batches_seen = batches;
                    wal_dirty = true;
                } else if wal_dirty {
                    // No batch for a second: fold the WAL into the database and cut it to zero,
                    // so a quiet server's WAL does not stay large. If the writer starts a batch
                    // meanwhile, this gives way (50 ms busy timeout) and tries again later.
                    if conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE)").is_ok() {
                        stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                        wal_dirty = false;
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
