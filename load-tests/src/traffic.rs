//! Carrier traffic at a target rate (open loop): each scheduled operation is one parcel. A
//! share is pre-advised by its carrier with a signed callback; the driver then deposits it at
//! the kiosk (by tracking number, or by the recipient's phone for a walk-up); a share is then
//! picked up by its recipient with the code from the notification outbox. Every operation is
//! bounded by the simulator's call timeout; the schedule is bounded by count and deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockerhub::domain::Size;
use lockerhub::protocol::messages::{DepositOpen, DoorChange, Identify, PickupOpen, StartDeposit};
use lockerhub::simulator::{SimError, SimLocker};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinSet;

use crate::cli::Mix;
use crate::fleet::{Fleet, SlotState, Target};
use crate::http::Api;
use crate::metrics::{ErrorClass, Metrics};
use crate::outbox::Codes;
use crate::progress;
use crate::provision::World;

/// What the tool knows happened to a parcel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Deposited,
    /// Deposited, and a pickup was begun but not confirmed (the connection dropped, or the
    /// server was killed): the server may have it either way, `deposited` or `picked_up` (a
    /// pickup interrupted with the door closed on an empty compartment is decided at the next
    /// boot as taken).
    PickupUnconfirmed,
    PickedUp,
}

pub struct Ctx {
    pub target: Target,
    pub fleet: Arc<Fleet>,
    pub metrics: Arc<Metrics>,
    pub api: Api,
    pub world: World,
    pub codes: Option<Arc<Codes>>,
    pub mix: Mix,
    pub tag: String,
    pub seed: u64,
    pub pickup_delay: Duration,
    pub ledger: Mutex<HashMap<String, Fate>>,
}

/// How long a recipient waits for the code to show up in the outbox.
pub const CODE_WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Default, Serialize)]
pub struct TrafficReport {
    pub target_rate: f64,
    pub secs: f64,
    pub scheduled: u64,
    pub started: u64,
    /// Scheduled operations not started because --max-in-flight were running.
    pub shed: u64,
    /// Operations that found no locker with room and nobody at the kiosk.
    pub no_free_locker: u64,
    /// Operations still running when the drain bound ran out (aborted).
    pub abandoned: usize,
    pub max_in_flight: usize,
    pub peak_in_flight: usize,
    pub deposits: u64,
    pub pickups: u64,
    pub deposits_per_sec: f64,
    pub pickups_per_sec: f64,
    /// WebSocket calls and HTTP requests completed per second.
    pub calls_per_sec: f64,
    pub ops_per_sec: BTreeMap<String, f64>,
}

impl Fleet {
    /// A random locker with room and nobody at it, locked for the caller.
    fn acquire(&self, rng: &mut StdRng) -> Option<(usize, tokio::sync::MutexGuard<'_, SlotState>)> {
        for _ in 0..32 {
            let i = rng.gen_range(0..self.slots.len());
            if let Ok(g) = self.slots[i].state.try_lock() {
                if g.sim.is_some() && g.used < self.slots[i].capacity {
                    return Some((i, g));
                }
            }
        }
        None
    }
}

impl Ctx {
    pub fn ledger(&self, parcel: &str, fate: Fate) {
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(parcel.to_string(), fate);
    }

