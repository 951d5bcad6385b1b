//! The TimeoutActor: every deadline (reservation expiry, reminders, dwell expiry) is a row in
//! the database and, once it is near, a `run_later` message to this actor. A commit that
//! schedules a deadline tells this actor (`DeadlinesQueued`), which schedules it at once if it
//! falls due within the horizon (two scan intervals). A periodic scan schedules whatever else
//! comes within the horizon, so memory stays bounded and a restart loses nothing: the first
//! scan fires whatever came due while the server was down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::messages::{DeadlinesQueued, ExpireReservation, FireDueDeadlines, GetLocker, ScheduledDeadlines};
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::deadlines::{self, Due};
use crate::db::{write_transaction, Db};

/// Most deadlines scheduled by one scan; the next scan picks up the rest.
const SCAN_LIMIT: i64 = 10_000;

pub struct TimeoutActor {
    db: Db,
    settings: Arc<Settings>,
    /// The application's clock: deadlines come due by it (tests move it forward).
    clock: Clock,
    /// The hub's registry of locker actors: a reservation's compartment is its locker's to release.
    lockers: Recipient<GetLocker>,
    scheduled: HashMap<String, SpawnHandle>,
    /// Reads and fires in flight, so `FireDueDeadlines` answers only once they are done.
    busy: Arc<AtomicUsize>,
    /// Wall time of the last `FireDueDeadlines` answer: it counts what fired since.
    last_probe: chrono::NaiveDateTime,
}

/// Counts one piece of work in flight for as long as it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(busy: &Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::SeqCst);
        Self(busy.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TimeoutActor {
    pub fn new(db: Db, settings: Arc<Settings>, clock: Clock, lockers: Recipient<GetLocker>) -> Self {
        Self {
            db,
            settings,
            clock,
            lockers,
            scheduled: HashMap::new(),
            busy: Arc::new(AtomicUsize::new(0)),
            last_probe: crate::db::now(),
        }
    }

    /// How far ahead deadlines get a timer: two scan intervals, so one scan can fail unnoticed.
    fn horizon_end(&self) -> chrono::NaiveDateTime {
        let horizon = Duration::from_millis(self.settings.deadline_scan_ms.saturating_mul(2));
        self.clock.now() + chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::seconds(2))
    }

    fn scan(&mut self, ctx: &mut Context<Self>) {
        let until = self.horizon_end();
        self.schedule_until(until, ctx);
    }

    /// Gives every pending deadline due by `until` a timer, unless it has one.
    fn schedule_until(&mut self, until: chrono::NaiveDateTime, ctx: &mut Context<Self>) {
        let db = self.db.clone();
        let guard = InFlight::new(&self.busy);
        ctx.spawn(
            async move { db.read(move |c| Ok(deadlines::upcoming(c, until, SCAN_LIMIT)?)).await }
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(due) => {
                        for d in due {
                            if act.scheduled.contains_key(&d.id) {
                                continue;
                            }
                            let wait = (d.due_at - act.clock.now()).to_std().unwrap_or(Duration::ZERO);
                            let id = d.id.clone();
                            let handle = ctx.run_later(wait, move |act, ctx| act.fire(d, ctx));
                            act.scheduled.insert(id, handle);
                        }
                        drop(guard);
                    }
                    Err(e) => {
                        drop(guard);
                        tracing::warn!(error = %e, "cannot scan deadlines")
                    }
                }),
        );
    }

    fn fire(&mut self, d: Due, ctx: &mut Context<Self>) {
        let id = d.id.clone();
        let guard = InFlight::new(&self.busy);
        ctx.spawn(
            fire(self.db.clone(), self.lockers.clone(), d)
                .into_actor(self)
                .map(move |_, act, _| {
                    act.scheduled.remove(&id);
                    drop(guard);
                }),
        );
    }
}

