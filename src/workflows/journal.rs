//! Applying a 1.1 locker's offline journal (docs/protocol.md §15.4): one `ReplayJournal` call
//! is one transaction, in which each new event is applied and stored with its outcome.

use diesel::prelude::*;
use serde_json::{json, Value};

use crate::credentials::{hash_token, ServerKey};
use crate::db::compartments as compartment_rows;
use crate::db::compartments::number_of;
use crate::db::journal::{self as rows, Applied};
use crate::db::local_lists::{self, Issued};
use crate::db::lockers::LockerCtx;
use crate::db::lockouts::{self, CodeKind};
use crate::db::{parcels as parcel_rows, DbConn};
use crate::domain::hardware::{CompartmentSnapshot, Discrepancy};
use crate::domain::journal::{
    self, DepositNow, DepositVerdict, Happened, JournalEvent, Outcome, ParcelNow, PickupVerdict, Plan, WrongCodeOf,
};
use crate::domain::lifecycle::TakenBy;
use crate::domain::CompartmentStatus;
use crate::error::OpError;
use crate::offline_list::EntryKind;
use crate::qr_token::QrSigner;
use crate::workflows::deposits;

/// A boot's reconciliation that waits for the journal: the snapshot the device booted with,
/// run once the journal is applied through `through` (the last event the device had then).
#[derive(Debug, Clone)]
pub struct AfterReplay {
    pub snapshot: Vec<CompartmentSnapshot>,
    pub through: i64,
}

/// The clock a replay corrects the journal's times with: the device's offset from the
/// application's clock (measured at boot), and the application's time now.
#[derive(Debug, Clone)]
pub struct Times {
    pub offset: chrono::Duration,
    pub now: chrono::NaiveDateTime,
    /// The wrong-code allowance journaled wrong codes are counted against.
    pub guessing: crate::domain::lockout::Policy,
    /// How a deposit replayed from the journal issues its code and deadlines.
    pub deposit: crate::domain::deposit::DepositPolicy,
}

/// What a replay did.
#[derive(Debug)]
pub enum Replayed {
    /// Not the next sequence numbers; nothing was applied.
    Gap { expected_seq: i64 },
    Applied {
        applied_through: i64,
        /// One per event of the call, in order: `{"seq", "outcome", ...}`.
        results: Vec<Value>,
        /// Compartments emptied (offline pickups, collections) or filled (offline deposits).
        slots: Vec<Slot>,
        /// The boot's reconciliation, if it ran now (the journal is applied through its end).
        reconciled: Option<Vec<Discrepancy>>,
    },
}

/// Applies the new events of one call, in order, each with its time corrected (`times`).
/// Events applied before are answered with their stored outcomes and change nothing.
pub fn replay(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    events: &[JournalEvent],
    times: Times,
    after: Option<(&AfterReplay, &std::collections::HashSet<i32>)>,
) -> Result<Replayed, OpError> {
    let mut applied = rows::applied_through(conn, &ctx.locker_id)?;
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let fresh = match journal::plan(&seqs, applied) {
        Plan::Gap { expected_seq } => return Ok(Replayed::Gap { expected_seq }),
        Plan::Apply { fresh } => fresh,
    };
    let mut results = Vec::with_capacity(events.len());
    if fresh.start > 0 {
        // One answer per event: a number inside a range recorded as lost has no row of its own.
        let stored: std::collections::HashMap<i64, (String, String)> =
            rows::outcomes(conn, &ctx.locker_id, seqs[0], seqs[fresh.start - 1])?
                .into_iter()
                .map(|(seq, outcome, detail)| (seq, (outcome, detail)))
                .collect();
        for seq in &seqs[..fresh.start] {
            let (outcome, detail) = stored
                .get(seq)
                .cloned()
                .unwrap_or_else(|| (Outcome::Lost.as_str().to_string(), "{}".to_string()));
            let mut r: Value = serde_json::from_str(&detail).unwrap_or_else(|_| json!({}));
            r["seq"] = json!(seq);
            r["outcome"] = json!(outcome);
            results.push(r);
        }
    }
    let fresh_at = results.len();
    let signer = QrSigner::of(key);
    let mut slots = Vec::new();
    for e in &events[fresh] {
        let (applied_row, slot) = apply_one(conn, ctx, key, &signer, e, &times)?;
        rows::insert(conn, &ctx.locker_id, &applied_row)?;
        let mut r = applied_row.detail.clone();
        r["seq"] = json!(e.seq);
        r["outcome"] = json!(applied_row.outcome.as_str());
        results.push(r);
        slots.extend(slot);
        applied = e.seq;
    }
    // One alert for a replay's rejected events, however many: a broken or hostile device
    // cannot flood the operator (each is a fault of its own).
    let rejected: Vec<&Value> = results[fresh_at..]
        .iter()
        .filter(|r| r["outcome"] == Outcome::Rejected.as_str())
        .collect();
    if let Some(first) = rejected.first() {
        let detail = format!(
            "{} journal event(s) rejected; the first, #{}: {}",
            rejected.len(),
            first["seq"],
            first["reason"].as_str().unwrap_or_default()
        );
        crate::db::alerts::raise(conn, &ctx.locker_id, None, "journal_rejected", &detail)?;
    }
    let reconciled = match after {
        Some((a, busy)) if applied >= a.through => {
            Some(crate::workflows::hardware::reconcile(conn, ctx, &a.snapshot, busy)?)
        }
        _ => None,
    };
    Ok(Replayed::Applied {
        applied_through: applied,
        results,
        slots,
        reconciled,
    })
}

