//! Applying a 1.1 locker's offline journal (docs/protocol.md §15.4): one `ReplayJournal` call
//! is one transaction, in which each new event is applied and stored with its outcome.

use diesel::prelude::*;
use serde_json::{json, Value};

use crate::credentials::{hash_token, ServerKey};
use crate::db::compartments::number_of;
use crate::db::journal::{self as rows, Applied};
use crate::db::local_lists;
use crate::db::lockers::LockerCtx;
use crate::db::lockouts::{self, CodeKind};
use crate::db::{parcels as parcel_rows, DbConn};
use crate::domain::hardware::{CompartmentSnapshot, Discrepancy};
use crate::domain::journal::{self, Happened, JournalEvent, Outcome, ParcelNow, PickupVerdict, Plan};
use crate::domain::lifecycle::TakenBy;
use crate::error::OpError;
use crate::qr_token::QrSigner;

/// A boot's reconciliation that waits for the journal: the snapshot the device booted with,
/// run once the journal is applied through `through` (the last event the device had then).
#[derive(Debug, Clone)]
pub struct AfterReplay {
    pub snapshot: Vec<CompartmentSnapshot>,
    pub through: i64,
}

/// The clock a replay corrects the journal's times with: the device's offset from the
/// application's clock (measured at boot), and the application's time now.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub offset: chrono::Duration,
    pub now: chrono::NaiveDateTime,
    /// The wrong-code allowance journaled wrong codes are counted against.
    pub guessing: crate::domain::lockout::Policy,
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
        /// Compartments emptied by offline pickups.
        freed: Vec<i32>,
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
    let mut freed = Vec::new();
    for e in &events[fresh] {
        let (applied_row, freed_now) = apply_one(conn, ctx, &signer, e, times)?;
        rows::insert(conn, &ctx.locker_id, &applied_row)?;
        let mut r = applied_row.detail.clone();
        r["seq"] = json!(e.seq);
        r["outcome"] = json!(applied_row.outcome.as_str());
        results.push(r);
        freed.extend(freed_now);
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
        freed,
        reconciled,
    })
}

/// Applies one event: its journal row, and the compartment it emptied.
fn apply_one(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    signer: &QrSigner,
    e: &JournalEvent,
    times: Times,
) -> Result<(Applied, Option<i32>), OpError> {
    let Times { offset, now: t, .. } = times;
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
    let rejected = |conn: &mut DbConn, reason: &str| -> Result<(Applied, Option<i32>), OpError> {
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
    // Which parcel the event names, and whether the credential used is still its current one.
    let (number, parcel_id, current_hash) = match e.happened() {
        Ok(Happened::PickupByQr { compartment, token }) => match signer.verify(token) {
            Ok(c) if c.l == ctx.locker_id && c.c == compartment => (compartment, c.p, hash_token(token)),
            Ok(_) => return rejected(conn, "the QR token is for another locker or compartment"),
            Err(err) => return rejected(conn, &format!("the QR token is not one this server signed: {err}")),
        },
        Ok(Happened::PickupByEntry { compartment, entry }) => match local_lists::find(conn, &ctx.locker_id, entry)? {
            Some((parcel_id, n, code_hash)) if n == compartment => (compartment, parcel_id, code_hash),
            Some(_) => return rejected(conn, "the list entry is for another compartment"),
            None => return rejected(conn, "the list entry is not one this server issued to this locker"),
        },
        Ok(Happened::WrongCode) => {
            let at = journal::corrected_time(e.at, offset, t, None);
            count_wrong_code(conn, ctx, times.guessing, at)?;
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
    let held = ParcelNow {
        state: parcel.state(),
        locker_id: parcel.locker_id.as_deref(),
        compartment,
        token_current: [&parcel.qr_token_hash, &parcel.pickup_code_hash]
            .iter()
            .any(|h| h.as_deref() == Some(current_hash.as_str())),
    };
    let occurred_at = journal::corrected_time(e.at, offset, t, parcel.deposited_at);
    match journal::decide_pickup(&held, &ctx.locker_id, number) {
        PickupVerdict::PickedUp { conflicts } => {
            crate::workflows::pickups::taken_out_at(
                conn,
                ctx,
                &parcel.id,
                number,
                TakenBy::Recipient,
                occurred_at,
                |detail, effects| journal::mark_offline(detail, effects, e.seq, occurred_at, &conflicts),
            )?;
            if !conflicts.is_empty() {
                let names = serde_json::to_string(&conflicts).unwrap_or_default();
                crate::workflows::hardware::alert(
                    conn,
                    ctx,
                    None,
                    "offline_conflict",
                    &format!(
                        "compartment {number}: parcel {} picked up offline (journal #{}) despite {names}",
                        parcel.id, e.seq
                    ),
                )?;
            }
            let detail = json!({"parcel_id": parcel.id, "conflicts": conflicts});
            Ok((
                row(Outcome::PickedUp, Some(&parcel.id), occurred_at, detail),
                Some(number),
            ))
        }
        PickupVerdict::AlreadyMoved => {
            // The history says what the locker reported; the parcel's state stays.
            parcel_rows::record_event(
                conn,
                &parcel.id,
                "offline_pickup_after_move",
                None,
                &ctx.actor(),
                json!({"compartment": number, "seq": e.seq, "offline": true,
                       "occurred_at": crate::db::ts_string(occurred_at), "state": parcel.state}),
            )?;
            crate::workflows::hardware::alert(
                conn,
                ctx,
                None,
                "offline_conflict",
                &format!(
                    "compartment {number}: journal #{} reports parcel {} picked up offline, but it is {}",
                    e.seq, parcel.id, parcel.state
                ),
            )?;
            let detail = json!({"parcel_id": parcel.id, "conflicts": []});
            Ok((row(Outcome::AlreadyMoved, Some(&parcel.id), occurred_at, detail), None))
        }
    }
}

/// A wrong code typed at the locker while it was offline: counted toward its pickup-code
/// allowance at the time it was typed, as if it had been typed online (a lockout it starts is
/// recorded), so going offline never resets the limit. A wrong code typed while a lockout was
/// already running is not counted again, as online.
fn count_wrong_code(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    policy: crate::domain::lockout::Policy,
    at: chrono::NaiveDateTime,
) -> Result<(), OpError> {
    let mut state = lockouts::state(conn, &ctx.locker_id, CodeKind::Pickup, at)?;
    if state.locked(at).is_some() {
        return Ok(());
    }
    let started = state.fail(&policy, at);
    lockouts::save(conn, &ctx.locker_id, CodeKind::Pickup, &state, started.as_ref(), at)?;
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
