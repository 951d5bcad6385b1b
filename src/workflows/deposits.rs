//! The deposit transactions a locker actor runs: start, upsize, cancel, complete.
//! Each is one transaction; the actor applies the result to its memory only after commit.

use std::collections::HashSet;

use diesel::prelude::*;
use serde_json::json;

use crate::credentials::{generate_numeric_code, generate_token, hash_token, ServerKey};
use crate::db::compartments::{claim, compartment_id, number_of, settle_status};
use crate::db::lockers::LockerCtx;
use crate::db::parcels::{EventNote, ParcelChange};
use crate::db::schema::parcels;
use crate::db::{carriers, direct, lockers, new_id, now, parcels as parcel_rows, recipients, sites, DbConn};
use crate::domain::allocation::Slot;
use crate::domain::deposit::{
    decide_start, decide_upsize, Advised, DepositFacts, DepositPolicy, Found, Identify, ParcelStart, Prior,
    StartDeposit, StartFacts,
};
use crate::domain::inputs::{Phone, TrackingNumber};
use crate::domain::lifecycle;
use crate::domain::parcel::ParcelState;
use crate::domain::refusal::Refusal;
use crate::domain::{CompartmentStatus, Size};
use crate::error::{AppError, OpError};
use crate::offline_list::EntryKind;
use crate::workflows::local_list::{add_parcel_entry, ParcelEntry};

#[derive(Debug, Clone)]
pub struct Started {
    pub parcel_id: String,
    pub carrier_id: String,
    pub number: i32,
    pub size: Size,
    pub needs_accessible: bool,
    /// A pre-advice reservation given up for a better-fitting compartment.
    pub released: Option<i32>,
    pub prior: Prior,
}

/// Begins a deposit: identifies the parcel or recipient, lets the domain pick the
/// compartment (`decide_start`), then writes what it decided.
pub fn start(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    req: &StartDeposit,
    slots: &[Slot],
    busy: &HashSet<i32>,
) -> Result<Started, OpError> {
    let carrier = carriers::brief(conn, &req.carrier_id)
        .optional()?
        .filter(|c| c.active)
        .ok_or_else(|| Refusal::NotFound("unknown carrier".into()))?;
    if !ctx.allows(&carrier.id) {
        let why = crate::domain::booking::Rejection::CarrierNotAllowed;
        return Err(Refusal::InvalidState(format!("{}: {}", why.as_str(), why.message())).into());
    }
    let tracking = req
        .tracking_number
        .as_deref()
        .map(TrackingNumber::parse)
        .transpose()
        .map_err(|e| Refusal::InvalidInput(e.to_string()))?;
    let (found, recipient_id, known_needs) = identify(conn, ctx, &carrier.id, &req.identify)?;
    let needs_accessible = match (known_needs, &recipient_id) {
        (Some(needs), _) => needs,
        (None, Some(id)) => recipients::needs_accessible(conn, id)?,
        (None, None) => false,
    };
    // Under the carrier's quota, if it has one here (a reservation it holds is already counted).
    let quota = crate::db::quotas::quota(
        conn,
        &ctx.locker_id,
        &carrier.id,
        ctx.quota_carriers.contains(&carrier.id),
    )?;
    let allowed = match &quota {
        Some((limits, used)) => std::borrow::Cow::Owned(crate::domain::booking::within_quota(slots, limits, used)),
        None => std::borrow::Cow::Borrowed(slots),
    };
    let facts = |slots| StartFacts {
        locker_id: &ctx.locker_id,
        site_id: &ctx.site_id,
        carrier_id: &carrier.id,
        size: req.size,
        needs_accessible,
        found: &found,
        slots,
        busy,
    };
    let decided = match decide_start(facts(&allowed)) {
        Err(Refusal::NoCompartment(_)) if quota.is_some() && decide_start(facts(slots)).is_ok() => {
            return Err(Refusal::NoCompartment(format!(
                "{}: this carrier's quota of size {} or larger compartments here is used up",
                crate::domain::booking::Rejection::OverQuota.as_str(),
                req.size.as_str()
            ))
            .into())
        }
        other => other?,
    };
    let number = decided.number;
    if decided.claims {
        claim(conn, &ctx.locker_id, number)?;
    }
    if let Some(old) = decided.released {
        settle_status(conn, &ctx.locker_id, old, CompartmentStatus::Free)?;
    }
    let comp = lockers::compartment_by_number(conn, &ctx.locker_id, number)?;
    let size = Size::parse(&comp.size).unwrap_or(req.size);
    let detail = json!({"compartment": number, "size": req.size.as_str()});
    let parcel_id = match (&found, decided.parcel) {
        (Found::Advised(a), how) => {
            let change = ParcelChange {
                locker_id: Some(ctx.locker_id.clone()),
                compartment_id: Some(Some(comp.id.clone())),
                size: Some(req.size.as_str().into()),
                ..ParcelChange::default()
            };
            let note = EventNote {
                kind: "deposit_started",
                actor: &ctx.actor(),
                detail,
            };
            match how {
                ParcelStart::Change(t) => parcel_rows::apply(conn, &a.parcel_id, t, change, note)?,
                _ => parcel_rows::update_in_state(conn, &a.parcel_id, ParcelState::Reserved, change, note)?,
            }
            a.parcel_id.clone()
        }
        (Found::WalkUp, created) => {
            let ParcelStart::Create(created) = created else {
                return Err(OpError::Failed(AppError::internal(
                    "a walk-up deposit must create its parcel",
                )));
            };
            let id = new_id();
            let tn = tracking.map(TrackingNumber::into_inner).unwrap_or_else(|| {
                format!(
                    "LH-{}",
                    &generate_token("")[..12].to_ascii_uppercase().replace(['-', '_'], "X")
                )
            });
            let t = now();
            let insert = diesel::insert_into(parcels::table).values((
                parcels::id.eq(&id),
                parcels::carrier_id.eq(&carrier.id),
                parcels::tracking_number.eq(tn),
                parcels::site_id.eq(&ctx.site_id),
                parcels::recipient_id.eq(&recipient_id),
                parcels::locker_id.eq(&ctx.locker_id),
                parcels::compartment_id.eq(&comp.id),
                parcels::size.eq(req.size.as_str()),
                parcels::state.eq(created.to().as_str()),
                parcels::created_at.eq(t),
                parcels::updated_at.eq(t),
            ));
            direct::execute(conn, insert).map_err(|e| match AppError::from(e) {
                AppError::Conflict { .. } => OpError::from(Refusal::InvalidState(
                    "this carrier already has a live parcel with this tracking number".into(),
                )),
                other => OpError::Failed(other),
            })?;
            parcel_rows::record_event(
                conn,
                &id,
                "deposit_started",
                Some(created.as_event()),
                &ctx.actor(),
                detail,
            )?;
            id
        }
    };
    Ok(Started {
        parcel_id,
        carrier_id: carrier.id,
        number,
        size,
        needs_accessible,
        released: decided.released,
        prior: decided.prior,
    })
}

