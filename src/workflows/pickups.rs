//! The pickup transactions, and the hardware-state ones (faults, boot reconciliation).

use diesel::prelude::*;
use serde_json::json;

use crate::credentials::{hash_token, ServerKey};
use crate::db::compartments::settle_status;
use crate::db::lockers::LockerCtx;
use crate::db::parcels::{EventNote, ParcelChange};
use crate::db::schema::{compartments, parcels};
use crate::db::{now, parcels as parcel_rows, DbConn};
use crate::domain::hardware::{scanned_token, typed_code, Pickup};
use crate::domain::lifecycle;
use crate::domain::parcel::ParcelState;
use crate::domain::CompartmentStatus;
use crate::error::OpError;
use crate::on_backend;
use crate::qr_token;

/// The parcel a pickup code or QR token opens at this locker, with its compartment number.
/// One statement per kind of credential, with a fixed shape so the prepared statement is
/// cached (no boxed query, no `IN` list), and no `LIMIT ?` (see `db::parcels::get`): codes and
/// tokens are unique by their indexes.
pub fn find(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    pickup: &Pickup,
) -> Result<Option<(String, i32)>, OpError> {
    let live = parcels::state
        .eq(ParcelState::Deposited.as_str())
        .or(parcels::state.eq(ParcelState::Expired.as_str()));
    let here = parcels::table
        .inner_join(compartments::table.on(parcels::compartment_id.eq(compartments::id.nullable())))
        .filter(parcels::locker_id.eq(&ctx.locker_id))
        .filter(live)
        .select((parcels::id, compartments::number));
    let found = match pickup {
        Pickup::Code(raw) => {
            let Some(code) = typed_code(raw) else { return Ok(None) };
            let hash = key.code_hash(&ctx.code_salt, code);
            on_backend!(conn, |c| here
                .filter(parcels::pickup_code_hash.eq(&hash))
                .get_result::<(String, i32)>(c))
            .optional()?
        }
        Pickup::QrToken(raw) => {
            let Some(token) = scanned_token(raw) else {
                return Ok(None);
            };
            // A signed token is checked before anything is looked up: a forged one, or one
            // for another locker, costs no query.
            if qr_token::is_signed_token(token) {
                match qr_token::QrSigner::of(key).verify(token) {
                    Ok(claims) if claims.l == ctx.locker_id => {}
                    _ => return Ok(None),
                }
            }
            let hash = hash_token(token);
            on_backend!(conn, |c| here
                .filter(parcels::qr_token_hash.eq(&hash))
                .get_result::<(String, i32)>(c))
            .optional()?
        }
    };
    Ok(found)
}

pub fn record(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    parcel_id: &str,
    kind: &str,
    detail: serde_json::Value,
) -> Result<(), OpError> {
    parcel_rows::record_event(conn, parcel_id, kind, None, &ctx.actor(), detail)?;
    Ok(())
}

pub use crate::domain::lifecycle::TakenBy;

/// The door closed on an empty compartment: the parcel has left the locker (picked up or
/// returned), its codes are void, the compartment is free, the carrier is told, and its
/// remaining deadlines are cancelled.
pub fn taken_out(conn: &mut DbConn, ctx: &LockerCtx, parcel_id: &str, number: i32, by: TakenBy) -> Result<(), OpError> {
    taken_out_at(conn, ctx, parcel_id, number, by, now(), |_, _| ())
}

/// [`taken_out`] at time `t` (a pickup a locker journaled offline happened before it is
/// applied); `amend` adds to the event's detail and to the effects (the carrier's webhook).
pub fn taken_out_at(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    parcel_id: &str,
    number: i32,
    by: TakenBy,
    t: chrono::NaiveDateTime,
    amend: impl FnOnce(&mut serde_json::Value, &mut crate::domain::effects::Effects),
) -> Result<(), OpError> {
    let parcel = parcel_rows::get(conn, parcel_id)?;
    let at = parcel.at(Some(&ctx.locker_id), Some(number));
    let (to, event, mut effects) = lifecycle::taken_out(&at, by, t);
    // Taking the parcel out voids every code that could open its compartment.
    let change = ParcelChange {
        pickup_code_hash: Some(None),
        qr_token_hash: Some(None),
        collection_code_hash: Some(None),
        picked_up_at: (by == TakenBy::Recipient).then_some(t),
        returned_at: (by == TakenBy::Carrier).then_some(t),
        ..ParcelChange::default()
    };
    let mut detail = json!({"compartment": number});
    amend(&mut detail, &mut effects);
    let note = EventNote {
        kind: event,
        actor: &ctx.actor(),
        detail,
    };
    parcel_rows::change_from_current(conn, parcel_id, to, change, note)?;
    settle_status(conn, &ctx.locker_id, number, CompartmentStatus::Free)?;
    crate::workflows::effects::persist(conn, &effects)?;
    Ok(())
}

/// The expired parcel a carrier collection code opens at this locker.
pub fn find_collection(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    code: &str,
) -> Result<Option<(String, i32)>, OpError> {
    let Some(code) = typed_code(code) else { return Ok(None) };
    let found: Option<(String, Option<String>)> = parcels::table
        .filter(parcels::locker_id.eq(&ctx.locker_id))
        .filter(parcels::state.eq(ParcelState::Expired.as_str()))
        .filter(parcels::collection_code_hash.eq(key.code_hash(&ctx.code_salt, &format!("collect:{code}"))))
        .select((parcels::id, parcels::compartment_id))
        .get_result(conn)
        .optional()?;
    let Some((id, Some(comp))) = found else { return Ok(None) };
    let number = compartments::table
        .find(comp)
        .select(compartments::number)
        .get_result(conn)?;
    Ok(Some((id, number)))
}
