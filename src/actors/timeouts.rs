//! The TimeoutActor: every deadline (reservation expiry, reminders, dwell expiry) is a row in
//! the database and, once it is near, a `run_later` message to this actor. A periodic scan
//! schedules what falls due within the next two scan intervals, so memory stays bounded and
//! a restart loses nothing: the first scan fires whatever came due while the server was down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::messages::{ExpireReservation, FireDueDeadlines, GetLocker};
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
}

impl TimeoutActor {
    pub fn new(db: Db, settings: Arc<Settings>, clock: Clock, lockers: Recipient<GetLocker>) -> Self {
        Self {
            db,
            settings,
            clock,
            lockers,
            scheduled: HashMap::new(),
        }
    }

    fn scan(&mut self, ctx: &mut Context<Self>) {
        let db = self.db.clone();
        let horizon = Duration::from_millis(self.settings.deadline_scan_ms * 2);
        let until = self.clock.now() + chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::seconds(2));
        ctx.spawn(
            async move { db.run(move |c| Ok(deadlines::upcoming(c, until, SCAN_LIMIT)?)).await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
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
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot scan deadlines"),
                }),
        );
    }

    fn fire(&mut self, d: Due, ctx: &mut Context<Self>) {
        let id = d.id.clone();
        ctx.spawn(
            fire(self.db.clone(), self.lockers.clone(), d)
                .into_actor(self)
                .map(move |_, act, _| {
                    act.scheduled.remove(&id);
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
                "dwell_expiry" => deadlines::fire_dwell_expiry(c, &d),
                "reminder" | "expiring_soon" => deadlines::fire_reminder(c, &d),
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
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: FireDueDeadlines, _: &mut Context<Self>) -> Self::Result {
        let (db, lockers, now) = (self.db.clone(), self.lockers.clone(), self.clock.now());
        Box::pin(async move {
            let due = match db.run(move |c| Ok(deadlines::upcoming(c, now, SCAN_LIMIT)?)).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read due deadlines");
                    return 0;
                }
            };
            let n = due.len();
            for d in due {
                fire(db.clone(), lockers.clone(), d).await;
            }
            n
        })
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
