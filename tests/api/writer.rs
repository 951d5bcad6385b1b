//! SQLite's one writer: what is queued together commits together, each operation in its own
//! savepoint; a full queue, a failed commit and a panicking operation each fail with a
//! retryable error and leave nothing half-written; reads never wait for it.
//!
//! The tests hold the writer inside a batch (an operation that waits for the test's signal)
//! to queue work behind it deterministically, instead of racing it.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use lockerhub::db::writer::{Writer, WriterConfig};
use lockerhub::db::{self, Backend, DatabaseUrl, Db, DbConn};
use lockerhub::error::AppError;

use crate::helpers::eventually;

struct Fixture {
    _dir: tempfile::TempDir,
    raw_url: String,
    db: Db,
    writer: Writer,
}

fn fixture(config: WriterConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let raw = format!("sqlite://{}", dir.path().join("writer.db").display());
    let url = DatabaseUrl::parse(&raw, Duration::from_secs(5)).unwrap();
    let setup = db::connect(&url, 1, Duration::from_secs(5)).unwrap();
    setup
        .get()
        .unwrap()
        .batch_execute("CREATE TABLE probe (n INTEGER PRIMARY KEY, parent INTEGER REFERENCES probe (n))")
        .unwrap();
    drop(setup);
    let readers = db::connect_readers(&url, 2, Duration::from_secs(5)).unwrap();
    let writer = Writer::start(&url, config).unwrap();
    let db = Db::new(readers, Backend::Sqlite).with_writer(writer.clone());
    Fixture {
        _dir: dir,
        raw_url: raw,
        db,
        writer,
    }
}

/// Batches that never stop taking work for time, so what the test queues joins the held batch.
fn patient() -> WriterConfig {
    WriterConfig {
        max_batch_time: Duration::from_secs(600),
        ..WriterConfig::default()
    }
}

fn insert(c: &mut DbConn, n: i32) -> Result<(), AppError> {
    c.batch_execute(&format!("INSERT INTO probe (n) VALUES ({n})"))?;
    Ok(())
}

async fn rows(db: &Db) -> Vec<i32> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        n: i32,
    }
    db.read(|c| {
        Ok(diesel::sql_query("SELECT n FROM probe ORDER BY n")
            .load::<Row>(c)?
            .into_iter()
            .map(|r| r.n)
            .collect())
    })
    .await
    .unwrap()
}

type Answer = actix_web::rt::task::JoinHandle<Result<(), AppError>>;

fn spawn_run<F>(db: &Db, f: F) -> Answer
where
    F: FnOnce(&mut DbConn) -> Result<(), AppError> + Send + 'static,
{
    let db = db.clone();
    actix_web::rt::spawn(async move { db.run(f).await })
}

/// Starts an operation that writes row `n` and then keeps the writer (and its open
/// transaction) until the returned sender is used or dropped.
async fn hold(f: &Fixture, n: i32) -> (mpsc::Sender<()>, Answer) {
    let (release, released) = mpsc::channel::<()>();
    let (started, is_started) = mpsc::channel::<()>();
    let answer = spawn_run(&f.db, move |c| {
        insert(c, n)?;
        let _ = started.send(());
        let _ = released.recv_timeout(Duration::from_secs(60));
        Ok(())
    });
    eventually(Duration::from_secs(30), "the writer runs the holding operation", || {
        let got = is_started.try_recv().ok();
        async move { got }
    })
    .await;
    (release, answer)
}

async fn queued_reaches(f: &Fixture, n: u64) {
    eventually(Duration::from_secs(30), "operations wait in the writer's queue", || {
        let q = f.writer.stats().queued.load(Ordering::Relaxed);
        async move { (q == n).then_some(()) }
    })
    .await;
}

fn is_unavailable(r: &Result<(), AppError>) -> bool {
    matches!(r, Err(AppError::Unavailable(_)))
}

