//! Rows of a 1.1 locker's local code list (`local_lists`, `local_list_entries`).
//!
//! An entry is inserted, sealed, in the transaction that issues its code (the code and factor
//! encrypted under the server key: the verifier's slow hash is made later, off the write
//! path). A sync makes the verifiers, and retires the entries whose code is no longer the
//! parcel's; each sync that changes anything is one new list version. Retired rows are kept
//! for a while so a device a few versions behind gets a differential update.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::{carriers, local_list_entries as e, local_lists, parcels};
use super::{now, DbConn};
use crate::domain::parcel::ParcelState;
use crate::offline_list::EntryKind;

/// How many versions back a differential update reaches; a device further behind gets a full list.
pub const DIFF_VERSIONS: i64 = 64;

/// A locker's list: its version, key epoch and salt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub version: i64,
    pub epoch: i32,
    pub salt: String,
}

/// The list's head, if the locker has one.
pub fn current(conn: &mut DbConn, locker_id: &str) -> QueryResult<Option<Head>> {
    Ok(local_lists::table
        .find(locker_id)
        .select((local_lists::version, local_lists::epoch, local_lists::salt))
        .get_result::<(i64, i32, String)>(conn)
        .optional()?
        .map(|(version, epoch, salt)| Head { version, epoch, salt }))
}

/// The list's head, created (version 0) if the locker has none yet.
pub fn head(conn: &mut DbConn, locker_id: &str) -> QueryResult<Head> {
    if let Some(h) = current(conn, locker_id)? {
        return Ok(h);
    }
    let salt = crate::credentials::generate_token("")[..22].to_string();
    diesel::insert_into(local_lists::table)
        .values((
            local_lists::locker_id.eq(locker_id),
            local_lists::version.eq(0i64),
            local_lists::epoch.eq(1),
            local_lists::salt.eq(&salt),
            local_lists::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(Head {
        version: 0,
        epoch: 1,
        salt,
    })
}

/// A new entry, sealed: its code and factor encrypted until its verifier is made.
/// `binding` is what the entry stands for, and it is retired when that changes: the code hash
/// of a pickup or collection code, the compartment id of a reservation, the courier code hash
/// of a carrier.
pub struct NewEntry<'a> {
    pub id: &'a str,
    pub kind: EntryKind,
    pub locker_id: &'a str,
    pub parcel_id: Option<&'a str>,
    pub carrier_id: Option<&'a str>,
    pub compartment: Option<i32>,
    pub binding: &'a str,
    pub sealed: &'a str,
    pub expires_at: NaiveDateTime,
}

pub fn add(conn: &mut DbConn, n: &NewEntry<'_>) -> QueryResult<()> {
    diesel::insert_into(e::table)
        .values((
            e::id.eq(n.id),
            e::locker_id.eq(n.locker_id),
            e::parcel_id.eq(n.parcel_id),
            e::carrier_id.eq(n.carrier_id),
            e::kind.eq(n.kind.as_str()),
            e::compartment.eq(n.compartment),
            e::code_hash.eq(n.binding),
            e::sealed.eq(n.sealed),
            e::expires_at.eq(n.expires_at),
            e::created_at.eq(now()),
        ))
        .execute(conn)
        .map(drop)
}

/// Entries still sealed (no verifier yet) and live: (id, kind, sealed).
pub fn sealed(conn: &mut DbConn, locker_id: &str) -> QueryResult<Vec<(String, EntryKind, String)>> {
    let rows: Vec<(String, String, String)> = e::table
        .filter(e::locker_id.eq(locker_id))
        .filter(e::removed_version.is_null())
        .filter(e::sealed.is_not_null())
        .select((e::id, e::kind, e::sealed.assume_not_null()))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, kind, sealed)| Some((id, EntryKind::parse(&kind)?, sealed)))
        .collect())
}

