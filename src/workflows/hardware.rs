//! What the hardware reports: faults, and the boot snapshot reconciled with the database.

use diesel::prelude::*;

use crate::db::lockers::LockerCtx;
use crate::db::schema::{compartments, faults};
use crate::db::{lockers, new_id, now, DbConn};
use crate::domain::hardware::{CompartmentSnapshot, Discrepancy, Door};
use crate::domain::CompartmentStatus;
use crate::error::OpError;

/// Records a fault for the property manager, leaving the compartment in service and raising no
/// alert (the caller raises one for several: a replay's rejected events).
pub fn record(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    number: Option<i32>,
    kind: &str,
    detail: &str,
) -> Result<(), OpError> {
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
    Ok(())
}

/// Records a fault that needs a person and raises it as an operator alert, leaving the
/// compartment in service (an offline conflict, a journal event rejected or lost, a door
/// blocked once).
pub fn alert(conn: &mut DbConn, ctx: &LockerCtx, number: Option<i32>, kind: &str, detail: &str) -> Result<(), OpError> {
    record(conn, ctx, number, kind, detail)?;
    crate::db::alerts::raise(conn, &ctx.locker_id, number, kind, detail)?;
    Ok(())
}

/// [`fault`] (the compartment leaves service), raised as an operator alert of `alert_kind`
/// too: a forced door (`door_forced`, also for a 1.0 device's unexpected `DoorEvent opened`),
/// a door blocked twice in a row.
pub fn alerting_fault(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    number: i32,
    kind: &str,
    alert_kind: &str,
    detail: &str,
) -> Result<(), OpError> {
    fault(conn, ctx, Some(number), kind, detail)?;
    crate::db::alerts::raise(conn, &ctx.locker_id, Some(number), alert_kind, detail)?;
    Ok(())
}

/// Takes a compartment out of service and records the fault for the property manager.
pub fn fault(conn: &mut DbConn, ctx: &LockerCtx, number: Option<i32>, kind: &str, detail: &str) -> Result<(), OpError> {
    record(conn, ctx, number, kind, detail)?;
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
) -> Result<Vec<Discrepancy>, OpError> {
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
