//! The pickup transactions, and the hardware-state ones (faults, boot reconciliation).

use diesel::prelude::*;
use serde_json::json;

use super::deposits::{settle_status, LockerCtx};
use super::parcels::{EventNote, ParcelChange};
use super::schema::{compartments, faults, lockers as lockers_t, parcels};
use super::{lockers, new_id, now, outbox, parcels as parcel_rows, DbConn};
use crate::credentials::{hash_token, ServerKey};
use crate::domain::parcel::ParcelState;
use crate::domain::CompartmentStatus;
use crate::error::DeviceError;
use crate::protocol::messages::{CompartmentSnapshot, Discrepancy, Door, Pickup};

/// The parcel a pickup code or QR token opens at this locker, with its compartment number.
pub fn find(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    pickup: &Pickup,
) -> Result<Option<(String, i32)>, DeviceError> {
    let live = [ParcelState::Deposited.as_str(), ParcelState::Expired.as_str()];
    let q = parcels::table
        .filter(parcels::locker_id.eq(&ctx.locker_id))
        .filter(parcels::state.eq_any(live))
        .select((parcels::id, parcels::compartment_id))
        .into_boxed();
    let q = match pickup {
        Pickup::Code(code) => {
            let code = code.trim();
            if code.is_empty() || code.len() > 32 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Ok(None);
            }
            q.filter(parcels::pickup_code_hash.eq(key.code_hash(&ctx.code_salt, code)))
        }
        Pickup::QrToken(token) => {
            if token.len() > 128 {
                return Ok(None);
            }
            q.filter(parcels::qr_token_hash.eq(hash_token(token.trim())))
        }
    };
    let Some((id, comp)) = q.first::<(String, Option<String>)>(conn).optional()? else {
        return Ok(None);
    };
    let Some(comp) = comp else { return Ok(None) };
    let number = compartments::table
        .find(comp)
        .select(compartments::number)
        .first(conn)?;
    Ok(Some((id, number)))
}

pub fn record(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    parcel_id: &str,
    kind: &str,
    detail: serde_json::Value,
) -> Result<(), DeviceError> {
    parcel_rows::record_event(conn, parcel_id, kind, None, &ctx.actor(), detail)?;
    Ok(())
}

/// Who took the parcel out of the locker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakenBy {
    /// The recipient: the parcel is picked up.
    Recipient,
    /// The carrier's driver, collecting an expired parcel: it is returned.
    Carrier,
}

/// The door closed on an empty compartment: the parcel has left the locker (picked up or
/// returned), its codes are void, the compartment is free, the carrier is told, and its
/// remaining deadlines are cancelled.
pub fn taken_out(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    parcel_id: &str,
    number: i32,
    by: TakenBy,
) -> Result<(), DeviceError> {
    let parcel = parcel_rows::get(conn, parcel_id)?;
    let from = parcel.state();
    let t = now();
    let (to, event, webhook, at_field) = match by {
        TakenBy::Recipient => (ParcelState::PickedUp, "picked_up", "parcel.picked_up", "picked_up_at"),
        TakenBy::Carrier => (ParcelState::Returned, "returned", "parcel.returned", "returned_at"),
    };
    // Taking the parcel out voids every code that could open its compartment.
    let change = ParcelChange {
        pickup_code_hash: Some(None),
        qr_token_hash: Some(None),
        collection_code_hash: Some(None),
        picked_up_at: (by == TakenBy::Recipient).then_some(t),
        returned_at: (by == TakenBy::Carrier).then_some(t),
        ..ParcelChange::default()
    };
    let note = EventNote {
        kind: event,
        actor: &ctx.actor(),
        detail: json!({"compartment": number}),
    };
    parcel_rows::change_state(conn, parcel_id, from, to, change, note)?;
    settle_status(conn, &ctx.locker_id, number, CompartmentStatus::Free)?;
    let mut data = json!({"parcel_id": parcel_id, "tracking_number": parcel.tracking_number,
                           "locker_id": ctx.locker_id, "compartment": number});
    data[at_field] = json!(super::ts_string(t));
    outbox::enqueue_webhook(conn, &parcel.carrier_id, Some(parcel_id), webhook, data)?;
    outbox::cancel_deadlines(conn, parcel_id, &[])?;
    Ok(())
}

/// Takes a compartment out of service and records the fault for the property manager.
pub fn fault(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    number: Option<i32>,
    kind: &str,
    detail: &str,
) -> Result<(), DeviceError> {
    diesel::insert_into(faults::table)
        .values((
            faults::id.eq(new_id()),
            faults::locker_id.eq(&ctx.locker_id),
            faults::compartment_number.eq(number),
            faults::kind.eq(kind),
            faults::detail.eq(detail),
            faults::created_at.eq(now()),
        ))
        .execute(conn)?;
    if let Some(n) = number {
        diesel::update(
            compartments::table
                .filter(compartments::locker_id.eq(&ctx.locker_id))
                .filter(compartments::number.eq(n)),
        )
        .set((
            compartments::status.eq(CompartmentStatus::OutOfService.as_str()),
            compartments::fault.eq(format!("{kind}: {detail}")),
            compartments::updated_at.eq(now()),
        ))
        .execute(conn)?;
    }
    Ok(())
}

