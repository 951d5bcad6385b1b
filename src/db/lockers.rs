//! Lockers (banks of compartments), their compartments, and carriers' dedicated sections.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::page::{Page, Paged};
use super::schema::{compartments, lockers, parcels, sections};
use super::{new_id, now, DbConn};
use crate::credentials::{generate_token, hash_token};
use crate::domain::allocation::{Section as SectionRule, Slot};
use crate::domain::{CompartmentStatus, Size};

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = lockers)]
pub struct Locker {
    pub id: String,
    pub site_id: String,
    pub name: String,
    pub location: String,
    #[serde(skip)]
    pub credential_hash: String,
    #[serde(skip)]
    pub code_salt: String,
    pub active: bool,
    pub firmware_version: Option<String>,
    pub protocol_version: Option<String>,
    pub connected: bool,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = compartments)]
pub struct Compartment {
    pub id: String,
    pub locker_id: String,
    pub number: i32,
    #[schema(value_type = Size)]
    pub size: String,
    pub accessible: bool,
    #[schema(value_type = CompartmentStatus)]
    pub status: String,
    pub section_id: Option<String>,
    /// Last hardware fault that took it out of service.
    pub fault: Option<String>,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = sections)]
pub struct Section {
    pub id: String,
    pub locker_id: String,
    pub carrier_id: String,
    /// An exclusive section's carrier never spills into the shared pool.
    pub exclusive: bool,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

/// One compartment to create.
#[derive(Debug, Clone, Copy)]
pub struct NewCompartment {
    pub number: i32,
    pub size: Size,
    pub accessible: bool,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = lockers)]
pub struct LockerChanges {
    pub name: Option<String>,
    pub location: Option<String>,
    pub active: Option<bool>,
    pub updated_at: Option<NaiveDateTime>,
}

/// Creates a locker and its compartments; returns it with the device credential (shown once).
pub fn insert(
    conn: &mut DbConn,
    site_id: &str,
    name: &str,
    location: &str,
    layout: &[NewCompartment],
) -> QueryResult<(Locker, String)> {
    let id = new_id();
    let credential = generate_token("lhd_");
    let t = now();
    diesel::insert_into(lockers::table)
        .values((
            lockers::id.eq(&id),
            lockers::site_id.eq(site_id),
            lockers::name.eq(name),
            lockers::location.eq(location),
            lockers::credential_hash.eq(hash_token(&credential)),
            lockers::code_salt.eq(generate_token("")),
            lockers::created_at.eq(t),
            lockers::updated_at.eq(t),
        ))
        .execute(conn)?;
    insert_compartments(conn, &id, layout)?;
    Ok((get(conn, &id)?, credential))
}

pub fn get(conn: &mut DbConn, id: &str) -> QueryResult<Locker> {
    lockers::table.find(id).select(Locker::as_select()).get_result(conn)
}

/// Every locker of a site (active or not), oldest first.
pub fn at_site(conn: &mut DbConn, site_id: &str) -> QueryResult<Vec<Locker>> {
    lockers::table
        .filter(lockers::site_id.eq(site_id))
        .order(lockers::id.asc())
        .select(Locker::as_select())
        .load(conn)
}

pub fn list(conn: &mut DbConn, site_id: Option<&str>, page: &Page) -> QueryResult<Paged<Locker>> {
    let mut q = lockers::table
        .select(Locker::as_select())
        .order(lockers::id.asc())
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(after) = &page.after {
        q = q.filter(lockers::id.gt(after.clone()));
    }
    if let Some(site) = site_id {
        q = q.filter(lockers::site_id.eq(site.to_string()));
    }
    Ok(Paged::from_rows(q.load(conn)?, page, |l| &l.id))
}

pub fn update(conn: &mut DbConn, id: &str, mut changes: LockerChanges) -> QueryResult<Locker> {
    changes.updated_at = Some(now());
    let n = diesel::update(lockers::table.find(id)).set(&changes).execute(conn)?;
    if n == 0 {
        return Err(diesel::result::Error::NotFound);
    }
    get(conn, id)
}

/// Replaces the device credential; the old one stops working at once.
pub fn rotate_credential(conn: &mut DbConn, id: &str) -> QueryResult<String> {
    let credential = generate_token("lhd_");
    let n = diesel::update(lockers::table.find(id))
        .set((
            lockers::credential_hash.eq(hash_token(&credential)),
            lockers::updated_at.eq(now()),
        ))
        .execute(conn)?;
    if n == 0 {
        return Err(diesel::result::Error::NotFound);
    }
    Ok(credential)
}

/// The active locker a device credential belongs to.
pub fn authenticate_device(conn: &mut DbConn, id: &str, credential: &str) -> QueryResult<Option<Locker>> {
    lockers::table
        .find(id)
        .filter(lockers::credential_hash.eq(hash_token(credential)))
        .filter(lockers::active.eq(true))
        .select(Locker::as_select())
        .get_result(conn)
        .optional()
}

