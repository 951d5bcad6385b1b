//! The remote-open audit: one row per attempt, successful or not, and the parcel changes a
//! remote open leads to.

use chrono::NaiveDateTime;
use serde_json::json;

use crate::db::compartments::settle_status;
use crate::db::lockers::LockerCtx;
use crate::db::parcels::{EventNote, ParcelChange};
use crate::db::{parcels as parcel_rows, DbConn};
use crate::domain::lifecycle;
use crate::domain::parcel::ParcelState;
use crate::domain::CompartmentStatus;
use crate::error::OpError;

/// A remotely opened door closed. Empty: the parcel is `removed` (codes void, compartment
/// free, carrier and recipient told, deadlines cancelled). Still occupied: the parcel stays
/// as it was. Either way the parcel records `remote_door_closed`. Returns whether it was removed.
pub fn door_closed(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    parcel_id: &str,
    open_id: &str,
    number: i32,
    occupied: bool,
    now: NaiveDateTime,
) -> Result<bool, OpError> {
    let parcel = parcel_rows::get(conn, parcel_id)?;
    let from = parcel.state();
    let detail = json!({"compartment": number, "occupied": occupied, "remote_open_id": open_id});
    if occupied || !from.can_become(ParcelState::Removed) {
        parcel_rows::record_event(conn, parcel_id, "remote_door_closed", None, &ctx.actor(), detail)?;
        return Ok(false);
    }
    // Taken out by whoever opened it: every code that could open the compartment is void.
    parcel_rows::change_from_current(
        conn,
        parcel_id,
        ParcelState::Removed,
        ParcelChange {
            pickup_code_hash: Some(None),
            qr_token_hash: Some(None),
            collection_code_hash: Some(None),
            ..ParcelChange::default()
        },
        EventNote {
            kind: "remote_door_closed",
            actor: &ctx.actor(),
            detail,
        },
    )?;
    settle_status(conn, &ctx.locker_id, number, CompartmentStatus::Free)?;
    let at = parcel.at(Some(&ctx.locker_id), Some(number));
    crate::workflows::effects::persist(conn, &lifecycle::removed(&at, now))?;
    Ok(true)
}