/// Compares a boot snapshot with the database. Every discrepancy is recorded as a fault and,
/// where the compartment exists, takes it out of service. `busy` compartments have a deposit
/// or pickup in progress and are expected to differ.
pub fn reconcile(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    snapshot: &[CompartmentSnapshot],
    busy: &std::collections::HashSet<i32>,
) -> Result<Vec<Discrepancy>, DeviceError> {
    let stored = lockers::compartments_of(conn, &ctx.locker_id)?;
    let mut found = Vec::new();
    for snap in snapshot {
        if busy.contains(&snap.number) {
            continue;
        }
        let Some(c) = stored.iter().find(|c| c.number == snap.number) else {
            found.push((
                snap.number,
                false,
                "unknown_compartment",
                "the locker reports a compartment the server does not know".to_string(),
            ));
            continue;
        };
        let status = CompartmentStatus::parse(&c.status).unwrap_or(CompartmentStatus::OutOfService);
        if status == CompartmentStatus::OutOfService {
            continue;
        }
        if snap.door == Door::Open {
            found.push((
                snap.number,
                true,
                "door_open",
                "door is open with no deposit or pickup in progress".to_string(),
            ));
        } else if snap.occupied && status != CompartmentStatus::Occupied {
            found.push((
                snap.number,
                true,
                "unexpected_parcel",
                format!("something is inside a {} compartment", status.as_str()),
            ));
        } else if !snap.occupied && status == CompartmentStatus::Occupied {
            found.push((
                snap.number,
                true,
                "parcel_missing",
                "a deposited parcel is no longer sensed".to_string(),
            ));
        }
    }
    for c in &stored {
        if !snapshot.iter().any(|s| s.number == c.number) && c.status != CompartmentStatus::OutOfService.as_str() {
            found.push((
                c.number,
                true,
                "not_reported",
                "the locker did not report this compartment".to_string(),
            ));
        }
    }
    let mut out = Vec::new();
    for (number, exists, kind, detail) in found {
        if exists {
            fault(conn, ctx, Some(number), kind, &detail)?;
        } else {
            fault(conn, ctx, None, kind, &format!("compartment {number}: {detail}"))?;
        }
        out.push(Discrepancy {
            compartment: number,
            kind: kind.to_string(),
            detail,
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = faults)]
pub struct Fault {
    pub id: String,
    pub locker_id: String,
    pub compartment_number: Option<i32>,
    pub kind: String,
    pub detail: String,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: chrono::NaiveDateTime,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resolved_at: Option<chrono::NaiveDateTime>,
}

pub fn faults_of(
    conn: &mut DbConn,
    locker_id: &str,
    page: &super::page::Page,
) -> QueryResult<super::page::Paged<Fault>> {
    let mut q = faults::table
        .filter(faults::locker_id.eq(locker_id.to_string()))
        .order(faults::id.asc())
        .limit(page.limit + 1)
        .select(Fault::as_select())
        .into_boxed();
    if let Some(after) = &page.after {
        q = q.filter(faults::id.gt(after.clone()));
    }
    Ok(super::page::Paged::from_rows(q.load(conn)?, page, |f| &f.id))
}

/// Marks a locker's faults resolved when its compartment returns to service.
pub fn resolve_faults(conn: &mut DbConn, locker_id: &str, number: i32) -> QueryResult<usize> {
    diesel::update(
        faults::table
            .filter(faults::locker_id.eq(locker_id))
            .filter(faults::compartment_number.eq(number))
            .filter(faults::resolved_at.is_null()),
    )
    .set(faults::resolved_at.eq(now()))
    .execute(conn)
}

pub fn locker_seen(conn: &mut DbConn, locker_id: &str) -> QueryResult<()> {
    diesel::update(lockers_t::table.find(locker_id))
        .set(lockers_t::last_seen_at.eq(now()))
        .execute(conn)
        .map(drop)
}

/// The expired parcel a carrier collection code opens at this locker.
pub fn find_collection(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    code: &str,
) -> Result<Option<(String, i32)>, DeviceError> {
    let code = code.trim();
    if code.is_empty() || code.len() > 32 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let found: Option<(String, Option<String>)> = parcels::table
        .filter(parcels::locker_id.eq(&ctx.locker_id))
        .filter(parcels::state.eq(ParcelState::Expired.as_str()))
        .filter(parcels::collection_code_hash.eq(key.code_hash(&ctx.code_salt, &format!("collect:{code}"))))
        .select((parcels::id, parcels::compartment_id))
        .first(conn)
        .optional()?;
    let Some((id, Some(comp))) = found else { return Ok(None) };
    let number = compartments::table
        .find(comp)
        .select(compartments::number)
        .first(conn)?;
    Ok(Some((id, number)))
}