/// What one applied event did to a compartment, for the actor's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Freed(i32),
    Occupied(i32),
}

/// Applies one event: its journal row, and what it did to a compartment.
fn apply_one(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    signer: &QrSigner,
    e: &JournalEvent,
    times: &Times,
) -> Result<(Applied, Option<Slot>), OpError> {
    let (offset, t) = (times.offset, times.now);
    let row = |outcome, parcel_id: Option<&str>, occurred_at, detail| Applied {
        seq: e.seq,
        kind: e.kind.chars().take(32).collect(),
        compartment: e.compartment,
        parcel_id: parcel_id.map(str::to_string),
        device_at: e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        occurred_at,
        outcome,
        detail,
    };
    let rejected = |conn: &mut DbConn, reason: &str| -> Result<(Applied, Option<Slot>), OpError> {
        crate::workflows::hardware::record(
            conn,
            ctx,
            None,
            "journal_rejected",
            &format!(
                "journal #{} ({}): {reason}",
                e.seq,
                e.kind.chars().take(32).collect::<String>()
            ),
        )?;
        let at = journal::corrected_time(e.at, offset, t, None);
        Ok((row(Outcome::Rejected, None, at, json!({"reason": reason})), None))
    };
    // The entry a typed code matched: this locker's, of the kind the event says, for its compartment.
    let by_entry = |conn: &mut DbConn, kind: EntryKind, compartment: i32, entry: &str| {
        Ok::<_, OpError>(match local_lists::find(conn, &ctx.locker_id, entry)? {
            Some(i) if i.kind != kind.as_str() => Err(format!("the list entry is not a {} entry", kind.as_str())),
            Some(i) if i.compartment != Some(compartment) => Err("the list entry is for another compartment".into()),
            Some(Issued {
                parcel_id: Some(p),
                binding,
                ..
            }) => Ok((p, binding)),
            _ => Err("the list entry is not one this server issued to this locker".into()),
        })
    };
    // Which parcel the event names, and what the credential used was bound to.
    let (what, number, parcel_id, binding) = match e.happened() {
        Ok(Happened::PickupByQr { compartment, token }) => match signer.verify(token) {
            Ok(c) if c.l == ctx.locker_id && c.c == compartment => (Kind::Pickup, compartment, c.p, hash_token(token)),
            Ok(_) => return rejected(conn, "the QR token is for another locker or compartment"),
            Err(err) => return rejected(conn, &format!("the QR token is not one this server signed: {err}")),
        },
        Ok(Happened::PickupByEntry { compartment, entry }) => {
            match by_entry(conn, EntryKind::Pickup, compartment, entry)? {
                Ok((p, b)) => (Kind::Pickup, compartment, p, b),
                Err(reason) => return rejected(conn, &reason),
            }
        }
        Ok(Happened::Collection { compartment, entry }) => {
            match by_entry(conn, EntryKind::Collection, compartment, entry)? {
                Ok((p, b)) => (Kind::Collection, compartment, p, b),
                Err(reason) => return rejected(conn, &reason),
            }
        }
        Ok(Happened::Deposit { compartment, entry }) => match by_entry(conn, EntryKind::Deposit, compartment, entry)? {
            Ok((p, b)) => (Kind::Deposit, compartment, p, b),
            Err(reason) => return rejected(conn, &reason),
        },
        Ok(Happened::WrongCode(of)) => {
            let at = journal::corrected_time(e.at, offset, t, None);
            let kind = match of {
                WrongCodeOf::Pickup => CodeKind::Pickup,
                WrongCodeOf::Collection => CodeKind::Collect,
                WrongCodeOf::Courier => CodeKind::Courier,
            };
            count_wrong_code(conn, ctx, kind, times.guessing, at)?;
            return Ok((row(Outcome::Counted, None, at, json!({})), None));
        }
        Err(reason) => return rejected(conn, reason),
    };
    let Some(parcel) = parcel_rows::get(conn, &parcel_id).optional()? else {
        return rejected(conn, "the event names a parcel this server does not know");
    };
    let compartment = match &parcel.compartment_id {
        Some(id) => Some(number_of(conn, id)?),
        None => None,
    };
    let conflict_alert = |conn: &mut DbConn, text: String| -> Result<(), OpError> {
        crate::workflows::hardware::alert(conn, ctx, None, "offline_conflict", &text)?;
        Ok(())
    };
    if what == Kind::Deposit {
        let held = DepositNow {
            state: parcel.state(),
            locker_id: parcel.locker_id.as_deref(),
            compartment,
            number_free: compartment_rows::status_of(conn, &ctx.locker_id, number)? == Some(CompartmentStatus::Free),
        };
        // Never before the parcel was pre-advised.
        let occurred_at = journal::corrected_time(e.at, offset, t, Some(parcel.created_at));
        return match journal::decide_deposit(&held, &ctx.locker_id, number) {
            DepositVerdict::Deposited { reclaim, conflicts } => {
                let offline = deposits::Offline {
                    seq: e.seq,
                    occurred_at,
                    conflicts: &conflicts,
                };
                deposits::deposited_offline(conn, ctx, key, &times.deposit, &parcel.id, number, reclaim, &offline)?;
                if !conflicts.is_empty() {
                    conflict_alert(
                        conn,
                        format!(
                            "compartment {number}: parcel {} deposited offline (journal #{}) after its reservation lapsed",
                            parcel.id, e.seq
                        ),
                    )?;
                }
                let detail = json!({"parcel_id": parcel.id, "conflicts": conflicts});
                Ok((
                    row(Outcome::Deposited, Some(&parcel.id), occurred_at, detail),
                    Some(Slot::Occupied(number)),
                ))
            }
            DepositVerdict::Unplaceable => {
                after_move(
                    conn,
                    ctx,
                    &parcel,
                    "offline_deposit_unplaced",
                    number,
                    e.seq,
                    occurred_at,
                )?;
                conflict_alert(
                    conn,
                    format!(
                        "compartment {number}: journal #{} reports parcel {} deposited offline, but its \
                         reservation lapsed and the compartment went to another parcel; it is in there",
                        e.seq, parcel.id
                    ),
                )?;
                let why = "the compartment went to another parcel meanwhile; a person decides";
                let (mut row, slot) = rejected(conn, why)?;
                row.parcel_id = Some(parcel.id.clone());
                row.detail["parcel_id"] = json!(parcel.id);
                Ok((row, slot))
            }
            DepositVerdict::AlreadyMoved => {
                after_move(
                    conn,
                    ctx,
                    &parcel,
                    "offline_deposit_after_move",
                    number,
                    e.seq,
                    occurred_at,
                )?;
                conflict_alert(
                    conn,
                    format!(
                        "compartment {number}: journal #{} reports parcel {} deposited offline, but it is {}",
                        e.seq, parcel.id, parcel.state
                    ),
                )?;
                let detail = json!({"parcel_id": parcel.id, "conflicts": []});
                Ok((row(Outcome::AlreadyMoved, Some(&parcel.id), occurred_at, detail), None))
            }
        };
    }
    let held = ParcelNow {
        state: parcel.state(),
        locker_id: parcel.locker_id.as_deref(),
        compartment,
        token_current: match what {
            Kind::Collection => parcel.collection_code_hash.as_deref() == Some(binding.as_str()),
            _ => [&parcel.qr_token_hash, &parcel.pickup_code_hash]
                .iter()
                .any(|h| h.as_deref() == Some(binding.as_str())),
        },
    };
    // Never before the parcel went in; a collection never before it expired (its deadline).
    let not_before = match what {
        Kind::Collection => parcel.pickup_deadline.max(parcel.deposited_at),
        _ => parcel.deposited_at,
    };
    let occurred_at = journal::corrected_time(e.at, offset, t, not_before);
    let (verdict, by, outcome, done, word) = match what {
        Kind::Collection => (
            journal::decide_collection(&held, &ctx.locker_id, number),
            TakenBy::Carrier,
            Outcome::Returned,
            "collected for return",
            "collection",
        ),
        _ => (
            journal::decide_pickup(&held, &ctx.locker_id, number),
            TakenBy::Recipient,
            Outcome::PickedUp,
            "picked up",
            "pickup",
        ),
    };
    match verdict {
        PickupVerdict::PickedUp { conflicts } => {
            crate::workflows::pickups::taken_out_at(
                conn,
                ctx,
                &parcel.id,
                number,
                by,
                occurred_at,
                |detail, effects| journal::mark_offline(detail, effects, e.seq, occurred_at, &conflicts),
            )?;
            if !conflicts.is_empty() {
                let names = serde_json::to_string(&conflicts).unwrap_or_default();
                conflict_alert(
                    conn,
                    format!(
                        "compartment {number}: parcel {} {done} offline (journal #{}) despite {names}",
                        parcel.id, e.seq
                    ),
                )?;
            }
            let detail = json!({"parcel_id": parcel.id, "conflicts": conflicts});
            Ok((
                row(outcome, Some(&parcel.id), occurred_at, detail),
                Some(Slot::Freed(number)),
            ))
        }
        PickupVerdict::AlreadyMoved => {
            // The history says what the locker reported; the parcel's state stays.
            let event = format!("offline_{word}_after_move");
            after_move(conn, ctx, &parcel, &event, number, e.seq, occurred_at)?;
            conflict_alert(
                conn,
                format!(
                    "compartment {number}: journal #{} reports parcel {} {done} offline, but it is {}",
                    e.seq, parcel.id, parcel.state
                ),
            )?;
            let detail = json!({"parcel_id": parcel.id, "conflicts": []});
            Ok((row(Outcome::AlreadyMoved, Some(&parcel.id), occurred_at, detail), None))
        }
    }
}

