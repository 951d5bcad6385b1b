//! Persisted deadlines and what happens when each kind fires. A deadline fires at most once:
//! firing claims the row (`fired_at IS NULL AND cancelled_at IS NULL`) in the same
//! transaction as its effect.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::json;

use super::deposits::{settle_status, LockerCtx};
use super::parcels::{EventNote, ParcelChange};
use super::schema::{compartments, deadlines, parcels};
use super::{now, outbox, parcels as parcel_rows, DbConn};
use crate::domain::parcel::ParcelState;
use crate::domain::CompartmentStatus;
use crate::error::AppError;

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

/// A reminder: queue the notification if the parcel still waits in the locker.
pub fn fire_reminder(conn: &mut DbConn, d: &Due) -> Result<bool, AppError> {
    if !claim(conn, &d.id)? {
        return Ok(false);
    }
    let p = parcel_rows::get(conn, &d.parcel_id)?;
    if p.state() != ParcelState::Deposited {
        return Ok(false);
    }
    outbox::enqueue_notification(
        conn,
        &p.id,
        p.recipient_id.as_deref(),
        &d.kind,
        json!({"pickup_deadline": p.pickup_deadline.map(super::ts_string)}),
    )?;
    parcel_rows::record_event(conn, &p.id, "reminder_queued", None, "system", json!({"kind": d.kind}))?;
    Ok(true)
}

/// The dwell window closed: the parcel is expired, the carrier asked to collect it, the
/// recipient told. The compartment stays occupied until the carrier's driver takes it.
pub fn fire_dwell_expiry(conn: &mut DbConn, d: &Due) -> Result<bool, AppError> {
    if !claim(conn, &d.id)? {
        return Ok(false);
    }
    let p = parcel_rows::get(conn, &d.parcel_id)?;
    if p.state() != ParcelState::Deposited {
        return Ok(false);
    }
    let t = now();
    parcel_rows::change_state(
        conn,
        &p.id,
        ParcelState::Deposited,
        ParcelState::Expired,
        ParcelChange {
            expired_at: Some(t),
            ..ParcelChange::default()
        },
        EventNote {
            kind: "expired",
            actor: "system",
            detail: json!({}),
        },
    )?;
    let number: Option<i32> = match &p.compartment_id {
        Some(c) => Some(compartments::table.find(c).select(compartments::number).first(conn)?),
        None => None,
    };
    outbox::enqueue_webhook(
        conn,
        &p.carrier_id,
        Some(&p.id),
        "parcel.return_requested",
        json!({"parcel_id": p.id, "tracking_number": p.tracking_number, "locker_id": p.locker_id,
               "compartment": number, "expired_at": super::ts_string(t)}),
    )?;
    outbox::enqueue_notification(conn, &p.id, p.recipient_id.as_deref(), "returned", json!({}))?;
    outbox::cancel_deadlines(conn, &p.id, &["reminder", "expiring_soon"])?;
    Ok(true)
}

/// A pre-advice reservation ran out before the driver came: the compartment is released and
/// the parcel is expected again. Runs in the locker's actor; returns the freed compartment.
pub fn expire_reservation(conn: &mut DbConn, ctx: &LockerCtx, d: &Due) -> Result<Option<i32>, AppError> {
    if !claim(conn, &d.id)? {
        return Ok(None);
    }
    let p = parcel_rows::get(conn, &d.parcel_id)?;
    if p.state() != ParcelState::Reserved {
        return Ok(None);
    }
    let Some(comp) = p.compartment_id.clone() else {
        return Ok(None);
    };
    let number: i32 = compartments::table
        .find(&comp)
        .select(compartments::number)
        .first(conn)?;
    settle_status(conn, &ctx.locker_id, number, CompartmentStatus::Free)?;
    parcel_rows::change_state(
        conn,
        &p.id,
        ParcelState::Reserved,
        ParcelState::Expected,
        ParcelChange {
            compartment_id: Some(None),
            reserved_until: Some(None),
            ..ParcelChange::default()
        },
        EventNote {
            kind: "reservation_expired",
            actor: "system",
            detail: json!({"compartment": number}),
        },
    )?;
    outbox::enqueue_webhook(
        conn,
        &p.carrier_id,
        Some(&p.id),
        "parcel.reservation_expired",
        json!({"parcel_id": p.id, "tracking_number": p.tracking_number, "locker_id": ctx.locker_id, "compartment": number}),
    )?;
    Ok(Some(number))
}
