//! Pickup codes, as the recipient would get them: read from the server's notification outbox
//! (the payload's `pickup_code`, and once asked for its `qr_token`) on its own thread, through
//! lockerhub's own database layer, so the same reader works on SQLite and PostgreSQL.
//!
//! Pending rows are read by queueing time from a little before the newest one seen (ids already seen
//! are skipped): on PostgreSQL transactions commit in any order, so a row may appear after a
//! newer one was read; the overlap covers that, and the cost stays flat as the table grows.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use diesel::prelude::*;
use lockerhub::db::schema::notification_outbox as outbox;
use lockerhub::db::{self, DatabaseUrl};
use serde_json::Value;

/// How far behind the newest row seen each read starts again.
const OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

pub struct Codes {
    /// Parcel id -> (pickup code, when the reader first saw it).
    codes: Mutex<HashMap<String, (String, Instant)>>,
    /// Parcel id -> (signed QR token, when first seen), kept only after `keep_qr_tokens`: the
    /// offline phase needs a few, and the traffic's tens of thousands (about 310 bytes each)
    /// would be this process's memory for nothing.
    qr_tokens: Mutex<HashMap<String, (String, Instant)>>,
    keep_qr: AtomicBool,
    arrived: tokio::sync::Notify,
    stop: AtomicBool,
    /// Set when the reader gave up (cannot open or read the database).
    pub failed: Mutex<Option<String>>,
}

const BATCH: i64 = 5000;

impl Codes {
    /// Starts the reader thread on the server's database (`sqlite://PATH` or `postgres://…`);
    /// it stops at `deadline` or when stopped.
    pub fn start(database_url: &str, deadline: Instant) -> Arc<Codes> {
        let codes = Arc::new(Codes {
            codes: Mutex::default(),
            qr_tokens: Mutex::default(),
            keep_qr: AtomicBool::new(false),
            arrived: tokio::sync::Notify::new(),
            stop: AtomicBool::new(false),
            failed: Mutex::default(),
        });
        let me = codes.clone();
        let url = database_url.to_string();
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
        let url = DatabaseUrl::parse(url, Duration::from_secs(5))?;
        let pool = db::connect(&url, 1, Duration::from_secs(5))?;
        let mut conn = pool.get().map_err(|e| e.to_string())?;
        // Not NaiveDateTime::MIN: PostgreSQL timestamps start in 4713 BC.
        let mut since = chrono::DateTime::UNIX_EPOCH.naive_utc();
        let mut seen: HashSet<String> = HashSet::new();
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            // Through the (status, next_attempt_at) index: a scan of the whole outbox every
            // 20 ms would load PostgreSQL more than the server does. Held notifications stay
            // pending with the time they were queued.
            let rows: Vec<(String, String, String, NaiveDateTime)> = outbox::table
                .filter(outbox::status.eq("pending"))
                .filter(outbox::next_attempt_at.ge(since))
                .filter(outbox::kind.eq("deposited"))
                .order(outbox::next_attempt_at.asc())
                .limit(BATCH)
                .select((outbox::id, outbox::parcel_id, outbox::payload, outbox::next_attempt_at))
                .load(&mut *conn)
                .map_err(|e| format!("read notification_outbox: {e}"))?;
            let full = rows.len() as i64 == BATCH;
            if let Some(newest) = rows.last().map(|r| r.3) {
                // A full batch moves on from its newest row; otherwise keep the overlap.
                since = if full { newest } else { since.max(newest - OVERLAP) };
            }
            let seen_at = Instant::now();
            let mut fresh = 0;
            let mut map = self.codes.lock().unwrap_or_else(|e| e.into_inner());
            for (id, parcel_id, payload, _) in rows {
                if !seen.insert(id) {
                    continue;
                }
                fresh += 1;
                let v: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
                if let Some(token) = v["qr_token"].as_str().filter(|_| self.keep_qr.load(Ordering::SeqCst)) {
                    self.qr_tokens
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(parcel_id.clone(), (token.to_string(), seen_at));
                }
                if let Some(code) = v["pickup_code"]
                    .as_str()
                    .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                {
                    map.insert(parcel_id, (code.to_string(), seen_at));
                }
            }
            drop(map);
            if fresh > 0 {
                self.arrived.notify_waiters();
            }
            if !full {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The pickup code of a parcel, once its notification is queued, and when it was first
    /// seen; None after `within`.
    pub async fn wait(&self, parcel_id: &str, within: Duration) -> Option<(String, Instant)> {
        self.wait_in(&self.codes, parcel_id, within).await
    }

    /// From now on, keep the QR tokens of the notifications read (for `wait_qr`).
    pub fn keep_qr_tokens(&self) {
        self.keep_qr.store(true, Ordering::SeqCst);
    }

    /// The signed QR token (`lhq2.…`) of a parcel deposited after `keep_qr_tokens`, once its
    /// notification is queued, and when it was first seen; None after `within`.
    pub async fn wait_qr(&self, parcel_id: &str, within: Duration) -> Option<(String, Instant)> {
        self.wait_in(&self.qr_tokens, parcel_id, within).await
    }

    async fn wait_in(
        &self,
        map: &Mutex<HashMap<String, (String, Instant)>>,
        parcel_id: &str,
        within: Duration,
    ) -> Option<(String, Instant)> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(c) = map.lock().unwrap_or_else(|e| e.into_inner()).remove(parcel_id) {
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