    pub fn ledger_snapshot(&self) -> HashMap<String, Fate> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One parcel: optional pre-advice, the deposit, and optionally its pickup.
    async fn parcel(self: Arc<Self>, seq: u64, end: Instant) {
        let mut rng = StdRng::seed_from_u64(self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let preadvised = rng.gen_bool(self.mix.preadvised);
        let pick_up = rng.gen_bool(self.mix.pickup);
        let carrier = &self.world.carriers[rng.gen_range(0..self.world.carriers.len())];
        let Some((idx, mut state)) = self.fleet.acquire(&mut rng) else {
            self.metrics.add("no_free_locker", 1);
            return;
        };
        let slot = &self.fleet.slots[idx];
        let Some(sim) = state.sim.clone() else { return };
        let m = &self.metrics;
        let tracking = format!("LT{}{seq:08}", self.tag);
        let phone = &self.world.sites[slot.site].phone;

        if preadvised {
            let body = json!({"type": "out_for_delivery", "data": {
                "tracking_number": tracking, "locker_id": slot.id,
                "recipient": {"phone": phone}, "size": "S"}});
            match self
                .api
                .carrier_event(carrier, &format!("evt-{}-{seq}", self.tag), &body)
                .await
            {
                Ok((s, v, took)) if s == 202 && (self.target == Target::Echo || v["state"] == "reserved") => {
                    m.record("preadvice", took);
                    if self.target == Target::Lockerhub {
                        state.used += 1;
                    }
                }
                Ok((s, v, _)) => {
                    m.error("preadvice", ErrorClass::Http, format!("HTTP {s}"), format!("{s}: {v}"));
                    return;
                }
                Err(e) => {
                    m.error("preadvice", ErrorClass::Http, "transport", e);
                    return;
                }
            }
        }

        let identify = if preadvised {
            Identify::TrackingNumber(tracking.clone())
        } else {
            Identify::Phone(phone.clone())
        };
        let scanned = (!preadvised).then_some(tracking.as_str());
        let t = Instant::now();
        let open = match self.target {
            Target::Lockerhub => sim.start_deposit(&carrier.id, identify, Size::S, scanned).await,
            Target::Echo => {
                let req = StartDeposit {
                    carrier_id: carrier.id.clone(),
                    identify,
                    size: Size::S,
                    tracking_number: scanned.map(str::to_string),
                };
                sim.call("StartDeposit", json!(req)).await.map(|_| DepositOpen {
                    deposit_id: format!("echo-{seq}"),
                    compartment: 1,
                    size: Size::S,
                })
            }
        };
        let open = match open {
            Ok(o) => {
                m.record("start_deposit", t.elapsed());
                if self.target == Target::Lockerhub && !preadvised {
                    state.used += 1;
                }
                o
            }
            Err(e) => {
                m.sim_error("start_deposit", &e);
                return;
            }
        };

        let t = Instant::now();
        match sim.put_parcel(open.compartment).await {
            Ok(outcome) if outcome == "deposited" || self.target == Target::Echo => {
                m.record("put_parcel", t.elapsed());
                if self.target == Target::Lockerhub {
                    self.ledger(&open.deposit_id, Fate::Deposited);
                }
            }
            Ok(outcome) => {
                m.error(
                    "put_parcel",
                    ErrorClass::Protocol,
                    format!("outcome {outcome}"),
                    format!("closing the door on a parcel gave outcome {outcome:?}"),
                );
                return;
            }
            Err(e) => {
                m.sim_error("put_parcel", &e);
                return;
            }
        }
        drop(state);
        let deposited_at = Instant::now();

        if !pick_up || deposited_at + self.pickup_delay >= end {
            return;
        }
        if self.target == Target::Lockerhub && self.codes.is_none() {
            return;
        }
        tokio::time::sleep(self.pickup_delay).await;
        let code = match (&self.codes, self.target) {
            (Some(codes), Target::Lockerhub) => match codes.wait(&open.deposit_id, CODE_WAIT).await {
                Some((c, seen)) => {
                    // How long after the deposit the code was readable in the outbox.
                    m.record("code_wait", seen.saturating_duration_since(deposited_at));
                    c
                }
                None => {
                    m.error(
                        "code_wait",
                        ErrorClass::Other,
                        "code unavailable",
                        format!("no pickup code for {} within {CODE_WAIT:?}", open.deposit_id),
                    );
                    return;
                }
            },
            _ => "00000000".to_string(),
        };
        let slot = &self.fleet.slots[idx];
        let Ok(mut state) = tokio::time::timeout(Duration::from_secs(30), slot.state.lock()).await else {
            m.error(
                "pickup",
                ErrorClass::Other,
                "kiosk busy",
                "the locker stayed busy for 30 s",
            );
            return;
        };
        let Some(sim) = state.sim.clone() else { return };
        if self.target == Target::Lockerhub {
            self.ledger(&open.deposit_id, Fate::PickupUnconfirmed);
        }
        if self.pickup(&sim, &code, phone, &open).await && self.target == Target::Lockerhub {
            state.used = state.used.saturating_sub(1);
            self.ledger(&open.deposit_id, Fate::PickedUp);
        }
    }

    /// The recipient at the kiosk: code, open, take the parcel, close. Records `pickup`
    /// (request to "open compartment N") and `take_parcel` (the two door events).
    async fn pickup(&self, sim: &SimLocker, code: &str, phone: &str, open: &DepositOpen) -> bool {
        let m = &self.metrics;
        let t = Instant::now();
        // The recipient's second factor (protocol 1.0.1): the last 4 digits of their phone.
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        let factor = &digits[digits.len().saturating_sub(4)..];
        let answer = sim.call("Pickup", json!({"code": code, "second_factor": factor})).await;
        let number = match (answer, self.target) {
            (Ok(v), Target::Lockerhub) => match serde_json::from_value::<PickupOpen>(v) {
                Ok(p) if p.parcel_id == open.deposit_id && p.compartment == open.compartment => p.compartment,
                Ok(p) => {
                    m.error(
                        "pickup",
                        ErrorClass::Protocol,
                        "wrong parcel",
                        format!(
                            "code for {} in compartment {} opened {} ({})",
                            open.deposit_id, open.compartment, p.compartment, p.parcel_id
                        ),
                    );
                    return false;
                }
                Err(e) => {
                    m.sim_error("pickup", &SimError::Unexpected(e.to_string()));
                    return false;
                }
            },
            (Ok(_), Target::Echo) => open.compartment,
            (Err(e), _) => {
                m.sim_error("pickup", &e);
                if matches!(e, SimError::Timeout(_)) {
                    // Which side lost it: a call that times out on an open connection was not
                    // answered by the server; on a closed one, the close was not noticed.
                    m.note(
                        "pickup",
                        format!(
                            "Pickup at {} unanswered; connection closed: {}",
                            sim.locker_id,
                            sim.is_closed()
                        ),
                    );
                }
                return false;
            }
        };
        m.record("pickup", t.elapsed());
        let t = Instant::now();
        let outcome = async {
            sim.door(number, DoorChange::Opened).await?;
            sim.tamper(number, true, false);
            sim.door(number, DoorChange::Closed).await
        }
        .await;
        match outcome {
            Ok(o) if o == "picked_up" || self.target == Target::Echo => {
                m.record("take_parcel", t.elapsed());
                true
            }
            Ok(o) => {
                m.error(
                    "take_parcel",
                    ErrorClass::Protocol,
                    format!("outcome {o}"),
                    format!("closing the door after a pickup gave outcome {o:?}"),
                );
                false
            }
            Err(e) => {
                m.sim_error("take_parcel", &e);
                false
            }
        }
    }
}

/// Schedules `rate` parcels per second for `duration` (at most rate x duration of them), at
/// most `max_in_flight` at once, then waits up to `drain` for the ones still running.
pub async fn drive(
    ctx: Arc<Ctx>,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    drain: Duration,
) -> TrafficReport {
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let pb = progress::bar(duration.as_secs(), "traffic");
    let m = ctx.metrics.clone();
    let count_before: BTreeMap<&str, u64> = OPS_IN_TRAFFIC.iter().map(|op| (*op, m.count(op))).collect();
    let start = Instant::now();
    let end = start + duration;
    let mut set = JoinSet::new();
    let (mut issued, mut shed, mut peak) = (0u64, 0u64, 0usize);
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_msg = Instant::now();
    while issued < total && Instant::now() < end {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate).floor() as u64 + 1).min(total);
        while set.try_join_next().is_some() {}
        while issued < due {
            if set.len() >= max_in_flight {
                shed += 1;
            } else {
                set.spawn(ctx.clone().parcel(issued, end));
            }
            issued += 1;
        }
        peak = peak.max(set.len());
        if last_msg.elapsed() >= Duration::from_millis(500) {
            last_msg = Instant::now();
            pb.set_position(start.elapsed().as_secs());
            pb.set_message(format!(
                "{} deposits, {} pickups, {} errors, {} in flight",
                m.count("put_parcel") - count_before["put_parcel"],
                m.count("take_parcel") - count_before["take_parcel"],
                m.error_total(),
                set.len()
            ));
        }
    }
    // Pickups scheduled before the end may still run: let them finish, within the bound.
    let traffic_end = Instant::now();
    let secs = (traffic_end - start).as_secs_f64().max(1e-9);
    let drained = tokio::time::timeout(drain, async { while set.join_next().await.is_some() {} }).await;
    let abandoned = if drained.is_err() { set.len() } else { 0 };
    set.abort_all();
    pb.finish_and_clear();

    let done = |op: &str| m.count(op) - count_before.get(op).copied().unwrap_or(0);
    let ops_per_sec: BTreeMap<String, f64> = OPS_IN_TRAFFIC
        .iter()
        .map(|op| (op.to_string(), done(op) as f64 / secs))
        .collect();
    // put_parcel and take_parcel are two WebSocket calls each.
    let calls =
        done("preadvice") + done("start_deposit") + 2 * done("put_parcel") + done("pickup") + 2 * done("take_parcel");
    TrafficReport {
        target_rate: rate,
        secs,
        scheduled: issued,
        started: issued - shed,
        shed,
        no_free_locker: m.counter("no_free_locker"),
        abandoned,
        max_in_flight,
        peak_in_flight: peak,
        deposits: done("put_parcel"),
        pickups: done("take_parcel"),
        deposits_per_sec: done("put_parcel") as f64 / secs,
        pickups_per_sec: done("take_parcel") as f64 / secs,
        calls_per_sec: calls as f64 / secs,
        ops_per_sec,
    }
}