/// Finds the pre-advised parcel (by tracking number) or the walk-up recipient the driver
/// identified, and the recipient's id either way; for a walk-up, also whether they need an
/// accessible compartment, read from the row that found them (`None`: not read here).
fn identify(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    carrier_id: &str,
    how: &Identify,
) -> Result<(Found, Option<String>, Option<bool>), OpError> {
    match how {
        Identify::TrackingNumber(raw) => {
            let tn = TrackingNumber::parse(raw).map_err(|e| Refusal::InvalidInput(e.to_string()))?;
            let p = parcel_rows::live_by_tracking(conn, carrier_id, tn.as_str())?
                .filter(|p| matches!(p.state(), ParcelState::Expected | ParcelState::Reserved))
                .ok_or_else(|| Refusal::NotFound("no parcel is expected here with this tracking number".into()))?;
            let here = p.locker_id.as_deref() == Some(ctx.locker_id.as_str());
            let reserved_here = match &p.compartment_id {
                Some(c) if here => Some(number_of(conn, c)?),
                _ => None,
            };
            let advised = Advised {
                parcel_id: p.id.clone(),
                state: p.state(),
                site_id: p.site_id.clone(),
                locker_id: p.locker_id.clone(),
                holds_compartment: p.compartment_id.is_some(),
                reserved_here,
            };
            Ok((Found::Advised(advised), p.recipient_id, None))
        }
        Identify::Phone(raw) => {
            let phone = Phone::parse(raw).map_err(|e| Refusal::InvalidInput(e.to_string()))?;
            let r = recipients::by_phone(conn, &ctx.site_id, phone.as_str())?
                .ok_or_else(|| Refusal::NotFound("no resident with this phone number here".into()))?;
            Ok((Found::WalkUp, Some(r.id), Some(r.needs_accessible)))
        }
        Identify::RecipientId(id) => {
            let r = recipients::get(conn, id)
                .optional()?
                .filter(|r| r.site_id == ctx.site_id && r.active)
                .ok_or_else(|| Refusal::NotFound("no such resident here".into()))?;
            Ok((Found::WalkUp, Some(r.id), Some(r.needs_accessible)))
        }
    }
}

