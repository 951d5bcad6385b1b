//! The fleet: one `SimLocker` per provisioned locker, each on its own WebSocket from one of
//! several 127.0.0.x source addresses, with a per-locker lock (one person at the kiosk at a
//! time). Connecting, booting, dropping and reconnecting all of them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lockerhub::domain::Size;
use lockerhub::protocol::messages::BootNotification;
use lockerhub::protocol::PROTOCOL_VERSION;
use lockerhub::simulator::{Behaviour, SimCompartment, SimError, SimLocker};
use serde::Serialize;
use serde_json::json;

use crate::metrics::{ErrorClass, Metrics};
use crate::progress;

/// Socket read buffer of every simulated locker.
pub const READ_BUFFER: usize = 4 * 1024;

/// What the fleet talks to: lockerhub answers `BootNotification` with a `BootResponse`; the
/// echo server returns the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Lockerhub,
    Echo,
}

pub struct Slot {
    pub id: String,
    pub credential: String,
    /// Index of the locker's site (and of its recipient).
    pub site: usize,
    pub source: Option<IpAddr>,
    pub capacity: usize,
    pub state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
pub struct SlotState {
    pub sim: Option<SimLocker>,
    /// Compartments reserved or occupied, as this tool knows them.
    pub used: usize,
    /// The hardware's state while disconnected (the storm keeps it across the gap).
    saved: Option<BTreeMap<i32, SimCompartment>>,
}

impl SlotState {
    /// Keeps the hardware's state while the locker has no session: the next reconnect boots
    /// with it.
    pub fn park(&mut self, compartments: BTreeMap<i32, SimCompartment>) {
        self.saved = Some(compartments);
    }
}

pub struct Fleet {
    pub target: Target,
    pub ws_base: String,
    pub layout: Vec<(i32, Size)>,
    pub slots: Vec<Slot>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectReport {
    pub attempted: usize,
    /// Sessions open and booted, as the fleet sees them.
    pub held: usize,
    /// Lockers the server lists as connected afterwards (lockerhub only).
    pub held_server_side: Option<usize>,
    pub failed: usize,
    pub secs: f64,
    /// Lockers connected and booted per second.
    pub rate_per_sec: f64,
    pub concurrency: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StormReport {
    pub lockers: usize,
    /// Seconds to drop every connection (close handshake included).
    pub drop_secs: f64,
    pub reconnected: usize,
    pub failed: usize,
    /// Seconds from the first reconnect to the last boot accepted.
    pub secs: f64,
    pub rate_per_sec: f64,
    /// Boot answers listing discrepancies between the hardware and the server's records.
    pub discrepancies: usize,
    pub concurrency: usize,
}

impl Fleet {
    /// Boots a connected simulator; returns the number of discrepancies the server reported.
    async fn boot(&self, sim: &SimLocker) -> Result<usize, SimError> {
        match self.target {
            Target::Lockerhub => {
                let b = sim.boot().await?;
                if b.status != "Accepted" {
                    return Err(SimError::Unexpected(format!("boot status {}", b.status)));
                }
                Ok(b.discrepancies.len())
            }
            Target::Echo => {
                let payload = json!(BootNotification {
                    firmware_version: "sim-1.0".into(),
                    protocol_version: PROTOCOL_VERSION.into(),
                    compartments: sim.snapshot(),
                    offline: None,
                });
                sim.call("BootNotification", payload).await.map(|_| 0)
            }
        }
    }

    /// Opens one locker's socket and boots it, recording `connect` and `boot` (or, for `op`
    /// `reconnect` or `recover`, the two together as `op`). Returns the discrepancies reported.
    async fn bring_up(&self, slot: &Slot, metrics: &Metrics, op: &'static str) -> Result<usize, ()> {
        let again = op != "connect";
        let behaviour = Behaviour {
            read_buffer: READ_BUFFER,
            ..Behaviour::default()
        };
        let started = Instant::now();
        let connect = SimLocker::connect_with(
            &self.ws_base,
            &slot.id,
            &slot.credential,
            &self.layout,
            behaviour,
            slot.source,
        );
        let sim = match tokio::time::timeout(Duration::from_secs(30), connect).await {
            Ok(Ok(sim)) => sim,
            Ok(Err(e)) => {
                metrics.sim_error(op, &e);
                return Err(());
            }
            Err(_) => {
                metrics.error(op, ErrorClass::Connect, "connect timeout", "no connection within 30 s");
                return Err(());
            }
        };
        let mut state = slot.state.lock().await;
        if let Some(saved) = state.saved.take() {
            *sim.compartments.lock().unwrap_or_else(|e| e.into_inner()) = saved;
        }
        if !again {
            metrics.record("connect", started.elapsed());
        }
        let booting = Instant::now();
        match self.boot(&sim).await {
            Ok(discrepancies) => {
                if again {
                    metrics.record(op, started.elapsed());
                } else {
                    metrics.record("boot", booting.elapsed());
                }
                state.sim = Some(sim);
                Ok(discrepancies)
            }
            Err(e) => {
                metrics.sim_error("boot", &e);
                Err(())
            }
        }
    }

    /// Connects and boots every locker, `concurrency` at a time, within `within`.
    pub async fn connect_all(
        self: &Arc<Self>,
        metrics: &Metrics,
        concurrency: usize,
        within: Duration,
    ) -> ConnectReport {
        let pb = progress::bar(self.slots.len() as u64, "connect");
        let started = Instant::now();
        let work = futures_util::stream::iter(self.slots.iter())
            .map(|slot| {
                let pb = pb.clone();
                async move {
                    let ok = self.bring_up(slot, metrics, "connect").await.is_ok();
                    pb.inc(1);
                    ok
                }
            })
            .buffer_unordered(concurrency)
            .fold(0usize, |n, ok| async move { n + usize::from(ok) });
        let held = match tokio::time::timeout(within, work).await {
            Ok(n) => n,
            Err(_) => {
                metrics.error(
                    "connect",
                    ErrorClass::Other,
                    "phase timeout",
                    format!("connect phase exceeded {within:?}"),
                );
                self.connected().await
            }
        };
        pb.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        ConnectReport {
            attempted: self.slots.len(),
            held,
            held_server_side: None,
            failed: self.slots.len() - held,
            secs,
            rate_per_sec: held as f64 / secs.max(1e-9),
            concurrency,
        }
    }

    /// Sessions currently held.
    pub async fn connected(&self) -> usize {
        let mut n = 0;
        for s in &self.slots {
            if s.state.lock().await.sim.is_some() {
                n += 1;
            }
        }
        n
    }

    /// Drops one locker's connection (close handshake), keeping its hardware state.
    async fn drop_one(slot: &Slot) {
        let mut state = slot.state.lock().await;
        if let Some(sim) = state.sim.take() {
            state.saved = Some(sim.compartments.lock().unwrap_or_else(|e| e.into_inner()).clone());
            drop(state);
            sim.disconnect().await;
        }
    }

    /// Drops every locker's connection (close handshake where it is still open), keeping the
    /// hardware state; whether it finished within `within`.
    pub async fn drop_all(&self, metrics: &Metrics, op: &'static str, within: Duration) {
        let pb = progress::bar(self.slots.len() as u64, "drop");
        let drop_all = futures_util::stream::iter(self.slots.iter()).for_each_concurrent(4096, |slot| {
            let pb = pb.clone();
            async move {
                Self::drop_one(slot).await;
                pb.inc(1);
            }
        });
        if tokio::time::timeout(within, drop_all).await.is_err() {
            metrics.error(op, ErrorClass::Other, "phase timeout", "dropping connections timed out");
        }
        pb.finish_and_clear();
    }

    /// Brings every locker back (`concurrency` connection attempts in flight), each booting
    /// with its hardware state; (lockers back, lockers whose boot reported discrepancies).
    pub async fn reconnect_all(
        &self,
        metrics: &Metrics,
        op: &'static str,
        concurrency: usize,
        within: Duration,
    ) -> (usize, usize) {
        let pb = progress::bar(self.slots.len() as u64, op);
        let work = futures_util::stream::iter(self.slots.iter())
            .map(|slot| {
                let pb = pb.clone();
                async move {
                    let r = self.bring_up(slot, metrics, op).await;
                    pb.inc(1);
                    r
                }
            })
            .buffer_unordered(concurrency)
            .fold((0usize, 0usize), |(ok, disc), r| async move {
                match r {
                    Ok(d) => (ok + 1, disc + usize::from(d > 0)),
                    Err(()) => (ok, disc),
                }
            });
        let r = match tokio::time::timeout(within, work).await {
            Ok(r) => r,
            Err(_) => {
                metrics.error(
                    op,
                    ErrorClass::Other,
                    "phase timeout",
                    format!("{op} exceeded its time bound"),
                );
                (self.connected().await, 0)
            }
        };
        pb.finish_and_clear();
        r
    }

    /// The reconnect storm: every locker drops its connection, then all come back at once.
    pub async fn storm(self: &Arc<Self>, metrics: &Metrics, concurrency: usize, within: Duration) -> StormReport {
        let lockers = self.connected().await;
        let dropping = Instant::now();
        self.drop_all(metrics, "reconnect", within).await;
        let drop_secs = dropping.elapsed().as_secs_f64();
        let started = Instant::now();
        let (reconnected, discrepancies) = self.reconnect_all(metrics, "reconnect", concurrency, within).await;
        let secs = started.elapsed().as_secs_f64();
        if discrepancies > 0 {
            metrics.error(
                "reconnect",
                ErrorClass::Protocol,
                "boot discrepancies",
                format!("{discrepancies} lockers' boot reported discrepancies"),
            );
        }
        StormReport {
            lockers,
            drop_secs,
            reconnected,
            failed: lockers.saturating_sub(reconnected),
            secs,
            rate_per_sec: reconnected as f64 / secs.max(1e-9),
            discrepancies,
            concurrency,
        }
    }

    /// After the server was killed and started again: every locker reconnects and boots with
    /// the hardware state it had. Boot discrepancies are expected here (deposits the kill
    /// interrupted are decided at the boot) and are counted, not errors. Returns (back,
    /// discrepancies, seconds).
    pub async fn recover(&self, metrics: &Metrics, concurrency: usize, within: Duration) -> (usize, usize, f64) {
        let started = Instant::now();
        self.drop_all(metrics, "recover", within).await;
        progress::say(format!(
            "recover: sessions dropped in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        let (back, discrepancies) = self.reconnect_all(metrics, "recover", concurrency, within).await;
        (back, discrepancies, started.elapsed().as_secs_f64())
    }

    /// Closes every session (bounded in time), e.g. before leaving an external server.
    pub async fn disconnect_all(self: &Arc<Self>, within: Duration) {
        let all = futures_util::stream::iter(self.slots.iter()).for_each_concurrent(4096, Self::drop_one);
        let _ = tokio::time::timeout(within, all).await;
    }
}