/// Which credential a journaled event used, once its entry or token is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pickup,
    Collection,
    Deposit,
}

/// Records in a parcel's history what the locker reported of it offline, when the server had
/// moved it on meanwhile; its state stays.
fn after_move(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    parcel: &crate::db::parcels::Parcel,
    event: &str,
    number: i32,
    seq: i64,
    occurred_at: chrono::NaiveDateTime,
) -> Result<(), OpError> {
    parcel_rows::record_event(
        conn,
        &parcel.id,
        event,
        None,
        &ctx.actor(),
        json!({"compartment": number, "seq": seq, "offline": true,
               "occurred_at": crate::db::ts_string(occurred_at), "state": parcel.state}),
    )?;
    Ok(())
}

/// A wrong code typed at the locker while it was offline: counted toward its allowance for
/// that kind of code at the time it was typed, as if it had been typed online (a lockout it starts is
/// recorded), so going offline never resets the limit. A wrong code typed while a lockout was
/// already running is not counted again, as online.
fn count_wrong_code(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    kind: CodeKind,
    policy: crate::domain::lockout::Policy,
    at: chrono::NaiveDateTime,
) -> Result<(), OpError> {
    let mut state = lockouts::state(conn, &ctx.locker_id, kind, at)?;
    if state.locked(at).is_some() {
        return Ok(());
    }
    let started = state.fail(&policy, at);
    lockouts::save(conn, &ctx.locker_id, kind, &state, started.as_ref(), at)?;
    Ok(())
}