#[actix_web::test]
async fn operations_queued_together_commit_together_and_a_refused_one_rolls_back_alone() {
    let f = fixture(patient());
    let batches = f.writer.stats().batches.load(Ordering::Relaxed);
    let (release, held) = hold(&f, 1).await;
    let a = spawn_run(&f.db, |c| insert(c, 2));
    let refused = spawn_run(&f.db, |c| {
        insert(c, 3)?;
        Err(AppError::conflict("refused after writing"))
    });
    let b = spawn_run(&f.db, |c| insert(c, 4));
    queued_reaches(&f, 3).await;
    release.send(()).unwrap();
    assert!(held.await.unwrap().is_ok());
    assert!(a.await.unwrap().is_ok());
    assert!(matches!(refused.await.unwrap(), Err(AppError::Conflict { .. })));
    assert!(b.await.unwrap().is_ok());
    assert_eq!(rows(&f.db).await, vec![1, 2, 4], "the refused operation wrote nothing");
    assert_eq!(
        f.writer.stats().batches.load(Ordering::Relaxed) - batches,
        1,
        "one commit for all four"
    );
}

#[actix_web::test]
async fn a_full_queue_is_refused_at_once_and_what_it_held_still_commits() {
    let f = fixture(WriterConfig { queue: 2, ..patient() });
    let (release, held) = hold(&f, 1).await;
    let a = spawn_run(&f.db, |c| insert(c, 2));
    let b = spawn_run(&f.db, |c| insert(c, 3));
    queued_reaches(&f, 2).await;
    let refused = f.db.run(|c| insert(c, 4)).await;
    // Not a server failure: nothing was attempted, so no actor needs to reload.
    assert!(matches!(refused, Err(AppError::Overloaded(_))), "{refused:?}");
    assert_eq!(refused.unwrap_err().code(), "unavailable");
    release.send(()).unwrap();
    for answer in [held, a, b] {
        assert!(answer.await.unwrap().is_ok());
    }
    assert_eq!(rows(&f.db).await, vec![1, 2, 3]);
}

#[actix_web::test]
async fn a_commit_that_fails_fails_every_operation_of_its_batch_and_keeps_nothing() {
    let f = fixture(patient());
    let (release, held) = hold(&f, 1).await;
    // A foreign key checked only at COMMIT: the operation itself succeeds, its batch cannot.
    let dangling = spawn_run(&f.db, |c| {
        c.batch_execute("PRAGMA defer_foreign_keys = ON; INSERT INTO probe (n, parent) VALUES (10, 999)")?;
        Ok(())
    });
    let innocent = spawn_run(&f.db, |c| insert(c, 11));
    queued_reaches(&f, 2).await;
    release.send(()).unwrap();
    for answer in [held, dangling, innocent] {
        let r = answer.await.unwrap();
        assert!(is_unavailable(&r), "{r:?}");
    }
    assert!(rows(&f.db).await.is_empty());
    assert_eq!(f.writer.stats().failed_batches.load(Ordering::Relaxed), 1);
    // The writer goes on.
    f.db.run(|c| insert(c, 12)).await.unwrap();
    assert_eq!(rows(&f.db).await, vec![12]);
}

#[actix_web::test]
async fn a_panicking_operation_fails_its_batch_and_the_writer_goes_on() {
    let f = fixture(patient());
    let (release, held) = hold(&f, 1).await;
    let panics = spawn_run(&f.db, |c| {
        insert(c, 2)?;
        panic!("an operation panicked inside the writer");
    });
    let innocent = spawn_run(&f.db, |c| insert(c, 3));
    queued_reaches(&f, 2).await;
    release.send(()).unwrap();
    assert!(is_unavailable(&held.await.unwrap()));
    assert!(is_unavailable(&panics.await.unwrap()));
    // Never run: the batch ended at the panic; it goes into the next one.
    assert!(innocent.await.unwrap().is_ok());
    assert_eq!(rows(&f.db).await, vec![3]);
    f.db.run(|c| insert(c, 4)).await.unwrap();
    assert_eq!(rows(&f.db).await, vec![3, 4]);
}

#[actix_web::test]
async fn reads_do_not_wait_for_the_writer_and_cannot_write() {
    let f = fixture(patient());
    f.db.run(|c| insert(c, 1)).await.unwrap();
    let (release, held) = hold(&f, 2).await;
    // The writer holds an open transaction with row 2 in it: a reader sees the last commit.
    let seen = tokio::time::timeout(Duration::from_secs(30), rows(&f.db))
        .await
        .expect("a read waited for the writer");
    assert_eq!(seen, vec![1]);
    let write = f.db.read(|c| insert(c, 3)).await;
    let message = format!("{write:?}");
    assert!(write.is_err() && message.contains("readonly"), "{message}");
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    assert_eq!(rows(&f.db).await, vec![1, 2]);
}

