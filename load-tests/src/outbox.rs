//! Pickup codes, as the recipient would get them: read from the server's notification outbox
//! (the payload's `pickup_code`), through a read-only SQLite connection on its own thread.
//! New rows are read incrementally by rowid, so the cost does not grow with the table.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use serde_json::Value;

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    rid: i64,
    #[diesel(sql_type = Text)]
    parcel_id: String,
    #[diesel(sql_type = Text)]
    payload: String,
}

pub struct Codes {
    /// Parcel id -> (pickup code, when the reader first saw it).
    codes: Mutex<HashMap<String, (String, Instant)>>,
    arrived: tokio::sync::Notify,
    stop: AtomicBool,
    /// Set when the reader gave up (cannot open or read the database).
    pub failed: Mutex<Option<String>>,
}

const BATCH: i64 = 5000;

impl Codes {
    /// Starts the reader thread; it stops at `deadline` or when stopped.
    pub fn start(db: &Path, deadline: Instant) -> Arc<Codes> {
        let codes = Arc::new(Codes {
            codes: Mutex::default(),
            arrived: tokio::sync::Notify::new(),
            stop: AtomicBool::new(false),
            failed: Mutex::default(),
        });
        let me = codes.clone();
        let url = format!("file:{}?mode=ro", db.display());
        std::thread::Builder::new()
            .name("outbox-reader".into())
            .spawn(move || {
                if let Err(e) = me.read_loop(&url, deadline) {
                    *me.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
            })
            .expect("spawn outbox reader");
        codes
    }

    fn read_loop(&self, url: &str, deadline: Instant) -> Result<(), String> {
        let mut conn = SqliteConnection::establish(url).map_err(|e| format!("open {url}: {e}"))?;
        conn.batch_execute("PRAGMA busy_timeout = 5000;")
            .map_err(|e| e.to_string())?;
        let mut last: i64 = 0;
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let rows: Vec<Row> = diesel::sql_query(
                "SELECT rowid AS rid, parcel_id, payload FROM notification_outbox \
                 WHERE rowid > ? AND kind = 'deposited' ORDER BY rowid LIMIT ?",
            )
            .bind::<BigInt, _>(last)
            .bind::<BigInt, _>(BATCH)
            .load(&mut conn)
            .map_err(|e| format!("read notification_outbox: {e}"))?;
            let n = rows.len() as i64;
            if let Some(r) = rows.last() {
                last = r.rid;
            }
            if n > 0 {
                let seen = Instant::now();
                let mut map = self.codes.lock().unwrap_or_else(|e| e.into_inner());
                for r in rows {
                    let v: Value = serde_json::from_str(&r.payload).unwrap_or(Value::Null);
                    if let Some(code) = v["pickup_code"]
                        .as_str()
                        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                    {
                        map.insert(r.parcel_id, (code.to_string(), seen));
                    }
                }
                drop(map);
                self.arrived.notify_waiters();
            }
            if n < BATCH {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The pickup code of a parcel, once its notification is queued, and when it was first
    /// seen; None after `within`.
    pub async fn wait(&self, parcel_id: &str, within: Duration) -> Option<(String, Instant)> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(c) = self.codes.lock().unwrap_or_else(|e| e.into_inner()).remove(parcel_id) {
                return Some(c);
            }
            if tokio::time::timeout_at(until, arrived).await.is_err() {
                return None;
            }
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