pub fn set_connection(conn: &mut DbConn, id: &str, connected: bool, versions: Option<(&str, &str)>) -> QueryResult<()> {
    let t = now();
    diesel::update(lockers::table.find(id))
        .set((lockers::connected.eq(connected), lockers::last_seen_at.eq(t)))
        .execute(conn)?;
    if let Some((firmware, protocol)) = versions {
        diesel::update(lockers::table.find(id))
            .set((
                lockers::firmware_version.eq(firmware),
                lockers::protocol_version.eq(protocol),
            ))
            .execute(conn)?;
    }
    Ok(())
}

pub fn insert_compartments(conn: &mut DbConn, locker_id: &str, layout: &[NewCompartment]) -> QueryResult<()> {
    let t = now();
    let rows: Vec<_> = layout
        .iter()
        .map(|c| {
            (
                compartments::id.eq(new_id()),
                compartments::locker_id.eq(locker_id),
                compartments::number.eq(c.number),
                compartments::size.eq(c.size.as_str()),
                compartments::accessible.eq(c.accessible),
                compartments::status.eq(CompartmentStatus::Free.as_str()),
                compartments::created_at.eq(t),
                compartments::updated_at.eq(t),
            )
        })
        .collect();
    // One statement per row: MultiConnection has no batch insert. Callers hold a transaction.
    for row in rows {
        diesel::insert_into(compartments::table).values(row).execute(conn)?;
    }
    Ok(())
}

pub fn max_compartment_number(conn: &mut DbConn, locker_id: &str) -> QueryResult<i32> {
    compartments::table
        .filter(compartments::locker_id.eq(locker_id))
        .select(diesel::dsl::max(compartments::number))
        .get_result::<Option<i32>>(conn)
        .map(|m| m.unwrap_or(0))
}

pub fn compartments_of(conn: &mut DbConn, locker_id: &str) -> QueryResult<Vec<Compartment>> {
    compartments::table
        .filter(compartments::locker_id.eq(locker_id))
        .order(compartments::number.asc())
        .select(Compartment::as_select())
        .load(conn)
}

pub fn compartment_by_number(conn: &mut DbConn, locker_id: &str, number: i32) -> QueryResult<Compartment> {
    compartments::table
        .filter(compartments::locker_id.eq(locker_id))
        .filter(compartments::number.eq(number))
        .select(Compartment::as_select())
        .get_result(conn)
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = compartments)]
pub struct CompartmentChanges {
    pub size: Option<String>,
    pub accessible: Option<bool>,
    pub status: Option<String>,
    pub fault: Option<Option<String>>,
    pub updated_at: Option<NaiveDateTime>,
}

pub fn update_compartment(
    conn: &mut DbConn,
    locker_id: &str,
    number: i32,
    mut changes: CompartmentChanges,
) -> QueryResult<Compartment> {
    changes.updated_at = Some(now());
    let n = diesel::update(
        compartments::table
            .filter(compartments::locker_id.eq(locker_id))
            .filter(compartments::number.eq(number)),
    )
    .set(&changes)
    .execute(conn)?;
    if n == 0 {
        return Err(diesel::result::Error::NotFound);
    }
    compartment_by_number(conn, locker_id, number)
}

/// The status a compartment returns to when it comes back into service: whatever its live
/// parcel says, or free.
pub fn status_from_parcels(conn: &mut DbConn, compartment_id: &str) -> QueryResult<CompartmentStatus> {
    let states: Vec<String> = parcels::table
        .filter(parcels::compartment_id.eq(compartment_id))
        .filter(parcels::state.eq_any(["reserved", "deposited", "expired"]))
        .select(parcels::state)
        .load(conn)?;
    Ok(if states.iter().any(|s| s != "reserved") {
        CompartmentStatus::Occupied
    } else if states.is_empty() {
        CompartmentStatus::Free
    } else {
        CompartmentStatus::Reserved
    })
}

pub fn set_compartment_status(
    conn: &mut DbConn,
    compartment_id: &str,
    status: CompartmentStatus,
    fault: Option<&str>,
) -> QueryResult<()> {
    diesel::update(compartments::table.find(compartment_id))
        .set((
            compartments::status.eq(status.as_str()),
            compartments::fault.eq(fault),
            compartments::updated_at.eq(now()),
        ))
        .execute(conn)
        .map(drop)
}

pub fn sections_of(conn: &mut DbConn, locker_id: &str) -> QueryResult<Vec<Section>> {
    sections::table
        .filter(sections::locker_id.eq(locker_id))
        .order(sections::id.asc())
        .select(Section::as_select())
        .load(conn)
}

