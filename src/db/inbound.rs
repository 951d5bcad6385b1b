//! Carrier callbacks: idempotency by event id, and the transactions they cause.

use diesel::prelude::*;
use serde_json::Value;

use super::schema::{compartments, inbound_events, lockers as lockers_t, parcels};
use super::{now, parcels as parcel_rows, DbConn};
use crate::domain::parcel::ParcelState;
use crate::domain::{CompartmentStatus, Size};

/// The stored answer to an event this carrier already sent.
pub fn answered(conn: &mut DbConn, carrier_id: &str, event_id: &str) -> QueryResult<Option<(u16, Value)>> {
    let row: Option<(i32, String)> = inbound_events::table
        .find((carrier_id, event_id))
        .select((inbound_events::response_status, inbound_events::response_body))
        .get_result(conn)
        .optional()?;
    Ok(row.map(|(s, b)| (s as u16, serde_json::from_str(&b).unwrap_or(Value::Null))))
}

/// Records the answer to an event, in the transaction that acted on it.
pub fn remember(conn: &mut DbConn, carrier_id: &str, event_id: &str, status: u16, body: &Value) -> QueryResult<()> {
    diesel::insert_into(inbound_events::table)
        .values((
            inbound_events::carrier_id.eq(carrier_id),
            inbound_events::event_id.eq(event_id),
            inbound_events::response_status.eq(i32::from(status)),
            inbound_events::response_body.eq(body.to_string()),
            inbound_events::received_at.eq(now()),
        ))
        .execute(conn)
        .map(drop)
}

/// The locker at a site with the most free compartments that fit `size`.
pub fn best_locker(conn: &mut DbConn, site_id: &str, size: Size) -> QueryResult<Option<String>> {
    let fitting: Vec<&str> = Size::ALL.iter().filter(|s| **s >= size).map(|s| s.as_str()).collect();
    let rows: Vec<(String, i32)> = lockers_t::table
        .inner_join(compartments::table)
        .filter(lockers_t::site_id.eq(site_id))
        .filter(lockers_t::active.eq(true))
        .filter(compartments::status.eq(CompartmentStatus::Free.as_str()))
        .filter(compartments::size.eq_any(fitting))
        .select((lockers_t::id, compartments::number))
        .load(conn)?;
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for (id, _) in rows {
        *counts.entry(id).or_default() += 1;
    }
    if let Some((id, _)) = counts.iter().max_by_key(|(_, n)| **n) {
        return Ok(Some(id.clone()));
    }
    // All full: still attach the parcel to a locker of the site, so the driver can deposit
    // there if room appears.
    lockers_t::table
        .filter(lockers_t::site_id.eq(site_id))
        .filter(lockers_t::active.eq(true))
        .order(lockers_t::id.asc())
        .select(lockers_t::id)
        .first(conn)
        .optional()
}

/// This carrier's most recent parcel with this tracking number, optionally in given states.
/// Another carrier's parcel is never returned.
pub fn find_for_carrier(
    conn: &mut DbConn,
    carrier_id: &str,
    tracking_number: &str,
    states: &[ParcelState],
) -> QueryResult<Option<parcel_rows::Parcel>> {
    let mut q = parcels::table
        .filter(parcels::carrier_id.eq(carrier_id))
        .filter(parcels::tracking_number.eq(tracking_number))
        .order(parcels::id.desc())
        .select(parcel_rows::Parcel::as_select())
        .into_boxed();
    if !states.is_empty() {
        q = q.filter(parcels::state.eq_any(states.iter().map(|s| s.as_str()).collect::<Vec<_>>()));
    }
    q.first(conn).optional()
}