/// Live entries that no longer stand for what they were made for, or that have expired: a
/// pickup code that is no longer its parcel's (picked up, resent, returned, removed), a
/// collection code likewise or whose parcel is no longer expired, a reservation whose parcel
/// no longer holds that compartment reserved, a courier code its carrier no longer has (or an
/// inactive carrier's).
pub fn stale(conn: &mut DbConn, locker_id: &str, at: NaiveDateTime) -> QueryResult<Vec<String>> {
    let live = e::table
        .filter(e::locker_id.eq(locker_id))
        .filter(e::removed_version.is_null());
    let mut out: Vec<String> = live.filter(e::expires_at.lt(at)).select(e::id).load(conn)?;
    let by_parcel = live.inner_join(parcels::table.on(parcels::id.nullable().eq(e::parcel_id)));
    out.extend(
        by_parcel
            .filter(e::kind.eq(EntryKind::Pickup.as_str()))
            .filter(
                parcels::pickup_code_hash
                    .is_null()
                    .or(parcels::pickup_code_hash.ne(e::code_hash.nullable())),
            )
            .select(e::id)
            .load::<String>(conn)?,
    );
    out.extend(
        by_parcel
            .filter(e::kind.eq(EntryKind::Collection.as_str()))
            .filter(
                parcels::collection_code_hash
                    .is_null()
                    .or(parcels::collection_code_hash.ne(e::code_hash.nullable()))
                    .or(parcels::state.ne(ParcelState::Expired.as_str())),
            )
            .select(e::id)
            .load::<String>(conn)?,
    );
    out.extend(
        by_parcel
            .filter(e::kind.eq(EntryKind::Deposit.as_str()))
            .filter(
                parcels::compartment_id
                    .is_null()
                    .or(parcels::compartment_id.ne(e::code_hash.nullable()))
                    .or(parcels::state.ne(ParcelState::Reserved.as_str())),
            )
            .select(e::id)
            .load::<String>(conn)?,
    );
    // A deactivated carrier's collections and deposits go with its courier entry.
    out.extend(
        by_parcel
            .inner_join(carriers::table.on(carriers::id.eq(parcels::carrier_id)))
            .filter(e::kind.eq_any([EntryKind::Collection.as_str(), EntryKind::Deposit.as_str()]))
            .filter(carriers::active.eq(false))
            .select(e::id)
            .load::<String>(conn)?,
    );
    out.extend(
        live.inner_join(carriers::table.on(carriers::id.nullable().eq(e::carrier_id)))
            .filter(e::kind.eq(EntryKind::Courier.as_str()))
            .filter(
                carriers::active
                    .eq(false)
                    .or(carriers::courier_code_hash.is_null())
                    .or(carriers::courier_code_hash.ne(e::code_hash.nullable())),
            )
            .select(e::id)
            .load::<String>(conn)?,
    );
    out.sort();
    out.dedup();
    Ok(out)
}

/// Takes the list's row for this transaction (on PostgreSQL, until commit): two syncs of one
/// locker then add its courier entries once.
pub fn lock(conn: &mut DbConn, locker_id: &str) -> QueryResult<()> {
    diesel::update(local_lists::table.find(locker_id))
        .set(local_lists::updated_at.eq(now()))
        .execute(conn)
        .map(drop)
}

/// The active carriers whose courier code this locker's list does not carry yet (a new
/// carrier, a new list): (carrier id, courier code hash).
pub fn couriers_missing(conn: &mut DbConn, locker_id: &str) -> QueryResult<Vec<(String, String)>> {
    let carried: Vec<String> = e::table
        .filter(e::locker_id.eq(locker_id))
        .filter(e::removed_version.is_null())
        .filter(e::kind.eq(EntryKind::Courier.as_str()))
        .select(e::code_hash)
        .load(conn)?;
    let all: Vec<(String, Option<String>)> = carriers::table
        .filter(carriers::active.eq(true))
        .select((carriers::id, carriers::courier_code_hash))
        .load(conn)?;
    Ok(all
        .into_iter()
        .filter_map(|(id, h)| Some((id, h?)))
        .filter(|(_, h)| !carried.contains(h))
        .collect())
}