/// Operations timed during the traffic phase.
pub const OPS_IN_TRAFFIC: &[&str] = &[
    "preadvice",
    "start_deposit",
    "put_parcel",
    "code_wait",
    "pickup",
    "take_parcel",
];

#[derive(Debug, Clone, Default, Serialize)]
pub struct ParcelReport {
    /// Parcels the fleet saw deposited (door closed, outcome `deposited`).
    pub deposited: usize,
    /// Of those, picked up (outcome `picked_up`).
    pub picked_up: usize,
    /// Of those, a pickup begun but not confirmed: either state is right.
    pub pickups_unconfirmed: usize,
    /// Parcels whose server state is not what the fleet saw: lost.
    pub lost: usize,
    pub lost_examples: Vec<String>,
    /// Compartments that two live parcels (reserved, deposited or expired) both name.
    pub double_held: usize,
    pub double_held_examples: Vec<String>,
    pub secs: f64,
}

/// Checks every parcel in the ledger against the server's lists (admin API).
pub async fn verify(api: &Api, ledger: &HashMap<String, Fate>, within: Duration) -> anyhow::Result<ParcelReport> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    let max_pages = ledger.len() / 200 + 1000;
    let ids = |items: Vec<serde_json::Value>| -> HashSet<String> {
        items
            .iter()
            .filter_map(|p| p["id"].as_str().map(str::to_string))
            .collect()
    };
    let deposited_items = api
        .all_pages("/api/v1/parcels?state=deposited", max_pages, deadline)
        .await?;
    let mut report = ParcelReport::default();
    // Every compartment a live parcel holds, and by which parcels.
    let mut holders: HashMap<String, BTreeSet<String>> = HashMap::new();
    for state in ["reserved", "expired"] {
        let items = api
            .all_pages(&format!("/api/v1/parcels?state={state}"), max_pages, deadline)
            .await?;
        note_holders(&mut holders, &items);
    }
    note_holders(&mut holders, &deposited_items);
    for (compartment, parcels) in holders.iter().filter(|(_, p)| p.len() > 1) {
        report.double_held += 1;
        if report.double_held_examples.len() < 10 {
            report.double_held_examples.push(format!("{compartment}: {parcels:?}"));
        }
    }
    let deposited = ids(deposited_items);
    let picked = ids(api
        .all_pages("/api/v1/parcels?state=picked_up", max_pages, deadline)
        .await?);
    for (id, fate) in ledger {
        let found = match fate {
            Fate::Deposited => {
                report.deposited += 1;
                deposited.contains(id)
            }
            Fate::PickupUnconfirmed => {
                report.deposited += 1;
                report.pickups_unconfirmed += 1;
                deposited.contains(id) || picked.contains(id)
            }
            Fate::PickedUp => {
                report.deposited += 1;
                report.picked_up += 1;
                picked.contains(id)
            }
        };
        if !found {
            report.lost += 1;
            if report.lost_examples.len() < 10 {
                report.lost_examples.push(format!("{id} ({fate:?})"));
            }
        }
    }
    report.secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Notes which parcels name which compartment. A set per compartment: the lists are fetched
/// one after another, and a parcel that moved between them (reserved, then deposited) is
/// still one holder.
fn note_holders(holders: &mut HashMap<String, BTreeSet<String>>, parcels: &[serde_json::Value]) {
    for p in parcels {
        if let (Some(c), Some(id)) = (p["compartment_id"].as_str(), p["id"].as_str()) {
            holders.entry(c.to_string()).or_default().insert(id.to_string());
        }
    }
}
