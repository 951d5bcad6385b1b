//! Compartment rows: the status writes every workflow shares.

use diesel::prelude::*;

use super::direct;
use super::schema::compartments;
use super::{lockers, now, DbConn};
use crate::domain::CompartmentStatus;
use crate::error::{AppError, OpError};

/// Marks a claimable (free) compartment reserved for a new parcel, failing if the database
/// disagrees with the actor's memory.
pub fn claim(conn: &mut DbConn, locker_id: &str, number: i32) -> Result<(), OpError> {
    let from = CompartmentStatus::CLAIMABLE;
    let n = direct::execute(
        conn,
        direct::update(
            compartments::table,
            compartments::locker_id
                .eq(locker_id)
                .and(compartments::number.eq(number))
                .and(compartments::status.eq(from.as_str())),
            (
                compartments::status.eq(CompartmentStatus::Reserved.as_str()),
                compartments::updated_at.eq(now()),
            ),
        ),
    )?;
    if n != 1 {
        return Err(OpError::Failed(AppError::internal(format!(
            "compartment {number} was not {} in the database",
            from.as_str()
        ))));
    }
    Ok(())
}

/// Leaves a compartment in `status` after an operation, except that a sticky status
/// (`CompartmentStatus::STICKY`: out of service) stays. Applied in the update itself, without
/// a read.
pub fn settle_status(conn: &mut DbConn, locker_id: &str, number: i32, status: CompartmentStatus) -> QueryResult<()> {
    // `<>`, not `NOT IN (…)`: a list is a statement diesel compiles afresh on every call.
    let [sticky] = CompartmentStatus::STICKY;
    let update = direct::update(
        compartments::table,
        compartments::locker_id
            .eq(locker_id)
            .and(compartments::number.eq(number))
            .and(compartments::status.ne(sticky.as_str())),
        (
            compartments::status.eq(status.as_str()),
            compartments::updated_at.eq(now()),
        ),
    );
    direct::execute(conn, update).map(drop)
}

pub fn compartment_id(conn: &mut DbConn, locker_id: &str, number: i32) -> QueryResult<String> {
    lockers::compartment_by_number(conn, locker_id, number).map(|c| c.id)
}

/// A compartment's status, by number.
pub fn status_of(conn: &mut DbConn, locker_id: &str, number: i32) -> QueryResult<Option<CompartmentStatus>> {
    let s: Option<String> = compartments::table
        .filter(compartments::locker_id.eq(locker_id))
        .filter(compartments::number.eq(number))
        .select(compartments::status)
        .get_result(conn)
        .optional()?;
    Ok(s.and_then(|s| CompartmentStatus::parse(&s)))
}

pub fn number_of(conn: &mut DbConn, compartment_id: &str) -> QueryResult<i32> {
    compartments::table
        .find(compartment_id)
        .select(compartments::number)
        .get_result(conn)
}