/// Makes `numbers` the carrier's section at this locker (creating the section if needed);
/// compartments that were in it and are not listed return to the shared pool.
pub fn put_section(
    conn: &mut DbConn,
    locker_id: &str,
    carrier_id: &str,
    exclusive: bool,
    numbers: &[i32],
) -> QueryResult<Section> {
    let t = now();
    let existing: Option<String> = sections::table
        .filter(sections::locker_id.eq(locker_id))
        .filter(sections::carrier_id.eq(carrier_id))
        .select(sections::id)
        .first(conn)
        .optional()?;
    let section_id = match existing {
        Some(id) => {
            diesel::update(sections::table.find(&id))
                .set((sections::exclusive.eq(exclusive), sections::updated_at.eq(t)))
                .execute(conn)?;
            id
        }
        None => {
            let id = new_id();
            diesel::insert_into(sections::table)
                .values((
                    sections::id.eq(&id),
                    sections::locker_id.eq(locker_id),
                    sections::carrier_id.eq(carrier_id),
                    sections::exclusive.eq(exclusive),
                    sections::created_at.eq(t),
                    sections::updated_at.eq(t),
                ))
                .execute(conn)?;
            id
        }
    };
    diesel::update(compartments::table.filter(compartments::section_id.eq(&section_id)))
        .set((
            compartments::section_id.eq(None::<String>),
            compartments::updated_at.eq(t),
        ))
        .execute(conn)?;
    diesel::update(
        compartments::table
            .filter(compartments::locker_id.eq(locker_id))
            .filter(compartments::number.eq_any(numbers)),
    )
    .set((compartments::section_id.eq(&section_id), compartments::updated_at.eq(t)))
    .execute(conn)?;
    sections::table
        .find(&section_id)
        .select(Section::as_select())
        .get_result(conn)
}

/// Dissolves a carrier's section: its compartments return to the shared pool.
pub fn delete_section(conn: &mut DbConn, locker_id: &str, carrier_id: &str) -> QueryResult<()> {
    let id: String = sections::table
        .filter(sections::locker_id.eq(locker_id))
        .filter(sections::carrier_id.eq(carrier_id))
        .select(sections::id)
        .first(conn)?;
    diesel::update(compartments::table.filter(compartments::section_id.eq(&id)))
        .set((
            compartments::section_id.eq(None::<String>),
            compartments::updated_at.eq(now()),
        ))
        .execute(conn)?;
    diesel::delete(sections::table.find(&id)).execute(conn).map(drop)
}

/// The allocator's view of a locker: every compartment with its section rule.
pub fn slots(conn: &mut DbConn, locker_id: &str) -> QueryResult<Vec<Slot>> {
    let secs = sections_of(conn, locker_id)?;
    let comps = compartments_of(conn, locker_id)?;
    // From `iter()`, not `into_iter()`: collecting in place would reuse the rows' buffer, and
    // every locker actor would keep about 1.4 KB of row-sized capacity for its few slots.
    Ok(comps
        .iter()
        .map(|c| Slot {
            number: c.number,
            size: Size::parse(&c.size).unwrap_or(Size::S),
            accessible: c.accessible,
            status: CompartmentStatus::parse(&c.status).unwrap_or(CompartmentStatus::OutOfService),
            section: c.section_id.as_ref().and_then(|sid| {
                secs.iter().find(|s| &s.id == sid).map(|s| SectionRule {
                    carrier_id: s.carrier_id.clone(),
                    exclusive: s.exclusive,
                })
            }),
        })
        .collect())
}

/// The live parcels in this locker's compartments (reserved for, deposited or expired), for
/// the partition rule.
pub fn occupants(conn: &mut DbConn, locker_id: &str) -> QueryResult<Vec<crate::domain::partition::Occupant>> {
    let rows: Vec<(String, String, String, String, i32)> = parcels::table
        .inner_join(compartments::table.on(parcels::compartment_id.eq(compartments::id.nullable())))
        .filter(compartments::locker_id.eq(locker_id))
        .filter(parcels::state.eq_any(["reserved", "deposited", "expired"]))
        .select((
            parcels::id,
            parcels::tracking_number,
            parcels::carrier_id,
            parcels::state,
            compartments::number,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(
            |(parcel_id, tracking_number, carrier_id, state, compartment)| crate::domain::partition::Occupant {
                parcel_id,
                tracking_number,
                carrier_id,
                compartment,
                state,
            },
        )
        .collect())
}

/// What a locker actor knows about itself, passed into its transactions.
#[derive(Debug, Clone)]
pub struct LockerCtx {
    pub locker_id: String,
    pub locker_name: String,
    pub site_id: String,
    pub code_salt: String,
    /// Whether the locker's device keeps a local code list (it booted as 1.1): codes issued
    /// for it then get a list entry (`db::local_lists`).
    pub offline_list: bool,
    /// The carriers with a quota at this locker (`db::quotas`): only their allocations count
    /// what they hold.
    pub quota_carriers: std::collections::HashSet<String>,
    /// The carriers allowed here (`None`: every carrier).
    pub allowed_carriers: Option<std::collections::HashSet<String>>,
}

impl LockerCtx {
    /// Whether this carrier may book and deposit here.
    pub fn allows(&self, carrier_id: &str) -> bool {
        self.allowed_carriers.as_ref().is_none_or(|a| a.contains(carrier_id))
    }
}

impl LockerCtx {
    pub fn actor(&self) -> String {
        format!("locker:{}", self.locker_id)
    }
}