/// A deposit whose door is open, as the locker actor tracks it.
#[derive(Debug, Clone)]
pub struct DepositInProgress {
    pub parcel_id: String,
    pub carrier_id: String,
    pub needs_accessible: bool,
    /// The compartment it holds now.
    pub number: i32,
}

/// "Doesn't fit": moves the deposit to where `decide_upsize` says, the smallest free
/// compartment larger than the current one.
pub fn upsize(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    d: &DepositInProgress,
    slots: &[Slot],
    busy: &HashSet<i32>,
) -> Result<(i32, Size), OpError> {
    let up = decide_upsize(d.number, &d.carrier_id, d.needs_accessible, slots, busy)?;
    claim(conn, &ctx.locker_id, up.to)?;
    settle_status(conn, &ctx.locker_id, up.from, CompartmentStatus::Free)?;
    let comp_id = compartment_id(conn, &ctx.locker_id, up.to)?;
    parcel_rows::update_in_state(
        conn,
        &d.parcel_id,
        ParcelState::Reserved,
        ParcelChange {
            compartment_id: Some(Some(comp_id)),
            size: Some(up.needs.as_str().into()),
            ..ParcelChange::default()
        },
        EventNote {
            kind: "upsized",
            actor: &ctx.actor(),
            detail: json!({"from_compartment": up.from, "to_compartment": up.to, "size": up.needs.as_str()}),
        },
    )?;
    Ok((up.to, up.gets))
}

/// Cancels a deposit in progress; returns the status the compartment goes back to.
pub fn cancel(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    parcel_id: &str,
    number: i32,
    prior: &Prior,
    reason: &str,
) -> Result<CompartmentStatus, OpError> {
    let (to, comp_status) = prior.cancelled_in(number);
    let t = now();
    let change = match to {
        ParcelState::Cancelled => ParcelChange {
            cancelled_at: Some(t),
            ..ParcelChange::default()
        },
        ParcelState::Expected => ParcelChange {
            compartment_id: Some(None),
            ..ParcelChange::default()
        },
        _ => ParcelChange::default(),
    };
    let note = EventNote {
        kind: "deposit_cancelled",
        actor: &ctx.actor(),
        detail: json!({"compartment": number, "reason": reason}),
    };
    if to == ParcelState::Reserved {
        // Back to its pre-advice reservation: the state does not change.
        parcel_rows::update_in_state(conn, parcel_id, ParcelState::Reserved, change, note)?;
    } else {
        parcel_rows::change_state(conn, parcel_id, ParcelState::Reserved, to, change, note)?;
    }
    settle_status(conn, &ctx.locker_id, number, comp_status)?;
    Ok(comp_status)
}

/// The door closed on the parcel: it is deposited. Issues the pickup code and QR token and
/// queues the recipient's notification, the carrier's webhook and the dwell deadline, all in
/// this one transaction.
pub fn complete(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    policy: &DepositPolicy,
    parcel_id: &str,
    number: i32,
) -> Result<(), OpError> {
    complete_because(conn, ctx, key, policy, parcel_id, number, None)
}

/// [`complete`], with a reason recorded in the `deposited` event (for example
/// `at_reconnection`: decided from the boot snapshot after a server restart).
pub fn complete_because(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    policy: &DepositPolicy,
    parcel_id: &str,
    number: i32,
    reason: Option<&str>,
) -> Result<(), OpError> {
    finish(conn, ctx, key, policy, parcel_id, number, reason, None)
}

/// A deposit a 1.1 locker journaled offline (docs/protocol.md §15.4).
#[derive(Debug, Clone, Copy)]
pub struct Offline<'a> {
    pub seq: i64,
    /// When the door closed on the parcel, on the server's clock.
    pub occurred_at: chrono::NaiveDateTime,
    pub conflicts: &'a [crate::domain::journal::Conflict],
}

