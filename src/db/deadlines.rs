//! Persisted deadlines and what happens when each kind fires. A deadline fires at most once:
//! firing claims the row (`fired_at IS NULL AND cancelled_at IS NULL`) in the same
//! transaction as its effect.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{deadlines, parcels};
use super::{now, DbConn};

#[derive(Debug, Clone)]
pub struct Due {
    pub id: String,
    pub parcel_id: String,
    pub kind: String,
    pub due_at: NaiveDateTime,
    pub locker_id: Option<String>,
}

/// Pending deadlines due by `until`, soonest first.
pub fn upcoming(conn: &mut DbConn, until: NaiveDateTime, limit: i64) -> QueryResult<Vec<Due>> {
    let rows: Vec<(String, String, String, NaiveDateTime, Option<String>)> = deadlines::table
        .inner_join(parcels::table)
        .filter(deadlines::fired_at.is_null())
        .filter(deadlines::cancelled_at.is_null())
        .filter(deadlines::due_at.le(until))
        .order(deadlines::due_at.asc())
        .limit(limit)
        .select((
            deadlines::id,
            deadlines::parcel_id,
            deadlines::kind,
            deadlines::due_at,
            parcels::locker_id,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(id, parcel_id, kind, due_at, locker_id)| Due {
            id,
            parcel_id,
            kind,
            due_at,
            locker_id,
        })
        .collect())
}

/// Marks the deadline fired; false if it already fired or was cancelled.
pub fn claim(conn: &mut DbConn, id: &str) -> QueryResult<bool> {
    let n = diesel::update(
        deadlines::table
            .find(id)
            .filter(deadlines::fired_at.is_null())
            .filter(deadlines::cancelled_at.is_null()),
    )
    .set(deadlines::fired_at.eq(now()))
    .execute(conn)?;
    Ok(n == 1)
}

/// How many deadlines due by `due_by` were fired at or after `since` (wall time).
pub fn fired_since(conn: &mut DbConn, since: NaiveDateTime, due_by: NaiveDateTime) -> QueryResult<usize> {
    let n: i64 = deadlines::table
        .filter(deadlines::fired_at.ge(since))
        .filter(deadlines::due_at.le(due_by))
        .count()
        .get_result(conn)?;
    Ok(usize::try_from(n).unwrap_or(0))
}
