//! Carrier callbacks: idempotency by event id, and the transactions they cause.

use std::collections::HashSet;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::json;

use crate::credentials::{generate_numeric_code, ServerKey};
use crate::db::compartments::{claim, settle_status};
use crate::db::lockers::LockerCtx;
use crate::db::parcels::{EventNote, ParcelChange};
use crate::db::schema::{compartments, parcels};
use crate::db::{carriers, new_id, now, parcels as parcel_rows, DbConn};
use crate::domain::allocation::Slot;
use crate::domain::booking::Rejection;
use crate::domain::deposit::{decide_reservation, Reservation};
use crate::domain::lifecycle::{self, ParcelAt};
use crate::domain::parcel::ParcelState;
use crate::domain::{CompartmentStatus, Size};
use crate::error::AppError;
use crate::offline_list::EntryKind;
use crate::workflows::effects::persist;
use crate::workflows::local_list::{add_parcel_entry, ParcelEntry};

/// A pre-advice, parsed and resolved to a site, recipient and locker.
#[derive(Debug, Clone)]
pub struct PreAdvice {
    pub event_id: String,
    pub carrier_id: String,
    pub tracking_number: String,
    pub site_id: String,
    pub recipient_id: String,
    pub needs_accessible: bool,
    pub size: Size,
    pub reserve_until: NaiveDateTime,
}

/// What a pre-advice led to; also the body of the answer to the carrier.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PreAdviceOutcome {
    pub parcel_id: String,
    /// `reserved`, or `expected` when no compartment was free (`parcel.reservation_failed` follows).
    pub state: String,
    pub locker_id: Option<String>,
    pub compartment: Option<i32>,
    #[serde(serialize_with = "crate::db::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub reserved_until: Option<NaiveDateTime>,
}

/// The answer to `cancel` or `redirect`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Cancelled {
    pub parcel_id: String,
    /// Always `cancelled`.
    pub state: String,
    /// The compartment the cancellation gave back, if the parcel held one.
    pub released_compartment: Option<i32>,
}

/// The answer to `return_collection`: the code the driver types at the kiosk. On a replay of
/// the same `webhook-id` the code is `null` (it is not stored): ask again with a new id.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CollectionIssued {
    pub parcel_id: String,
    pub locker_id: String,
    pub compartment: i32,
    pub collection_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Creates the expected parcel and, if a compartment fits, reserves it until `reserve_until`;