/// A pre-advised parcel a locker took in offline, into compartment `number` (its reservation,
/// or with `reclaim` the same compartment claimed again after the reservation lapsed): it is
/// deposited at the event's time. The pickup code is issued now (the locker cannot issue
/// codes), so the dwell window starts now, when the recipient is told; the parcel's
/// `deposited_at` and the carrier's webhook carry the event's time.
#[allow(clippy::too_many_arguments)]
pub fn deposited_offline(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    policy: &DepositPolicy,
    parcel_id: &str,
    number: i32,
    reclaim: bool,
    offline: &Offline<'_>,
) -> Result<(), OpError> {
    if reclaim {
        claim(conn, &ctx.locker_id, number)?;
        let comp = lockers::compartment_by_number(conn, &ctx.locker_id, number)?;
        parcel_rows::change_state(
            conn,
            parcel_id,
            ParcelState::Expected,
            ParcelState::Reserved,
            ParcelChange {
                compartment_id: Some(Some(comp.id)),
                ..ParcelChange::default()
            },
            EventNote {
                kind: "reserved",
                actor: &ctx.actor(),
                detail: json!({"compartment": number, "offline": true, "seq": offline.seq,
                               "reason": "reservation_lapsed"}),
            },
        )?;
    }
    finish(conn, ctx, key, policy, parcel_id, number, None, Some(offline))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    policy: &DepositPolicy,
    parcel_id: &str,
    number: i32,
    reason: Option<&str>,
    offline: Option<&Offline<'_>>,
) -> Result<(), OpError> {
    let code_len = policy.pickup_code_length;
    let (parcel, carrier, away_until) = parcel_rows::with_carrier_and_absence(conn, parcel_id)?;
    let site_dwell_hours = sites::dwell_hours(conn, &ctx.site_id)?;
    let code = unique_code(conn, ctx, key, code_len)?;
    // The application's clock: deadlines are compared with it (tests move it forward).
    let token_at = policy.clock.now();
    let facts = DepositFacts {
        parcel_id,
        tracking_number: &parcel.tracking_number,
        carrier_id: &carrier.id,
        carrier_name: &carrier.name,
        recipient_id: parcel.recipient_id.as_deref(),
        locker_id: &ctx.locker_id,
        locker_name: &ctx.locker_name,
        site_id: &ctx.site_id,
        compartment: number,
        site_dwell_hours: site_dwell_hours.map(i64::from),
        carrier_dwell_hours: carrier.dwell_hours.map(i64::from),
        away_until,
    };
    let deadline = policy.deadline(
        token_at,
        facts.site_dwell_hours,
        facts.carrier_dwell_hours,
        facts.away_until,
    );
    let grace = policy.clock.hours(QR_TOKEN_GRACE_HOURS);
    let qr_token = signed_qr_token(key, &ctx.locker_id, number, parcel_id, deadline + grace);
    list_entry(conn, ctx, key, parcel_id, number, &code, deadline + grace)?;
    let mut decided = policy.deposited(token_at, &facts, &code, &qr_token);
    let mut detail = json!({"compartment": number, "pickup_deadline": crate::db::ts_string(decided.deadline)});
    if let Some(r) = reason {
        detail["reason"] = json!(r);
    }
    if let Some(o) = offline {
        decided.at = o.occurred_at;
        crate::domain::journal::mark_offline(&mut detail, &mut decided.effects, o.seq, o.occurred_at, o.conflicts);
        for w in &mut decided.effects.webhooks {
            w.data["deposited_at"] = json!(crate::domain::effects::rfc3339(o.occurred_at));
        }
    }
    parcel_rows::change_state(
        conn,
        parcel_id,
        parcel.state(),
        ParcelState::Deposited,
        ParcelChange {
            deposited_at: Some(decided.at),
            pickup_deadline: Some(decided.deadline),
            pickup_code_hash: Some(Some(key.code_hash(&ctx.code_salt, &code))),
            qr_token_hash: Some(Some(hash_token(&qr_token))),
            ..ParcelChange::default()
        },
        EventNote {
            kind: "deposited",
            actor: &ctx.actor(),
            detail,
        },
    )?;
    settle_status(conn, &ctx.locker_id, number, CompartmentStatus::Occupied)?;
    crate::workflows::effects::persist(conn, &decided.effects)?;
    Ok(())
}

