//! Rows of a 1.1 locker's offline journal, as the server applied it (`locker_journal`).

use chrono::NaiveDateTime;
use diesel::dsl::max;
use diesel::prelude::*;

use super::schema::locker_journal;
use super::{now, DbConn};
use crate::domain::journal::Outcome;

/// One applied event, as stored.
#[derive(Debug, Clone)]
pub struct Applied {
    pub seq: i64,
    pub kind: String,
    pub compartment: Option<i32>,
    pub parcel_id: Option<String>,
    pub device_at: String,
    pub occurred_at: NaiveDateTime,
    pub outcome: Outcome,
    pub detail: serde_json::Value,
}

/// How far the locker's journal is applied: its highest stored sequence number, 0 for none.
pub fn applied_through(conn: &mut DbConn, locker_id: &str) -> QueryResult<i64> {
    let top: Option<i64> = crate::on_backend!(conn, |c| locker_journal::table
        .filter(locker_journal::locker_id.eq(locker_id))
        .select(max(locker_journal::seq))
        .get_result(c))?;
    Ok(top.unwrap_or(0))
}

/// The stored outcomes (sequence number, outcome, detail JSON) of `from..=to`, in order.
pub fn outcomes(conn: &mut DbConn, locker_id: &str, from: i64, to: i64) -> QueryResult<Vec<(i64, String, String)>> {
    crate::on_backend!(conn, |c| locker_journal::table
        .filter(locker_journal::locker_id.eq(locker_id))
        .filter(locker_journal::seq.ge(from))
        .filter(locker_journal::seq.le(to))
        .order(locker_journal::seq.asc())
        .select((locker_journal::seq, locker_journal::outcome, locker_journal::detail))
        .load(c))
}

/// Stores an applied event, in the transaction that applied it. The primary key refuses a
/// second row for the same sequence number, so an event is never applied twice.
pub fn insert(conn: &mut DbConn, locker_id: &str, a: &Applied) -> QueryResult<()> {
    diesel::insert_into(locker_journal::table)
        .values((
            locker_journal::locker_id.eq(locker_id),
            locker_journal::seq.eq(a.seq),
            locker_journal::kind.eq(&a.kind),
            locker_journal::compartment.eq(a.compartment),
            locker_journal::parcel_id.eq(&a.parcel_id),
            locker_journal::device_at.eq(&a.device_at),
            locker_journal::occurred_at.eq(a.occurred_at),
            locker_journal::outcome.eq(a.outcome.as_str()),
            locker_journal::detail.eq(a.detail.to_string()),
            locker_journal::received_at.eq(now()),
        ))
        .execute(conn)
        .map(drop)
}
