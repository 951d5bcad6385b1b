//! `lockerhub-load bench-writes`: durable state changes per second through lockerhub's own
//! write path, with the path it replaced as the baseline in the same run.
//!
//! One state change is what a small operation writes: a row's state updated and an event row
//! inserted, in one transaction (through the SQLite writer: one savepoint of a group commit).
//! Each of `--concurrency` callers submits a change and waits for its answer (durable, after
//! the commit) before the next, as locker actors do.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use lockerhub::db::writer::{Writer, WriterConfig};
use lockerhub::db::{self, Backend, DatabaseUrl, Db, DbConn};
use lockerhub::error::AppError;

use crate::cli::BenchArgs;

diesel::table! {
    lh_bench_state (id) {
        id -> BigInt,
        v -> BigInt,
    }
}

diesel::table! {
    lh_bench_events (id) {
        id -> BigInt,
        state_id -> BigInt,
        v -> BigInt,
    }
}

const STATE_ROWS: i64 = 1000;

pub fn main(args: BenchArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    println!(
        "{} changes, {} callers; one change = 1 UPDATE + 1 INSERT in one transaction",
        args.changes, args.concurrency
    );
    println!("{:<44} {:>12} {:>10}", "path", "changes/s", "ratio");
    let base = measure(&args, &sqlite, Path::Pooled).await?;
    report("sqlite: pool of 16, a transaction each (NORMAL)", base, base);
    let full = measure(&args, &sqlite, Path::Writer { full: true }).await?;
    report("sqlite: writer, group commit (FULL)", full, base);
    let normal = measure(&args, &sqlite, Path::Writer { full: false }).await?;
    report("sqlite: writer, group commit (NORMAL)", normal, base);
    if let Some(pg) = &args.postgres_url {
        crate::sys::loopback_database(pg).map_err(|e| anyhow!("--postgres-url: {e}"))?;
        let pg_rate = measure(&args, pg, Path::Pooled).await?;
        report("postgres: pool of 16, a transaction each", pg_rate, base);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Path {
    /// A pooled connection and a transaction per change (SQLite: `BEGIN IMMEDIATE`).
    Pooled,
    /// The SQLite writer.
    Writer { full: bool },
}

fn report(name: &str, rate: Rate, base: Rate) {
    let cut = if rate.complete {
        ""
    } else {
        " (cut short by --time-limit)"
    };
    println!(
        "{name:<44} {:>12.0} {:>9.2}x{cut}",
        rate.per_sec,
        rate.per_sec / base.per_sec
    );
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    per_sec: f64,
    complete: bool,
}

async fn measure(args: &BenchArgs, raw_url: &str, path: Path) -> anyhow::Result<Rate> {
    let url = DatabaseUrl::parse(raw_url, Duration::from_secs(5)).map_err(|e| anyhow!(e))?;
    let setup = tokio::task::spawn_blocking({
        let url = url.clone();
        move || prepare(&url)
    })
    .await??;
    let db = match path {
        Path::Pooled => Db::new(setup, url.backend()),
        Path::Writer { full } => {
            let readers = db::connect_readers(&url, 4, Duration::from_secs(5)).map_err(|e| anyhow!(e))?;
            let writer = Writer::start(
                &url,
                WriterConfig {
                    synchronous_full: full,
                    ..WriterConfig::default()
                },
            )
            .map_err(|e| anyhow!(e))?;
            Db::new(readers, Backend::Sqlite).with_writer(writer)
        }
    };
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.time_limit);
    let started = Instant::now();
    let mut callers = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency.max(1) {
        let (db, next, total) = (db.clone(), next.clone(), args.changes);
        callers.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() > deadline {
                    return Ok::<usize, AppError>(done);
                }
                db.transaction(move |c| change(c, i as i64)).await?;
                done += 1;
            }
        }));
    }
    let mut done = 0;
    for caller in callers {
        done += caller.await?.map_err(|e| anyhow!("a change failed: {e}"))?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(db);
    let rate = Rate {
        per_sec: done as f64 / elapsed,
        complete: done >= args.changes,
    };
    tokio::task::spawn_blocking(move || cleanup(&url)).await??;
    Ok(rate)
}

/// Creates the benchmark's tables afresh and returns a read-write pool of 16.
fn prepare(url: &DatabaseUrl) -> anyhow::Result<db::Pool> {
    let pool = db::connect(url, 16, Duration::from_secs(5)).map_err(|e| anyhow!(e))?;
    let mut c = pool.get()?;
    c.batch_execute(
        "DROP TABLE IF EXISTS lh_bench_events; DROP TABLE IF EXISTS lh_bench_state; \
         CREATE TABLE lh_bench_state (id BIGINT PRIMARY KEY, v BIGINT NOT NULL); \
         CREATE TABLE lh_bench_events (id BIGINT PRIMARY KEY, state_id BIGINT NOT NULL, v BIGINT NOT NULL);",
    )?;
    // One row at a time: the MultiConnection has no batch insert.
    db::write_transaction(&mut c, |c| {
        for id in 0..STATE_ROWS {
            diesel::insert_into(lh_bench_state::table)
                .values((lh_bench_state::id.eq(id), lh_bench_state::v.eq(0i64)))
                .execute(c)?;
        }
        Ok::<_, diesel::result::Error>(())
    })?;
    drop(c);
    Ok(pool)
}

fn cleanup(url: &DatabaseUrl) -> anyhow::Result<()> {
    let pool = db::connect(url, 1, Duration::from_secs(5)).map_err(|e| anyhow!(e))?;
    pool.get()?
        .batch_execute("DROP TABLE IF EXISTS lh_bench_events; DROP TABLE IF EXISTS lh_bench_state;")?;
    Ok(())
}

fn change(c: &mut DbConn, i: i64) -> Result<(), AppError> {
    let id = i % STATE_ROWS;
    diesel::update(lh_bench_state::table.find(id))
        .set(lh_bench_state::v.eq(i))
        .execute(c)?;
    diesel::insert_into(lh_bench_events::table)
        .values((
            lh_bench_events::id.eq(i),
            lh_bench_events::state_id.eq(id),
            lh_bench_events::v.eq(i),
        ))
        .execute(c)?;
    Ok(())
}