/// otherwise queues `reservation_failed` so the carrier can reroute. Runs in the locker's actor.
///
/// The reservation is decided first, so the parcel row is written once, in its final state:
/// its history is the same two events (`pre_advised`, then `reserved` as expected → reserved),
/// without a second write to the row and its indexes.
pub fn pre_advise(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    p: &PreAdvice,
    slots: &[Slot],
    busy: &HashSet<i32>,
) -> Result<PreAdviceOutcome, AppError> {
    let id = new_id();
    let t = now();
    let actor = format!("carrier:{}", p.carrier_id);
    let created = ParcelState::create(ParcelState::Expected)?;
    // Under the carrier's quota, if it has one here: only the compartments it may still take.
    let quota = crate::db::quotas::quota(
        conn,
        &ctx.locker_id,
        &p.carrier_id,
        ctx.quota_carriers.contains(&p.carrier_id),
    )?;
    let allowed = match &quota {
        Some((limits, used)) => std::borrow::Cow::Owned(crate::domain::booking::within_quota(slots, limits, used)),
        None => std::borrow::Cow::Borrowed(slots),
    };
    let decided = decide_reservation(&p.carrier_id, p.size, p.needs_accessible, &allowed, busy);
    let reserve = match decided {
        Reservation::Reserve(n) => {
            let reserved = created.to().transition(ParcelState::Reserved)?;
            let comp_id: String = compartments::table
                .filter(compartments::locker_id.eq(&ctx.locker_id))
                .filter(compartments::number.eq(n))
                .filter(compartments::status.eq(CompartmentStatus::Free.as_str()))
                .select(compartments::id)
                .get_result(conn)?;
            Some((n, comp_id, reserved))
        }
        Reservation::NoAccessible | Reservation::NoneFits => None,
    };
    let state = reserve.as_ref().map_or(created.to(), |(_, _, r)| r.to());
    diesel::insert_into(parcels::table)
        .values((
            parcels::id.eq(&id),
            parcels::carrier_id.eq(&p.carrier_id),
            parcels::tracking_number.eq(&p.tracking_number),
            parcels::site_id.eq(&p.site_id),
            parcels::recipient_id.eq(&p.recipient_id),
            parcels::locker_id.eq(&ctx.locker_id),
            parcels::compartment_id.eq(reserve.as_ref().map(|(_, c, _)| c.as_str())),
            parcels::size.eq(p.size.as_str()),
            parcels::state.eq(state.as_str()),
            parcels::reserved_until.eq(reserve.as_ref().map(|_| p.reserve_until)),
            parcels::created_at.eq(t),
            parcels::updated_at.eq(t),
        ))
        .execute(conn)
        .map_err(|e| match AppError::from(e) {
            AppError::Conflict { .. } => AppError::Conflict {
                code: "already_pre_advised",
                message: "this tracking number is already live at lockerhub".into(),
            },
            other => other,
        })?;
    parcel_rows::record_event(conn, &id, "pre_advised", None, &actor, json!({"event_id": p.event_id}))?;
    let Some((number, comp_id, reserved)) = reserve else {
        // A resident who needs an accessible compartment cannot use a plain one: rather than
        // reserve one silently, the pre-advice is refused (and rolled back) with the reason,
        // so the carrier can reroute or deliver in person. docs: README "Carriers",
        // `no_accessible_compartment`. Refused after the insert, so that a tracking number
        // already live is reported as such first.
        if decided == Reservation::NoAccessible {
            return Err(AppError::Conflict {
                code: "no_accessible_compartment",
                message: "the recipient needs an accessible compartment and none that fits is free at this locker"
                    .into(),
            });
        }
        // Full, or only too-small compartments free: the same code a pre-check gives.
        let why = crate::domain::booking::availability_within(
            &p.carrier_id,
            p.size,
            false,
            slots,
            busy,
            quota
                .as_ref()
                .map(|(limits, in_use)| crate::domain::booking::Quota { limits, in_use }),
        )
        .err()
        .unwrap_or(Rejection::NoFittingCompartment);
        let reason = match why {
            Rejection::LockerFull | Rejection::NoFittingCompartment => {
                format!("no free compartment fits size {}", p.size.as_str())
            }
            other => other.message().to_string(),
        };
        persist(
            conn,
            &lifecycle::reservation_failed(&at(&id, p, &ctx.locker_id), why, reason),
        )?;
        return Ok(PreAdviceOutcome {
            parcel_id: id,
            state: ParcelState::Expected.as_str().into(),
            locker_id: Some(ctx.locker_id.clone()),
            compartment: None,
            reserved_until: None,
        });
    };
    claim(conn, &ctx.locker_id, number)?;
    parcel_rows::record_event(
        conn,
        &id,
        "reserved",
        Some(reserved.as_event()),
        &actor,
        json!({"compartment": number, "until": crate::db::ts_string(p.reserve_until)}),
    )?;
    persist(conn, &lifecycle::reserved(&at(&id, p, &ctx.locker_id), p.reserve_until))?;
    // A 1.1 locker may take this deposit offline, from this carrier's driver (docs/protocol.md §15.8).
    let courier = match ctx.offline_list {
        true => carriers::courier_hash(conn, &p.carrier_id)?,
        false => None,
    };
    if let Some(courier) = courier {
        let entry = ParcelEntry {
            kind: EntryKind::Deposit,
            parcel_id: &id,
            compartment: number,
            binding: &comp_id,
            code: &p.tracking_number,
            factor: &courier,
            expires_at: p.reserve_until,
        };
        add_parcel_entry(conn, ctx, key, &entry)?;
    }
    Ok(PreAdviceOutcome {
        parcel_id: id,
        state: ParcelState::Reserved.as_str().into(),
        locker_id: Some(ctx.locker_id.clone()),
        compartment: Some(number),
        reserved_until: Some(p.reserve_until),
    })
}

