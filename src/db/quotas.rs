//! Rows of `carrier_quotas`: how many shared compartments of each size a carrier may hold at a
//! locker at once, and how many it holds.

use std::collections::{BTreeMap, HashSet};

use diesel::prelude::*;

use super::schema::{carrier_quotas as q, compartments, parcels};
use super::DbConn;
use crate::domain::parcel::ParcelState;
use crate::domain::Size;

/// Limits by size (a size without a row has none).
pub type Limits = BTreeMap<Size, u32>;

/// The carriers with any quota at this locker.
pub fn carriers_with_quotas(conn: &mut DbConn, locker_id: &str) -> QueryResult<HashSet<String>> {
    Ok(q::table
        .filter(q::locker_id.eq(locker_id))
        .select(q::carrier_id)
        .distinct()
        .load::<String>(conn)?
        .into_iter()
        .collect())
}

/// The carrier's limits at this locker.
pub fn limits(conn: &mut DbConn, locker_id: &str, carrier_id: &str) -> QueryResult<Limits> {
    let rows: Vec<(String, i32)> = q::table
        .filter(q::locker_id.eq(locker_id))
        .filter(q::carrier_id.eq(carrier_id))
        .select((q::size, q::max_in_use))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(s, n)| Some((Size::parse(&s)?, u32::try_from(n).ok()?)))
        .collect())
}

/// The carrier's limits and what it holds, if it has a quota at this locker (`has`: whether
/// the locker's context says so; without one, nothing is read).
pub fn quota(conn: &mut DbConn, locker_id: &str, carrier_id: &str, has: bool) -> QueryResult<Option<(Limits, Limits)>> {
    if !has {
        return Ok(None);
    }
    let l = limits(conn, locker_id, carrier_id)?;
    if l.is_empty() {
        return Ok(None);
    }
    Ok(Some((l, in_use(conn, locker_id, carrier_id)?)))
}

/// Every quota at this locker: (carrier, limits).
pub fn all(conn: &mut DbConn, locker_id: &str) -> QueryResult<BTreeMap<String, Limits>> {
    let rows: Vec<(String, String, i32)> = q::table
        .filter(q::locker_id.eq(locker_id))
        .select((q::carrier_id, q::size, q::max_in_use))
        .load(conn)?;
    let mut out: BTreeMap<String, Limits> = BTreeMap::new();
    for (carrier, s, n) in rows {
        if let (Some(size), Ok(n)) = (Size::parse(&s), u32::try_from(n)) {
            out.entry(carrier).or_default().insert(size, n);
        }
    }
    Ok(out)
}

/// The shared-pool compartments of each size the carrier's live parcels hold at this locker
/// (reserved, deposited, expired): what its quota counts.
pub fn in_use(conn: &mut DbConn, locker_id: &str, carrier_id: &str) -> QueryResult<Limits> {
    let live = [
        ParcelState::Reserved.as_str(),
        ParcelState::Deposited.as_str(),
        ParcelState::Expired.as_str(),
    ];
    let sizes: Vec<String> = parcels::table
        .inner_join(compartments::table.on(compartments::id.nullable().eq(parcels::compartment_id)))
        .filter(parcels::locker_id.eq(locker_id))
        .filter(parcels::carrier_id.eq(carrier_id))
        .filter(parcels::state.eq_any(live))
        .filter(compartments::section_id.is_null())
        .select(compartments::size)
        .load(conn)?;
    let mut out = Limits::new();
    for s in sizes.iter().filter_map(|s| Size::parse(s)) {
        *out.entry(s).or_default() += 1;
    }
    Ok(out)
}

/// Replaces the carrier's limits at this locker (none: no quota).
pub fn replace(conn: &mut DbConn, locker_id: &str, carrier_id: &str, limits: &Limits) -> QueryResult<()> {
    diesel::delete(
        q::table
            .filter(q::locker_id.eq(locker_id))
            .filter(q::carrier_id.eq(carrier_id)),
    )
    .execute(conn)?;
    for (size, n) in limits {
        diesel::insert_into(q::table)
            .values((
                q::locker_id.eq(locker_id),
                q::carrier_id.eq(carrier_id),
                q::size.eq(size.as_str()),
                q::max_in_use.eq(i32::try_from(*n).unwrap_or(i32::MAX)),
            ))
            .execute(conn)?;
    }
    Ok(())
}