/// Stores made verifiers (id, tag, verifier) and retires `stale`, as one new version if there
/// is anything; forgets rows retired more than [`DIFF_VERSIONS`] ago. Returns the head after it.
pub fn commit(
    conn: &mut DbConn,
    locker_id: &str,
    verified: &[(String, u8, String)],
    stale: &[String],
) -> QueryResult<Head> {
    if verified.is_empty() && stale.is_empty() {
        return head(conn, locker_id);
    }
    // Incremented in place, then read: on PostgreSQL the update holds the row until commit, so
    // two syncs of one locker never make the same version.
    diesel::update(local_lists::table.find(locker_id))
        .set((
            local_lists::version.eq(local_lists::version + 1),
            local_lists::updated_at.eq(now()),
        ))
        .execute(conn)?;
    let h = head(conn, locker_id)?;
    let v = h.version;
    for (id, tag, verifier) in verified {
        diesel::update(e::table.find(id).filter(e::removed_version.is_null()))
            .set((
                e::tag.eq(i32::from(*tag)),
                e::verifier.eq(verifier),
                e::sealed.eq(None::<String>),
                e::added_version.eq(v),
            ))
            .execute(conn)?;
    }
    for id in stale {
        diesel::update(e::table.find(id))
            .set((e::removed_version.eq(v), e::sealed.eq(None::<String>)))
            .execute(conn)?;
    }
    diesel::delete(
        e::table
            .filter(e::locker_id.eq(locker_id))
            .filter(e::removed_version.lt(v - DIFF_VERSIONS)),
    )
    .execute(conn)?;
    Ok(h)
}

/// One entry as the device gets it.
#[derive(Debug, Clone, Queryable)]
pub struct Entry {
    pub id: String,
    pub kind: String,
    pub compartment: Option<i32>,
    pub tag: i32,
    pub verifier: String,
    pub expires_at: NaiveDateTime,
}

/// The live entries with verifiers, or (with `since`) those added after version `since`.
pub fn upserts(conn: &mut DbConn, locker_id: &str, since: Option<i64>) -> QueryResult<Vec<Entry>> {
    let q = e::table
        .filter(e::locker_id.eq(locker_id))
        .filter(e::removed_version.is_null())
        .filter(e::verifier.is_not_null())
        .filter(e::added_version.gt(since.unwrap_or(0)))
        .order(e::id.asc())
        .select((
            e::id,
            e::kind,
            e::compartment,
            e::tag.assume_not_null(),
            e::verifier.assume_not_null(),
            e::expires_at,
        ));
    q.load(conn)
}

/// The ids of entries the device has (added at or before `since`) that were retired after it.
pub fn removals(conn: &mut DbConn, locker_id: &str, since: i64) -> QueryResult<Vec<String>> {
    e::table
        .filter(e::locker_id.eq(locker_id))
        .filter(e::added_version.le(since))
        .filter(e::removed_version.gt(since))
        .order(e::id.asc())
        .select(e::id)
        .load(conn)
}

/// What a journal event's entry stood for, if this locker's list had it.
#[derive(Debug, Clone, Queryable)]
pub struct Issued {
    pub kind: String,
    pub parcel_id: Option<String>,
    pub compartment: Option<i32>,
    /// See [`NewEntry`]'s `binding`.
    pub binding: String,
}

/// The entry `id`, if this locker's list had it (live or retired).
pub fn find(conn: &mut DbConn, locker_id: &str, id: &str) -> QueryResult<Option<Issued>> {
    e::table
        .find(id)
        .filter(e::locker_id.eq(locker_id))
        .select((e::kind, e::parcel_id, e::compartment, e::code_hash))
        .get_result(conn)
        .optional()
}
