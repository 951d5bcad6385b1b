//! The offline phase (`--offline N`, protocol 1.1, docs/protocol.md §15), after the traffic:
//! N lockers each become a 1.1 device (the 1.0 session goes, the same hardware boots again with
//! the offline object), take one deposit, wait for the recipient's signed QR token (from the
//! notification outbox), lose their network and let the recipient in offline. When all N have,
//! they come back at once (`--connect-concurrency` at a time): reconnect, boot, replay the
//! journal. Then the admin API must show every one of those parcels `picked_up`, with its time
//! and its offline history event. Every step is bounded in time; any failure is an error.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lockerhub::domain::Size;
use lockerhub::protocol::messages::Identify;
use lockerhub::simulator::{Behaviour, OfflineRefusal, SimError, SimLocker, CALL_TIMEOUT};
use serde::Serialize;
use serde_json::Value;

use crate::fleet::{Fleet, Slot, SlotState, READ_BUFFER};
use crate::metrics::{ErrorClass, Metrics};
use crate::progress;
use crate::traffic::{Ctx, Fate, CODE_WAIT};

/// How long a closed connection may take to show as closed on the device's side.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Admin API reads in flight while verifying.
const VERIFY_CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Default, Serialize)]
pub struct OfflineReport {
    /// Lockers asked for (`--offline`, capped by the fleet).
    pub lockers: usize,
    /// Of those, connected with a free compartment, and so taken.
    pub taken: usize,
    /// Booted again as 1.1 devices (the server answered with the offline object).
    pub booted_1_1: usize,
    pub deposited: usize,
    /// QR tokens read from the notification outbox.
    pub qr_tokens: usize,
    /// Lockers whose connection was cut and whose kiosk let the recipient in by the QR token.
    pub picked_up_offline: usize,
    /// Lockers back, booted (reconciliation deferred to the replay) and replayed, journal empty.
    pub replayed: usize,
    /// Replay results by outcome (`picked_up` expected for every one).
    pub outcomes: BTreeMap<String, usize>,
    /// Parcels the admin API shows `picked_up`, with `picked_up_at` and the offline history event.
    pub verified: usize,
    /// Seconds to take every locker offline (1.1 boot, deposit, QR token, cut, offline pickup).
    pub offline_secs: f64,
    /// Seconds from the first reconnect to the last replay answered.
    pub replay_secs: f64,
    /// Lockers replayed per second over `replay_secs`.
    pub replay_rate_per_sec: f64,
    /// Per locker, reconnect start to replay answered.
    pub replay_p50_ms: Option<f64>,
    pub replay_p99_ms: Option<f64>,
    pub verify_secs: f64,
    pub concurrency: usize,
}

/// A locker offline with one pickup in its journal.
pub struct Cut {
    idx: usize,
    sim: SimLocker,
    parcel_id: String,
    compartment: i32,
}

/// What one locker's return gave: the replay's outcomes, and whether all was as expected.
struct Back {
    outcomes: Vec<String>,
    ok: bool,
}

/// The first `n` lockers that are connected and have a free compartment.
async fn choose(fleet: &Fleet, n: usize) -> Vec<usize> {
    let mut chosen = Vec::with_capacity(n);
    for (i, slot) in fleet.slots.iter().enumerate() {
        if chosen.len() == n {
            break;
        }
        let state = slot.state.lock().await;
        if state.sim.is_some() && state.used < slot.capacity {
            chosen.push(i);
        }
    }
    chosen
}

/// Opens a 1.1 device's connection for the locker, from its slot's source address.
async fn connect_1_1(fleet: &Fleet, slot: &Slot) -> Result<SimLocker, SimError> {
    let behaviour = Behaviour {
        offline_capable: true,
        read_buffer: READ_BUFFER,
        ..Behaviour::default()
    };
    SimLocker::connect_with(
        &fleet.ws_base,
        &slot.id,
        &slot.credential,
        &fleet.layout,
        behaviour,
        slot.source,
    )
    .await
}

