//! Wrong-code accounting per locker (`code_guesses`) and the record of lockouts (`lockouts`).
//! Written only by the locker's actor, inside the transaction of the call that checked a code.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::page::{Page, Paged};
use super::schema::{code_guesses, lockouts};
use super::{new_id, DbConn};
use crate::domain::lockout::{GuessState, Started};

/// The kinds of code with an allowance of their own at each locker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    /// Pickup codes typed at the keypad (QR tokens are exempt).
    Pickup,
    /// Carriers' collection codes.
    Collect,
    /// Courier codes.
    Courier,
}

impl CodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pickup => "pickup",
            Self::Collect => "collect",
            Self::Courier => "courier",
        }
    }
}

/// The stored state, or a fresh one.
pub fn state(conn: &mut DbConn, locker_id: &str, kind: CodeKind, now: NaiveDateTime) -> QueryResult<GuessState> {
    let row = code_guesses::table
        .find((locker_id, kind.as_str()))
        .select((
            code_guesses::allowance_at,
            code_guesses::level,
            code_guesses::locked_until,
            code_guesses::last_failure_at,
        ))
        .get_result::<(NaiveDateTime, i32, Option<NaiveDateTime>, NaiveDateTime)>(conn)
        .optional()?;
    Ok(match row {
        Some((allowance_at, level, locked_until, last_failure_at)) => GuessState {
            allowance_at,
            level,
            locked_until,
            last_failure_at,
        },
        None => GuessState::fresh(now),
    })
}

/// Stores the state after a wrong code, and records the lockout it started.
pub fn save(
    conn: &mut DbConn,
    locker_id: &str,
    kind: CodeKind,
    s: &GuessState,
    started: Option<&Started>,
    now: NaiveDateTime,
) -> QueryResult<()> {
    let n = diesel::update(code_guesses::table.find((locker_id, kind.as_str())))
        .set((
            code_guesses::allowance_at.eq(s.allowance_at),
            code_guesses::level.eq(s.level),
            code_guesses::locked_until.eq(s.locked_until),
            code_guesses::last_failure_at.eq(s.last_failure_at),
        ))
        .execute(conn)?;
    if n == 0 {
        diesel::insert_into(code_guesses::table)
            .values((
                code_guesses::locker_id.eq(locker_id),
                code_guesses::kind.eq(kind.as_str()),
                code_guesses::allowance_at.eq(s.allowance_at),
                code_guesses::level.eq(s.level),
                code_guesses::locked_until.eq(s.locked_until),
                code_guesses::last_failure_at.eq(s.last_failure_at),
            ))
            .execute(conn)?;
    }
    if let Some(l) = started {
        diesel::insert_into(lockouts::table)
            .values((
                lockouts::id.eq(new_id()),
                lockouts::locker_id.eq(locker_id),
                lockouts::kind.eq(kind.as_str()),
                lockouts::level.eq(l.level),
                lockouts::started_at.eq(now),
                lockouts::locked_until.eq(l.until),
            ))
            .execute(conn)?;
    }
    Ok(())
}

/// One lockout, as the admin API lists it.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = lockouts)]
pub struct Lockout {
    pub id: String,
    pub locker_id: String,
    /// `pickup` (keypad pickup codes), `collect` (collection codes) or `courier` (courier codes).
    pub kind: String,
    /// 1 for the first lockout in a row; each further one lasts twice as long, up to the cap.
    pub level: i32,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: NaiveDateTime,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub locked_until: NaiveDateTime,
}

/// A locker's lockouts, oldest first.
pub fn list(conn: &mut DbConn, locker_id: &str, page: &Page) -> QueryResult<Paged<Lockout>> {
    let mut q = lockouts::table
        .filter(lockouts::locker_id.eq(locker_id))
        .select(Lockout::as_select())
        .order(lockouts::id.asc())
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(after) = &page.after {
        q = q.filter(lockouts::id.gt(after.clone()));
    }
    Ok(Paged::from_rows(q.load(conn)?, page, |l| &l.id))
}

/// The phone number and unit of the recipient of a parcel, for the second factor.
pub fn factor_for_parcel(conn: &mut DbConn, parcel_id: &str) -> QueryResult<Option<(Option<String>, String)>> {
    use super::schema::{parcels, recipients};
    parcels::table
        .inner_join(recipients::table)
        .filter(parcels::id.eq(parcel_id))
        .select((recipients::phone, recipients::unit))
        .get_result(conn)
        .optional()
}