#[actix_web::test]
async fn commits_are_synchronous_full_by_default() {
    #[derive(QueryableByName)]
    struct Sync {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        synchronous: i32,
    }
    let f = fixture(WriterConfig::default());
    let level =
        f.db.run(|c| {
            Ok(diesel::sql_query("PRAGMA synchronous")
                .get_result::<Sync>(c)?
                .synchronous)
        })
        .await
        .unwrap();
    assert_eq!(level, 2, "FULL: each commit is fsynced before anyone is answered");
}

#[actix_web::test]
async fn a_growing_wal_is_checkpointed_by_the_checkpointer() {
    let f = fixture(WriterConfig {
        checkpoint_bytes: 1,
        ..WriterConfig::default()
    });
    f.db.run(|c| insert(c, 1)).await.unwrap();
    eventually(Duration::from_secs(30), "a passive checkpoint ran", || {
        let n = f.writer.stats().checkpoints.load(Ordering::Relaxed);
        async move { (n > 0).then_some(()) }
    })
    .await;
    assert_eq!(rows(&f.db).await, vec![1]);
}

#[actix_web::test]
async fn a_batch_that_cannot_begin_fails_its_operation_without_running_it() {
    let f = fixture(WriterConfig {
        busy_timeout: Duration::from_millis(50),
        ..WriterConfig::default()
    });
    // Another process holds SQLite's write lock (a `lockerhub` command beside the server).
    let url = DatabaseUrl::parse(&f.raw_url, Duration::from_secs(5)).unwrap();
    let other = db::connect(&url, 1, Duration::from_secs(5)).unwrap();
    let mut lock = other.get().unwrap();
    lock.batch_execute("BEGIN IMMEDIATE").unwrap();
    let refused = f.db.run(|c| insert(c, 1)).await;
    assert!(is_unavailable(&refused), "{refused:?}");
    lock.batch_execute("ROLLBACK").unwrap();
    drop(lock);
    assert!(
        rows(&f.db).await.is_empty(),
        "the refused operation was not run outside a transaction"
    );
    f.db.run(|c| insert(c, 2)).await.unwrap();
    assert_eq!(rows(&f.db).await, vec![2]);
}

/// Under writes that never pause, a passive checkpoint never catches up with the writer, and
/// SQLite restarts the log only once every frame is copied back: the WAL grew without bound
/// (1.4 GB after 20 s at 800 deposits a second). The writer finishes each passive checkpoint
/// with a restarting one, so the log starts over and its file stays near the threshold.
#[actix_web::test]
async fn under_steady_writes_the_wal_starts_over_and_stays_small() {
    const WRITERS: i32 = 8;
    const EACH: i32 = 300;
    const BODY: usize = 4096;
    let threshold = 64 * 1024;
    let f = fixture(WriterConfig {
        checkpoint_bytes: threshold,
        max_batch: 8,
        ..WriterConfig::default()
    });
    f.db.run(|c| Ok(c.batch_execute("CREATE TABLE blob (n INTEGER PRIMARY KEY, body TEXT NOT NULL)")?))
        .await
        .unwrap();
    let wal = format!("{}-wal", f.raw_url.trim_start_matches("sqlite://"));
    let largest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, wal, largest) = (f.db.clone(), wal.clone(), largest.clone());
            actix_web::rt::spawn(async move {
                for i in 0..EACH {
                    let n = w * EACH + i;
                    db.run(move |c| {
                        let body = "x".repeat(BODY);
                        c.batch_execute(&format!("INSERT INTO blob (n, body) VALUES ({n}, '{body}')"))?;
                        Ok(())
                    })
                    .await?;
                    // Readers beside the writer, as in the server: they must not keep the log
                    // from starting over.
                    db.read(|c| Ok(c.batch_execute("SELECT count(*) FROM blob")?)).await?;
                    let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                    largest.fetch_max(size, Ordering::Relaxed);
                }
                Ok::<(), AppError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let written = (WRITERS * EACH) as u64 * BODY as u64;
    let largest = largest.load(Ordering::Relaxed);
    let stats = f.writer.stats();
    assert!(
        stats.restarts_done.load(Ordering::Relaxed) >= 1,
        "the log never started over ({} restarting checkpoints tried)",
        stats.restarts.load(Ordering::Relaxed)
    );
    assert!(
        largest < written / 3,
        "the WAL reached {largest} bytes for {written} bytes written: it did not start over"
    );
}
