//! What happens when a deadline fires: a reminder, the dwell window closing, a
//! reservation running out. Each claims its deadline row in the same transaction as its effect.

use diesel::prelude::*;
use serde_json::json;

use crate::db::compartments::settle_status;
use crate::db::deadlines::{claim, Due};
use crate::db::lockers::LockerCtx;
use crate::db::parcels::{EventNote, ParcelChange};
use crate::db::schema::compartments;
use crate::db::{now, parcels as parcel_rows, DbConn};
use crate::domain::lifecycle;
use crate::domain::parcel::ParcelState;
use crate::domain::refusal::Refusal;
use crate::domain::CompartmentStatus;
use crate::error::{AppError, OpError};
use crate::workflows::effects::persist;

/// A reminder: queue the notification if the parcel still waits in the locker.
pub fn fire_reminder(conn: &mut DbConn, d: &Due) -> Result<bool, AppError> {
    if !claim(conn, &d.id)? {
        return Ok(false);
    }
    let p = parcel_rows::get(conn, &d.parcel_id)?;
    if p.state() != ParcelState::Deposited {
        return Ok(false);
    }
    let kind = if d.kind == "expiring_soon" {
        "expiring_soon"
    } else {
        "reminder"
    };
    persist(
        conn,
        &lifecycle::reminded(&p.at(p.locker_id.as_deref(), None), kind, p.pickup_deadline),
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
    let expired = parcel_rows::change_state(
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
    );
    match expired {
        Ok(()) => {}
        // Taken out (or removed) since it was read: nothing expires; the deadline is done.
        Err(OpError::Refused(Refusal::StateChanged { .. })) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let number: Option<i32> = match &p.compartment_id {
        Some(c) => Some(
            compartments::table
                .find(c)
                .select(compartments::number)
                .get_result(conn)?,
        ),
        None => None,
    };
    persist(conn, &lifecycle::dwell_ended(&p.at(p.locker_id.as_deref(), number), t))?;
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
        .get_result(conn)?;
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
    persist(
        conn,
        &lifecycle::reservation_expired(&p.at(Some(&ctx.locker_id), Some(number))),
    )?;
    Ok(Some(number))
}