/// Cancels a parcel that has not been deposited; returns the compartment it gave back.
pub fn cancel(conn: &mut DbConn, parcel_id: &str, actor: &str, reason: &str) -> Result<Option<i32>, AppError> {
    let p = parcel_rows::get(conn, parcel_id)?;
    let from = p.state();
    if !from.can_become(ParcelState::Cancelled) {
        return Err(AppError::Conflict {
            code: "invalid_state",
            message: format!("a {} parcel cannot be cancelled", from.as_str()),
        });
    }
    let mut freed = None;
    if let (Some(comp), Some(locker)) = (&p.compartment_id, &p.locker_id) {
        let number: i32 = compartments::table
            .find(comp)
            .select(compartments::number)
            .get_result(conn)?;
        settle_status(conn, locker, number, CompartmentStatus::Free)?;
        freed = Some(number);
    }
    parcel_rows::change_state(
        conn,
        parcel_id,
        from,
        ParcelState::Cancelled,
        ParcelChange {
            cancelled_at: Some(now()),
            ..ParcelChange::default()
        },
        EventNote {
            kind: "cancelled",
            actor,
            detail: json!({"reason": reason, "released_compartment": freed}),
        },
    )?;
    let at = p.at(p.locker_id.as_deref(), freed);
    persist(conn, &lifecycle::cancelled(&at))?;
    Ok(freed)
}

/// Issues a collection code for an expired parcel, unique among live codes at its locker, at
/// `at` (the application's clock: a 1.1 locker's list entry for it expires from then).
pub fn issue_collection_code(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    parcel_id: &str,
    len: usize,
    actor: &str,
    at: NaiveDateTime,
) -> Result<(String, i32), AppError> {
    let p = parcel_rows::get(conn, parcel_id)?;
    if p.state() != ParcelState::Expired {
        return Err(AppError::Conflict {
            code: "invalid_state",
            message: format!(
                "only an expired parcel can be collected for return; this one is {}",
                p.state
            ),
        });
    }
    let comp = p
        .compartment_id
        .clone()
        .ok_or_else(|| AppError::internal("expired parcel without compartment"))?;
    let number: i32 = compartments::table
        .find(comp)
        .select(compartments::number)
        .get_result(conn)?;
    for _ in 0..20 {
        let code = generate_numeric_code(len);
        let hash = key.code_hash(&ctx.code_salt, &format!("collect:{code}"));
        let taken: i64 = parcels::table
            .filter(parcels::locker_id.eq(&ctx.locker_id))
            .filter(parcels::collection_code_hash.eq(&hash))
            .count()
            .get_result(conn)?;
        if taken == 0 {
            diesel::update(parcels::table.find(parcel_id))
                .set((parcels::collection_code_hash.eq(&hash), parcels::updated_at.eq(now())))
                .execute(conn)?;
            parcel_rows::record_event(conn, parcel_id, "collection_code_issued", None, actor, json!({}))?;
            collection_entry(conn, ctx, key, &p.carrier_id, parcel_id, number, &code, &hash, at)?;
            return Ok((code, number));
        }
    }
    Err(AppError::internal("could not find a free collection code"))
}

/// How long a collection code opens a 1.1 locker offline, from its issue (online it opens until
/// the parcel is collected): the list entry's expiry (docs/protocol.md §15.8).
pub const COLLECTION_ENTRY_DAYS: i64 = 7;

/// For a 1.1 locker, the list entry of a collection code just issued: its factor is the
/// carrier's courier code hash, so offline the driver identifies with the courier code first.
#[allow(clippy::too_many_arguments)]
fn collection_entry(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    carrier_id: &str,
    parcel_id: &str,
    number: i32,
    code: &str,
    hash: &str,
    at: NaiveDateTime,
) -> Result<(), AppError> {
    if !ctx.offline_list {
        return Ok(());
    }
    let Some(courier) = carriers::courier_hash(conn, carrier_id)? else {
        return Ok(());
    };
    let entry = ParcelEntry {
        kind: EntryKind::Collection,
        parcel_id,
        compartment: number,
        binding: hash,
        code,
        factor: &courier,
        expires_at: at + chrono::Duration::days(COLLECTION_ENTRY_DAYS),
    };
    add_parcel_entry(conn, ctx, key, &entry)
}

/// A pre-advised parcel as the lifecycle rules see it.
fn at<'a>(id: &'a str, p: &'a PreAdvice, locker_id: &'a str) -> ParcelAt<'a> {
    ParcelAt {
        parcel_id: id,
        tracking_number: &p.tracking_number,
        carrier_id: &p.carrier_id,
        recipient_id: Some(&p.recipient_id),
        locker_id: Some(locker_id),
        compartment: None,
    }
}