/// Fires one deadline. Each kind claims its row when it fires, so a deadline that a timer and
/// a `FireDueDeadlines` both reach fires once.
async fn fire(db: Db, lockers: Recipient<GetLocker>, d: Due) {
    if d.kind == "reservation_expiry" {
        // The compartment is the locker actor's to release.
        let Some(locker_id) = d.locker_id.clone() else { return };
        if let Ok(locker) = lockers.send(GetLocker { locker_id }).await {
            if let Err(e) = locker.send(ExpireReservation { due: d }).await {
                tracing::warn!(error = %e, "reservation expiry not delivered");
            }
        }
        return;
    }
    let kind = d.kind.clone();
    let res = db
        .run(move |c| {
            write_transaction(c, |c| match d.kind.as_str() {
                "dwell_expiry" => crate::workflows::expiry::fire_dwell_expiry(c, &d),
                "reminder" | "expiring_soon" => crate::workflows::expiry::fire_reminder(c, &d),
                other => {
                    tracing::warn!(kind = other, "unknown deadline kind; marking it fired");
                    Ok(deadlines::claim(c, &d.id)?)
                }
            })
        })
        .await;
    match res {
        Ok(fired) => tracing::debug!(kind, fired, "deadline"),
        // Not claimed: it is still pending and the next scan tries again.
        Err(e) => tracing::warn!(kind, error = %e, "deadline failed; will retry"),
    }
}

impl Handler<FireDueDeadlines> for TimeoutActor {
    type Result = ResponseActFuture<Self, usize>;

    /// Fires what is due by the clock now, waits for the timers and reads already in flight,
    /// and answers how many deadlines fired since the last answer, by whichever path: a commit
    /// that queued a deadline may have given it a timer that the moved clock made due at once,
    /// so counting only this handler's own fires would be a race.
    fn handle(&mut self, _: FireDueDeadlines, _: &mut Context<Self>) -> Self::Result {
        let (db, lockers, now) = (self.db.clone(), self.lockers.clone(), self.clock.now());
        let (busy, since) = (self.busy.clone(), self.last_probe);
        Box::pin(
            async move {
                match db.read(move |c| Ok(deadlines::upcoming(c, now, SCAN_LIMIT)?)).await {
                    Ok(due) => {
                        for d in due {
                            fire(db.clone(), lockers.clone(), d).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read due deadlines"),
                }
                // Bounded: work in flight is one database transaction each.
                for _ in 0..5_000 {
                    if busy.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    actix::clock::sleep(Duration::from_millis(2)).await;
                }
                let counted = crate::db::now();
                let n = db
                    .read(move |c| Ok(deadlines::fired_since(c, since, now)?))
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "cannot count fired deadlines");
                        0
                    });
                (n, counted)
            }
            .into_actor(self)
            .map(|(n, counted), act, _| {
                act.last_probe = counted;
                n
            }),
        )
    }
}

impl Handler<DeadlinesQueued> for TimeoutActor {
    type Result = ();

    /// Reads the pending deadlines up to the latest one queued within the horizon (one read for
    /// a commit that scheduled several); those beyond it wait for a scan to come near.
    fn handle(&mut self, msg: DeadlinesQueued, ctx: &mut Context<Self>) {
        let horizon_end = self.horizon_end();
        if let Some(until) = msg.due_at.range(..=horizon_end).next_back() {
            self.schedule_until(*until, ctx);
        }
    }
}

impl Handler<ScheduledDeadlines> for TimeoutActor {
    type Result = usize;

    fn handle(&mut self, _: ScheduledDeadlines, _: &mut Context<Self>) -> usize {
        self.scheduled.len()
    }
}

impl Actor for TimeoutActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.scheduled.clear();
        self.scan(ctx);
        ctx.run_interval(Duration::from_millis(self.settings.deadline_scan_ms), |act, ctx| {
            act.scan(ctx)
        });
    }
}

impl Supervised for TimeoutActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("timeout actor restarting");
    }
}