/// At a 1.1 boot, in its transaction: how far the journal is applied, after recording as lost
/// the events the device no longer holds (its oldest pending event is past the next one the
/// server expects). Returns `applied_through`, and whether the device holds events beyond it
/// (then the snapshot is reconciled after the replay).
pub fn at_boot(conn: &mut DbConn, me: &LockerCtx, next_seq: i64, pending: i64) -> Result<(i64, bool), OpError> {
    let mut applied = rows::applied_through(conn, &me.locker_id)?;
    let first_held = next_seq - pending;
    if first_held - 1 > applied {
        let (from, to) = (applied + 1, first_held - 1);
        let now = crate::db::now();
        rows::insert(
            conn,
            &me.locker_id,
            &rows::Applied {
                seq: to,
                kind: "lost".into(),
                compartment: None,
                parcel_id: None,
                device_at: crate::db::ts_string(now),
                occurred_at: now,
                outcome: Outcome::Lost,
                detail: json!({"reason": format!("events {from} to {to} were never replayed")}),
            },
        )?;
        crate::workflows::hardware::alert(
            conn,
            me,
            None,
            "journal_lost",
            &format!("the locker no longer holds journal events {from} to {to}; its boot snapshot decides"),
        )?;
        applied = to;
    }
    Ok((applied, next_seq - 1 > applied))
}