/// Issues a new pickup code and QR token for a parcel in the locker, revoking the old ones,
/// and queues the notification that carries them. Returns the notification id.
pub fn reissue_code(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    code_len: usize,
    qr_grace: chrono::Duration,
    parcel_id: &str,
    actor: &str,
) -> Result<String, AppError> {
    let parcel = parcel_rows::get(conn, parcel_id)?;
    if parcel.locker_id.as_deref() != Some(ctx.locker_id.as_str())
        || !matches!(parcel.state(), ParcelState::Deposited | ParcelState::Expired)
    {
        return Err(AppError::Conflict {
            code: "invalid_state",
            message: format!(
                "only a parcel in a locker gets a new code; this one is {}",
                parcel.state
            ),
        });
    }
    let code = unique_code(conn, ctx, key, code_len).map_err(AppError::from)?;
    let number = match &parcel.compartment_id {
        Some(id) => number_of(conn, id)?,
        None => return Err(AppError::internal("a parcel in a locker has no compartment")),
    };
    let deadline = parcel.pickup_deadline.unwrap_or_else(now);
    let qr_token = signed_qr_token(key, &ctx.locker_id, number, parcel_id, deadline + qr_grace);
    list_entry(conn, ctx, key, parcel_id, number, &code, deadline + qr_grace).map_err(AppError::from)?;
    diesel::update(parcels::table.find(parcel_id))
        .set((
            parcels::pickup_code_hash.eq(key.code_hash(&ctx.code_salt, &code)),
            parcels::qr_token_hash.eq(hash_token(&qr_token)),
            parcels::updated_at.eq(now()),
        ))
        .execute(conn)?;
    parcel_rows::record_event(conn, parcel_id, "code_reissued", None, actor, json!({}))?;
    crate::db::notifications::supersede(conn, parcel_id, "deposited")?;
    let at = parcel.at(Some(&ctx.locker_id), None);
    let effects = lifecycle::code_reissued(&at, &code, &qr_token, parcel.pickup_deadline);
    let id = crate::workflows::effects::persist(conn, &effects)?
        .pop()
        .ok_or_else(|| AppError::internal("a reissued code queued no notification"))?;
    Ok(id)
}

/// How long a signed QR token outlives its parcel's pickup deadline: an expired parcel can
/// still be picked up until the carrier collects it, and a locker that is offline meanwhile
/// cannot hear that it was collected (docs/protocol.md §15.3).
pub const QR_TOKEN_GRACE_HOURS: i64 = 72;

/// A new signed QR token (protocol 1.1) for the parcel in compartment `number`, with a fresh
/// token id, valid until `exp` ([`QR_TOKEN_GRACE_HOURS`] after the pickup deadline).
fn signed_qr_token(
    key: &ServerKey,
    locker_id: &str,
    number: i32,
    parcel_id: &str,
    exp: chrono::NaiveDateTime,
) -> String {
    crate::qr_token::QrSigner::of(key).issue(crate::qr_token::Claims {
        v: 1,
        kid: String::new(),
        l: locker_id.to_string(),
        c: number,
        p: parcel_id.to_string(),
        j: generate_token("")[..16].to_string(),
        exp: exp.and_utc().timestamp(),
    })
}

/// For a locker that keeps a local code list (1.1), the entry for a code just issued: sealed
/// (code and the recipient's second factor encrypted under the server key) until a list sync
/// makes its verifier off the write path (docs/protocol.md §15.8).
fn list_entry(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    parcel_id: &str,
    number: i32,
    code: &str,
    expires_at: chrono::NaiveDateTime,
) -> Result<(), OpError> {
    if !ctx.offline_list {
        return Ok(());
    }
    let factor = crate::db::lockouts::factor_for_parcel(conn, parcel_id)?
        .and_then(|(phone, unit)| crate::domain::second_factor::expected(phone.as_deref(), &unit))
        .unwrap_or_default();
    let entry = ParcelEntry {
        kind: EntryKind::Pickup,
        parcel_id,
        compartment: number,
        binding: &key.code_hash(&ctx.code_salt, code),
        code,
        factor: &factor,
        expires_at,
    };
    add_parcel_entry(conn, ctx, key, &entry)?;
    Ok(())
}

/// A numeric code no live parcel at this locker has. The check and the write happen in the
/// locker's own actor, the only writer of its codes, so checking first is race-free; the
/// unique index backs it up.
fn unique_code(conn: &mut DbConn, ctx: &LockerCtx, key: &ServerKey, len: usize) -> Result<String, OpError> {
    for _ in 0..20 {
        let code = generate_numeric_code(len);
        let hash = key.code_hash(&ctx.code_salt, &code);
        let taken: i64 = crate::on_backend!(conn, |c| parcels::table
            .filter(parcels::locker_id.eq(&ctx.locker_id))
            .filter(parcels::pickup_code_hash.eq(&hash))
            .count()
            .get_result(c))?;
        if taken == 0 {
            return Ok(code);
        }
    }
    Err(OpError::Failed(AppError::internal("could not find a free pickup code")))
}
