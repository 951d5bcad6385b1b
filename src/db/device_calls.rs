//! Answers to state-changing device calls, kept with the change they report.
//!
//! The locker actor writes a row in the same transaction as the change (a deposit completed, a
//! compartment reserved, …), so after a server restart a retry with the same message id gets
//! the answer that matches what was committed. Rows are small, pruned by age and capped per
//! locker, a few at a time on one write in `PRUNE_EVERY`, so no sweep is needed.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::direct;
use super::schema::device_calls;
use super::{now, DbConn};

/// Most answers kept per locker; the oldest go first. Wider than the in-memory window (64,
/// `actors::locker::dedup`): these answer the retries it has forgotten.
pub const DEVICE_CALLS_PER_LOCKER: i64 = 512;

/// Most rows one prune removes: pruning stays cheap even after a long quiet spell.
const PRUNE_BATCH: i64 = 64;

/// One write in this many prunes. Finding the rows beyond the cap reads up to
/// `DEVICE_CALLS_PER_LOCKER` index entries, which made pruning on every write the costliest
/// part of a device call; a prune removes up to `PRUNE_BATCH`, far more than the writes
/// between two prunes add, so the bounds hold within a few rows.
const PRUNE_EVERY: u64 = 16;

static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A remembered answer: the call's fingerprint and the result payload (JSON text).
#[derive(Debug, Clone, Queryable)]
pub struct StoredCall {
    pub fingerprint: String,
    pub answer: String,
}

pub fn find(conn: &mut DbConn, locker_id: &str, msg_id: &str) -> QueryResult<Option<StoredCall>> {
    device_calls::table
        .find((locker_id, msg_id))
        .select((device_calls::fingerprint, device_calls::answer))
        .get_result(conn)
        .optional()
}

/// What [`remember`] found under the call's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remembered {
    /// The answer is stored: the id was new, or held another call's answer (a reused id runs
    /// as a new call), which it replaced.
    Stored,
    /// The same call's answer is already stored: this is a retry of a call answered before,
    /// and what it just did must roll back.
    AnsweredBefore,
}

/// Stores the answer to a call in the transaction that commits its change, then now and then
/// prunes this locker's oldest rows beyond the age or count bound.
///
/// One statement whatever was stored under the id: an upsert that replaces another call's
/// answer (another fingerprint) and leaves the same call's answer alone. Calls do not look
/// their id up before they run; nearly every id is new, and the rare retry of a call answered
/// before finds out here, and its transaction rolls back.
pub fn remember(
    conn: &mut DbConn,
    locker_id: &str,
    msg_id: &str,
    fingerprint: &str,
    answer: &str,
    retention: chrono::Duration,
) -> QueryResult<Remembered> {
    let t = now();
    let row = diesel::insert_into(device_calls::table).values((
        device_calls::locker_id.eq(locker_id),
        device_calls::msg_id.eq(msg_id),
        device_calls::fingerprint.eq(fingerprint),
        device_calls::answer.eq(answer),
        device_calls::created_at.eq(t),
    ));
    // Both backends read this clause alike (SQLite 3.24 and PostgreSQL 9.5 on): no row
    // changes when the stored fingerprint is this call's.
    let changed = direct::execute(
        conn,
        direct::suffixed(
            row,
            " ON CONFLICT (locker_id, msg_id) DO UPDATE SET fingerprint = excluded.fingerprint, \
             answer = excluded.answer, created_at = excluded.created_at \
             WHERE device_calls.fingerprint <> excluded.fingerprint",
        ),
    )?;
    if changed == 0 {
        return Ok(Remembered::AnsweredBefore);
    }
    if WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % PRUNE_EVERY == 0 {
        prune(conn, locker_id, t - retention)?;
    }
    Ok(Remembered::Stored)
}

fn prune(conn: &mut DbConn, locker_id: &str, older_than: NaiveDateTime) -> QueryResult<()> {
    let mine = || device_calls::table.filter(device_calls::locker_id.eq(locker_id.to_string()));
    // Past the count bound: the newest row beyond DEVICE_CALLS_PER_LOCKER, and all older ones.
    let beyond_cap: Option<NaiveDateTime> = mine()
        .order(device_calls::created_at.desc())
        .offset(DEVICE_CALLS_PER_LOCKER)
        .select(device_calls::created_at)
        .first(conn)
        .optional()?;
    let cutoff = device_calls::created_at.lt(older_than);
    let stale_rows = match beyond_cap {
        Some(cap) => mine().filter(cutoff.or(device_calls::created_at.le(cap))).into_boxed(),
        None => mine().filter(cutoff).into_boxed(),
    };
    let stale: Vec<String> = stale_rows
        .order(device_calls::created_at.asc())
        .limit(PRUNE_BATCH)
        .select(device_calls::msg_id)
        .load(conn)?;
    if !stale.is_empty() {
        diesel::delete(mine().filter(device_calls::msg_id.eq_any(stale))).execute(conn)?;
    }
    Ok(())
}
