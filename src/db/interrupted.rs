//! Door sessions a server restart interrupted: found in the database when a locker's state is
//! first loaded, and settled at the device's boot by the rule in `domain::recovery`.

use std::collections::HashSet;

use diesel::prelude::*;

use super::schema::{compartments, parcel_events, parcels};
use super::{recipients, DbConn};
use crate::db::lockers::LockerCtx;
use crate::domain::deposit::Prior;
use crate::domain::parcel::ParcelState;
use crate::domain::recovery::Interrupted;

/// Parcel event recorded when a locker did not come back in time to settle a session.
pub const OUTCOME_UNKNOWN: &str = "session_outcome_unknown";

/// Id, carrier, state, compartment id and recipient of a parcel that may have a session.
type LiveParcel = (String, String, String, Option<String>, Option<String>);

/// What settling an interrupted session needs.
#[derive(Debug, Clone)]
pub struct Session {
    pub parcel_id: String,
    pub number: i32,
    pub kind: Interrupted,
    /// For a deposit: where the parcel stood before it, so a cancel can put it back.
    pub prior: Option<Prior>,
}

/// An interrupted session as found in the database.
#[derive(Debug, Clone)]
pub struct Found {
    pub session: Session,
    pub carrier_id: String,
    pub needs_accessible: bool,
    /// Already marked `session_outcome_unknown` (by an earlier server process).
    pub reported: bool,
}

/// Lockers that may have an interrupted door session (a live parcel in a compartment): the
/// hub starts their actors at startup, so a locker that never reconnects is still noticed.
pub fn lockers_to_check(conn: &mut DbConn) -> QueryResult<Vec<String>> {
    let live = [
        ParcelState::Reserved.as_str(),
        ParcelState::Deposited.as_str(),
        ParcelState::Expired.as_str(),
    ];
    let ids: Vec<Option<String>> = parcels::table
        .filter(parcels::state.eq_any(live))
        .filter(parcels::compartment_id.is_not_null())
        .select(parcels::locker_id)
        .distinct()
        .load(conn)?;
    Ok(ids.into_iter().flatten().collect())
}

/// Door sessions in progress at this locker according to the database: parcels whose latest
/// event (ignoring `session_outcome_unknown`) opened a door that no later event closed.
/// `skip` holds the parcels whose session this process still tracks.
pub fn load(conn: &mut DbConn, ctx: &LockerCtx, skip: &HashSet<String>) -> QueryResult<Vec<Found>> {
    let live = [
        ParcelState::Reserved.as_str(),
        ParcelState::Deposited.as_str(),
        ParcelState::Expired.as_str(),
    ];
    let rows: Vec<LiveParcel> = parcels::table
        .filter(parcels::locker_id.eq(&ctx.locker_id))
        .filter(parcels::state.eq_any(live))
        .select((
            parcels::id,
            parcels::carrier_id,
            parcels::state,
            parcels::compartment_id,
            parcels::recipient_id,
        ))
        .load(conn)?;
    // Every event of these parcels in one query, newest first: a handful per parcel.
    let ids: Vec<&String> = rows.iter().map(|r| &r.0).collect();
    let events: Vec<(String, String)> = parcel_events::table
        .filter(parcel_events::parcel_id.eq_any(ids))
        .order(parcel_events::id.desc())
        .select((parcel_events::parcel_id, parcel_events::kind))
        .load(conn)?;
    let mut found = Vec::new();
    for (id, carrier_id, state, comp, recipient) in rows {
        let Some(comp) = comp.filter(|_| !skip.contains(&id)) else {
            continue;
        };
        let kinds: Vec<&String> = events.iter().filter(|(p, _)| *p == id).map(|(_, k)| k).collect();
        let reported = kinds.first().is_some_and(|k| *k == OUTCOME_UNKNOWN);
        let latest = kinds.iter().find(|k| **k != OUTCOME_UNKNOWN).map(|k| k.as_str());
        let reserved = state == ParcelState::Reserved.as_str();
        let kind = match latest {
            Some("deposit_started" | "upsized") if reserved => Interrupted::Deposit,
            Some("pickup_opened") if !reserved => Interrupted::Pickup,
            Some("collection_opened") if !reserved => Interrupted::Collection,
            // A pre-advice reservation (meant to last), or a session that ended.
            _ => continue,
        };
        let prior = (kind == Interrupted::Deposit).then(|| {
            if kinds.iter().any(|k| *k == "pre_advised") {
                Prior::PreAdvised { compartment: None }
            } else {
                Prior::WalkUp
            }
        });
        let needs_accessible = match &recipient {
            Some(r) => recipients::get(conn, r)?.needs_accessible,
            None => false,
        };
        let number = compartments::table
            .find(&comp)
            .select(compartments::number)
            .get_result(conn)?;
        found.push(Found {
            session: Session {
                parcel_id: id,
                number,
                kind,
                prior,
            },
            carrier_id,
            needs_accessible,
            reported,
        });
    }
    Ok(found)
}