/// The same device on a new connection, with its hardware and its offline side (journal, QR
/// keys, list). Not `SimLocker::reconnect`: that binds no source address, and all of them
/// coming back from 127.0.0.1 at once meet the server's bound on connections per address
/// before they authenticate (`429`); from the slot's address they come back as the storm does.
async fn reconnect(fleet: &Fleet, slot: &Slot, old: &SimLocker) -> Result<SimLocker, SimError> {
    let sim = connect_1_1(fleet, slot).await?;
    let hardware = old.compartments.lock().unwrap_or_else(|e| e.into_inner()).clone();
    *sim.compartments.lock().unwrap_or_else(|e| e.into_inner()) = hardware;
    // Moved inside the mutex: the connection's own tasks hold this Arc, not the old one.
    let side = std::mem::take(&mut *old.offline.lock().unwrap_or_else(|e| e.into_inner()));
    *sim.offline.lock().unwrap_or_else(|e| e.into_inner()) = side;
    Ok(sim)
}

/// Replaces a locker's 1.0 session with a 1.1 device's on the same hardware, booted; records
/// `offline_boot` (connect and boot). The server must answer with the offline object and find
/// nothing amiss in the snapshot. On failure the locker has no session, its hardware parked.
async fn become_1_1(fleet: &Fleet, slot: &Slot, state: &mut SlotState, m: &Metrics) -> Option<SimLocker> {
    const OP: &str = "offline_boot";
    let old = state.sim.take()?;
    let hardware = old.compartments.lock().unwrap_or_else(|e| e.into_inner()).clone();
    old.disconnect().await;
    let started = Instant::now();
    let sim = match tokio::time::timeout(CALL_TIMEOUT, connect_1_1(fleet, slot)).await {
        Ok(Ok(sim)) => sim,
        Ok(Err(e)) => {
            m.sim_error(OP, &e);
            state.park(hardware);
            return None;
        }
        Err(_) => {
            m.error(OP, ErrorClass::Connect, "connect timeout", "no connection within 30 s");
            state.park(hardware);
            return None;
        }
    };
    *sim.compartments.lock().unwrap_or_else(|e| e.into_inner()) = hardware;
    let checked = match sim.boot().await {
        Ok(b) if b.status != "Accepted" => Err(SimError::Unexpected(format!("boot status {}", b.status))),
        Ok(b) if b.offline.is_none() => Err(SimError::Unexpected(
            "a 1.1 boot answered without the offline object".into(),
        )),
        Ok(b) if !b.discrepancies.is_empty() => Err(SimError::Unexpected(format!(
            "1.1 boot of {} reported {:?}",
            slot.id, b.discrepancies
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = checked {
        m.sim_error(OP, &e);
        state.sim = Some(sim);
        return None;
    }
    m.record(OP, started.elapsed());
    m.add("offline_booted", 1);
    Some(sim)
}

/// A walk-up deposit by the recipient's phone (as in the traffic); records `offline_deposit`
/// (start to the door closed on it). Returns (parcel id, compartment).
async fn deposit(ctx: &Ctx, slot: &Slot, sim: &SimLocker, seq: usize) -> Option<(String, i32)> {
    const OP: &str = "offline_deposit";
    let m = &ctx.metrics;
    let carrier = &ctx.world.carriers[seq % ctx.world.carriers.len()];
    let phone = ctx.world.sites[slot.site].phone.clone();
    let tracking = format!("LO{}{seq:08}", ctx.tag);
    let t = Instant::now();
    let open = match sim
        .start_deposit(&carrier.id, Identify::Phone(phone), Size::S, Some(&tracking))
        .await
    {
        Ok(o) => o,
        Err(e) => {
            m.sim_error(OP, &e);
            return None;
        }
    };
    match sim.put_parcel(open.compartment).await {
        Ok(o) if o == "deposited" => {}
        Ok(o) => {
            let message = format!("closing the door on a parcel gave outcome {o:?}");
            m.error(OP, ErrorClass::Protocol, format!("outcome {o}"), message);
            return None;
        }
        Err(e) => {
            m.sim_error(OP, &e);
            return None;
        }
    }
    m.record(OP, t.elapsed());
    m.add("offline_deposited", 1);
    ctx.ledger(&open.deposit_id, Fate::Deposited);
    Some((open.deposit_id, open.compartment))
}

/// A short, low-cardinality name for a kiosk's refusal.
fn refusal(e: &OfflineRefusal) -> &'static str {
    match e {
        OfflineRefusal::Invalid(_) => "invalid QR token",
        OfflineRefusal::Spent => "QR token spent",
        OfflineRefusal::Empty => "compartment empty",
        OfflineRefusal::NotOfflineCapable => "not a 1.1 device",
        _ => "refused",
    }
}

/// One locker: 1.1 boot, a deposit, its QR token, the network cut, the offline pickup.
async fn take_one(ctx: &Ctx, idx: usize) -> Option<Cut> {
    let m = &ctx.metrics;
    let slot = &ctx.fleet.slots[idx];
    let mut state = slot.state.lock().await;
    let sim = become_1_1(&ctx.fleet, slot, &mut state, m).await?;
    // From here the session is the slot's until the network is cut, whatever fails.
    state.sim = Some(sim.clone());
    let (parcel_id, compartment) = deposit(ctx, slot, &sim, idx).await?;
    state.used += 1;
    let deposited_at = Instant::now();
    let Some(codes) = &ctx.codes else {
        m.error(
            "qr_wait",
            ErrorClass::Other,
            "no outbox reader",
            "no database to read QR tokens from",
        );
        return None;
    };
    let Some((token, seen)) = codes.wait_qr(&parcel_id, CODE_WAIT).await else {
        let message = format!("no QR token for {parcel_id} within {CODE_WAIT:?}");
        m.error("qr_wait", ErrorClass::Other, "QR token unavailable", message);
        return None;
    };
    m.record("qr_wait", seen.saturating_duration_since(deposited_at));
    m.add("offline_qr_tokens", 1);

    // The network goes; the kiosk works on alone.
    state.sim = None;
    sim.disconnect().await;
    if !sim.wait_closed(CLOSE_WAIT).await {
        let message = format!("{}: still connected {CLOSE_WAIT:?} after the cut", slot.id);
        m.error("offline_pickup", ErrorClass::Other, "not disconnected", message);
        state.park(sim.compartments.lock().unwrap_or_else(|e| e.into_inner()).clone());
        return None;
    }
    match sim.pickup_offline_qr(&token) {
        Ok(c) if c == compartment => {}
        Ok(c) => {
            let message = format!("the QR token of {parcel_id} (compartment {compartment}) opened {c}");
            m.error("offline_pickup", ErrorClass::Protocol, "wrong compartment", message);
            return None;
        }
        Err(e) => {
            let message = format!("{}: the kiosk refused the QR token of {parcel_id}: {e}", slot.id);
            m.error("offline_pickup", ErrorClass::Protocol, refusal(&e), message);
            return None;
        }
    }
    m.add("offline_picked_up", 1);
    Some(Cut {
        idx,
        sim,
        parcel_id,
        compartment,
    })
}

/// Takes up to `n` lockers offline, `concurrency` at a time, within `within`. Returns the
/// report so far and the lockers now offline with a pickup journaled.
pub async fn take_offline(ctx: &Ctx, n: usize, concurrency: usize, within: Duration) -> (OfflineReport, Vec<Cut>) {
    let m = &ctx.metrics;
    let started = Instant::now();
    let chosen = choose(&ctx.fleet, n).await;
    if chosen.len() < n {
        let message = format!(
            "only {} of {n} lockers were connected with a free compartment",
            chosen.len()
        );
        m.error("offline", ErrorClass::Other, "no room", message);
    }
    let pb = progress::bar(chosen.len() as u64, "offline");
    let cut: Vec<Cut> = futures_util::stream::iter(chosen.iter().copied())
        .map(|idx| {
            let pb = pb.clone();
            async move {
                let c = take_one(ctx, idx).await;
                pb.inc(1);
                c
            }
        })
        .buffer_unordered(concurrency.max(1))
        .take_until(tokio::time::sleep(within))
        .filter_map(|c| async move { c })
        .collect()
        .await;
    pb.finish_and_clear();
    if started.elapsed() >= within {
        let message = format!("taking lockers offline exceeded {within:?}");
        m.error("offline", ErrorClass::Other, "phase timeout", message);
    }
    let count = |name: &str| m.counter(name) as usize;
    let report = OfflineReport {
        lockers: n,
        taken: chosen.len(),
        booted_1_1: count("offline_booted"),
        deposited: count("offline_deposited"),
        qr_tokens: count("offline_qr_tokens"),
        picked_up_offline: count("offline_picked_up"),
        offline_secs: started.elapsed().as_secs_f64(),
        concurrency,
        ..OfflineReport::default()
    };
    (report, cut)
}

/// Checks one boot of a device coming back: accepted, with its reconciliation deferred to the
/// replay (it holds an event the server has not applied, docs/protocol.md §15.2).
async fn boot_back(sim: &SimLocker) -> Result<(), SimError> {
    let b = sim.boot().await?;
    if b.status != "Accepted" {
        return Err(SimError::Unexpected(format!("boot status {}", b.status)));
    }
    match b.offline.as_ref().map(|o| o.journal.reconcile.as_str()) {
        Some("after_replay") => Ok(()),
        other => Err(SimError::Unexpected(format!(
            "{}: boot with a pending journal answered reconcile {other:?}, not after_replay",
            sim.locker_id
        ))),
    }
}

/// One locker back: reconnect, boot, replay; records `replay` (reconnect start to the replay
/// answered). The slot holds the new session afterwards.
async fn bring_back(ctx: &Ctx, cut: Cut) -> Back {
    const OP: &str = "replay";
    let m = &ctx.metrics;
    let slot = &ctx.fleet.slots[cut.idx];
    let failed = Back {
        outcomes: Vec::new(),
        ok: false,
    };
    let started = Instant::now();
    let sim = match tokio::time::timeout(CALL_TIMEOUT, reconnect(&ctx.fleet, slot, &cut.sim)).await {
        Ok(Ok(sim)) => sim,
        Ok(Err(e)) => {
            m.sim_error(OP, &e);
            return failed;
        }
        Err(_) => {
            m.error(OP, ErrorClass::Connect, "connect timeout", "no connection within 30 s");
            return failed;
        }
    };
    let mut state = slot.state.lock().await;
    state.sim = Some(sim.clone());
    if let Err(e) = boot_back(&sim).await {
        m.sim_error(OP, &e);
        return failed;
    }
    let results = match sim.replay_journal().await {
        Ok(r) => r,
        Err(e) => {
            m.sim_error(OP, &e);
            return failed;
        }
    };
    m.record(OP, started.elapsed());
    let outcomes: Vec<String> = results
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or("none").to_string())
        .collect();
    let picked_up = |r: &Value| r["outcome"] == "picked_up" && r["parcel_id"] == cut.parcel_id.as_str();
    let ok = results.len() == 1 && results.iter().all(picked_up) && sim.journal().is_empty();
    if ok {
        state.used = state.used.saturating_sub(1);
        ctx.ledger(&cut.parcel_id, Fate::PickedUp);
    } else {
        let message = format!(
            "{}: replay of the pickup of {} (compartment {}) gave {results:?}; {} events left",
            slot.id,
            cut.parcel_id,
            cut.compartment,
            sim.journal().len()
        );
        m.error(OP, ErrorClass::Protocol, "not picked_up", message);
    }
    Back { outcomes, ok }
}

/// Every offline locker comes back at once (`concurrency` at a time, within `within`):
/// reconnect, boot, replay. Fills the replay figures of `report`; returns the parcels the
/// replay reported picked up.
pub async fn come_back(
    ctx: &Ctx,
    cut: Vec<Cut>,
    report: &mut OfflineReport,
    concurrency: usize,
    within: Duration,
) -> Vec<String> {
    let pb = progress::bar(cut.len() as u64, "replay");
    let started = Instant::now();
    let backs: Vec<(String, Back)> = futures_util::stream::iter(cut)
        .map(|c| {
            let pb = pb.clone();
            async move {
                let parcel = c.parcel_id.clone();
                let b = bring_back(ctx, c).await;
                pb.inc(1);
                (parcel, b)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .take_until(tokio::time::sleep(within))
        .collect()
        .await;
    pb.finish_and_clear();
    report.replay_secs = started.elapsed().as_secs_f64();
    if started.elapsed() >= within {
        let message = format!("bringing offline lockers back exceeded {within:?}");
        ctx.metrics.error("replay", ErrorClass::Other, "phase timeout", message);
    }
    let mut picked = Vec::new();
    for (parcel, b) in backs {
        for o in b.outcomes {
            *report.outcomes.entry(o).or_default() += 1;
        }
        if b.ok {
            report.replayed += 1;
            picked.push(parcel);
        }
    }
    report.replay_rate_per_sec = report.replayed as f64 / report.replay_secs.max(1e-9);
    if let Some(l) = ctx.metrics.latencies().get("replay") {
        report.replay_p50_ms = Some(l.p50_ms);
        report.replay_p99_ms = Some(l.p99_ms);
    }
    picked
}

/// Whether the admin API's parcel is picked up, with its time and its offline history event.
async fn picked_up_offline(api: &crate::http::Api, id: &str) -> Result<(), String> {
    let (s, v) = api
        .get(&format!("/api/v1/parcels/{id}"))
        .await
        .map_err(|e| format!("{e:#}"))?;
    if s != 200 {
        return Err(format!("HTTP {s}: {v}"));
    }
    if v["state"] != "picked_up" || !v["picked_up_at"].is_string() {
        return Err(format!("state {}, picked_up_at {}", v["state"], v["picked_up_at"]));
    }
    // The history's detail is a JSON object as text.
    let offline = |e: &Value| {
        let detail = match &e["detail"] {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            d => d.clone(),
        };
        e["to_state"] == "picked_up" && detail["offline"] == true
    };
    if !v["events"].as_array().is_some_and(|evs| evs.iter().any(offline)) {
        return Err("no offline picked_up event in its history".into());
    }
    Ok(())
}

/// Every parcel the replay reported picked up, through the admin API, within `within`.
pub async fn verify(ctx: &Ctx, parcels: &[String], report: &mut OfflineReport, within: Duration) {
    let m = &ctx.metrics;
    let started = Instant::now();
    let checked: Vec<(String, Result<(), String>)> = futures_util::stream::iter(parcels)
        .map(|id| async move { (id.clone(), picked_up_offline(&ctx.api, id).await) })
        .buffer_unordered(VERIFY_CONCURRENCY)
        .take_until(tokio::time::sleep(within))
        .collect()
        .await;
    if checked.len() < parcels.len() {
        let message = format!(
            "{} of {} parcels unchecked within {within:?}",
            parcels.len() - checked.len(),
            parcels.len()
        );
        m.error("offline_verify", ErrorClass::Other, "phase timeout", message);
    }
    for (id, r) in checked {
        match r {
            Ok(()) => report.verified += 1,
            Err(e) => m.error(
                "offline_verify",
                ErrorClass::Other,
                "not picked up",
                format!("{id}: {e}"),
            ),
        }
    }
    report.verify_secs = started.elapsed().as_secs_f64();
}
