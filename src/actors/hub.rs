//! The hub: registry of locker actors, supervising each and routing messages to them.

use std::collections::HashMap;

use actix::prelude::*;

use super::carrier::CarrierActor;
use super::locker::LockerActor;
use super::messages::{
    CarrierChanged, DeadlinesQueued, FireDueDeadlines, FireDueTimers, GetLocker, Kick, KickCarriers, LoadedLockers,
    OutboxQueued, ReloadCarrier, ScheduledDeadlines, Shutdown,
};
use super::notifier::NotificationActor;
use super::operator::OperatorActor;
use super::retry::retry_delay;
use super::timeouts::TimeoutActor;
use super::LockerDeps;

pub struct Hub {
    deps: LockerDeps,
    lockers: HashMap<String, Addr<LockerActor>>,
    carriers: HashMap<String, Addr<CarrierActor>>,
    notifier: Option<Addr<NotificationActor>>,
    /// Sends operator alerts as webhooks, when `operator_webhook_url` is set.
    operator: Option<Addr<OperatorActor>>,
    timeouts: Option<Addr<TimeoutActor>>,
    /// Locker actors are spread over these threads; each actor still runs one message at a time.
    arbiters: Vec<ArbiterHandle>,
    next: usize,
}

impl Hub {
    pub fn new(deps: LockerDeps, threads: usize) -> Self {
        let arbiters = (0..threads.max(1)).map(|_| Arbiter::new().handle()).collect();
        Self {
            deps,
            lockers: HashMap::new(),
            carriers: HashMap::new(),
            notifier: None,
            operator: None,
            timeouts: None,
            arbiters,
            next: 0,
        }
    }

    /// Starts the hub under a supervisor.
    pub fn start_supervised(deps: LockerDeps, threads: usize) -> Addr<Hub> {
        Supervisor::start(move |_| Hub::new(deps, threads))
    }
}

impl Hub {
    fn next_arbiter(&mut self) -> ArbiterHandle {
        // After `Shutdown` the threads are gone; a message that still arrives while the server
        // stops gets an actor on the hub's own thread rather than a division by zero.
        if self.arbiters.is_empty() {
            return Arbiter::current();
        }
        let a = self.arbiters[self.next % self.arbiters.len()].clone();
        self.next = self.next.wrapping_add(1);
        a
    }

    fn ensure_locker(&mut self, locker_id: String) -> Addr<LockerActor> {
        if let Some(addr) = self.lockers.get(&locker_id) {
            return addr.clone();
        }
        let arbiter = self.next_arbiter();
        let deps = self.deps.clone();
        let id = locker_id.clone();
        let addr = Supervisor::start_in_arbiter(&arbiter, move |_| LockerActor::new(id, deps));
        self.lockers.insert(locker_id, addr.clone());
        addr
    }

    fn ensure_carrier(&mut self, id: String) -> Addr<CarrierActor> {
        if let Some(a) = self.carriers.get(&id) {
            return a.clone();
        }
        let arbiter = self.next_arbiter();
        let (db, key, settings, clock, cid) = (
            self.deps.db.clone(),
            self.deps.key.clone(),
            self.deps.settings.clone(),
            self.deps.clock.clone(),
            id.clone(),
        );
        let addr = Supervisor::start_in_arbiter(&arbiter, move |_| CarrierActor::new(cid, db, key, settings, clock));
        self.carriers.insert(id, addr.clone());
        addr
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    /// Starts a delivery actor for every carrier, so webhooks still pending from before a
    /// restart go out.
    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.timeouts.is_none() {
            let arbiter = self.next_arbiter();
            let (db, settings) = (self.deps.db.clone(), self.deps.settings.clone());
            let lockers = ctx.address().recipient::<GetLocker>();
            let clock = self.deps.clock.clone();
            self.timeouts = Some(Supervisor::start_in_arbiter(&arbiter, move |_| {
                TimeoutActor::new(db, settings, clock, lockers)
            }));
        }
        if self.deps.settings.notifications_paused {
            tracing::warn!("notifications are paused (notifications_paused): they are queued, not sent");
        } else if self.notifier.is_none() {
            let arbiter = self.next_arbiter();
            let (db, settings, clock) = (
                self.deps.db.clone(),
                self.deps.settings.clone(),
                self.deps.clock.clone(),
            );
            self.notifier = Some(Supervisor::start_in_arbiter(&arbiter, move |_| {
                NotificationActor::new(db, settings, clock)
            }));
        }
        if self.deps.settings.operator_webhook_url.is_some() && self.operator.is_none() {
            let arbiter = self.next_arbiter();
            let (db, settings, clock) = (
                self.deps.db.clone(),
                self.deps.settings.clone(),
                self.deps.clock.clone(),
            );
            self.operator = Some(Supervisor::start_in_arbiter(&arbiter, move |_| {
                OperatorActor::new(db, settings, clock)
            }));
        }
        self.start_carriers(0, ctx);
        self.check_interrupted_lockers(0, ctx);
    }
}

impl Hub {
    /// Starts a delivery actor for every carrier. A database that cannot be read yet (still
    /// starting, failing over) is tried again with backoff rather than leaving webhooks
    /// undelivered until the next restart.
    fn start_carriers(&mut self, attempt: u32, ctx: &mut Context<Self>) {
        let db = self.deps.db.clone();
        ctx.spawn(
            async move {
                db.read(|c| {
                    use diesel::prelude::*;
                    Ok(crate::db::schema::carriers::table
                        .select(crate::db::schema::carriers::id)
                        .load::<String>(c)?)
                })
                .await
            }
            .into_actor(self)
            .map(move |res, act, ctx| match res {
                Ok(ids) => {
                    for id in ids {
                        act.ensure_carrier(id);
                    }
                }
                Err(e) => {
                    let wait = retry_delay(attempt);
                    tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot list carriers at start");
                    ctx.run_later(wait, move |act, ctx| act.start_carriers(attempt + 1, ctx));
                }
            }),
        );
    }

    /// Lockers whose door sessions a stop may have interrupted: their actors rebuild those
    /// sessions now, so one that never reconnects is reported rather than forgotten.
    fn check_interrupted_lockers(&mut self, attempt: u32, ctx: &mut Context<Self>) {
        let db = self.deps.db.clone();
        ctx.spawn(
            async move { db.read(|c| Ok(crate::db::interrupted::lockers_to_check(c)?)).await }
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(ids) => {
                        for id in ids {
                            act.ensure_locker(id);
                        }
                    }
                    Err(e) => {
                        let wait = retry_delay(attempt);
                        tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot list lockers at start");
                        ctx.run_later(wait, move |act, ctx| act.check_interrupted_lockers(attempt + 1, ctx));
                    }
                }),
        );
    }
}

/// The registry survives a restart: the supervisor keeps this instance, and the locker actors
/// (each under its own supervisor) keep their addresses.
impl Supervised for Hub {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("hub restarting");
    }
}

/// The hub answers with the locker actor's address. Declared here rather than in
/// `messages.rs`, which imports no actor: the hub, which starts the locker actors, already
/// depends on them.
impl Message for GetLocker {
    type Result = Addr<LockerActor>;
}

impl Message for LoadedLockers {
    type Result = Vec<(String, Addr<LockerActor>)>;
}

impl Handler<GetLocker> for Hub {
    type Result = MessageResult<GetLocker>;

    fn handle(&mut self, msg: GetLocker, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.ensure_locker(msg.locker_id))
    }
}

impl Handler<LoadedLockers> for Hub {
    type Result = MessageResult<LoadedLockers>;

    fn handle(&mut self, _: LoadedLockers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.lockers.iter().map(|(id, a)| (id.clone(), a.clone())).collect())
    }
}

impl Handler<CarrierChanged> for Hub {
    type Result = ();

    fn handle(&mut self, msg: CarrierChanged, _: &mut Context<Self>) {
        let fresh = !self.carriers.contains_key(&msg.carrier_id);
        let addr = self.ensure_carrier(msg.carrier_id);
        if !fresh {
            addr.do_send(ReloadCarrier);
        }
        // Its courier code comes into (or leaves) every 1.1 locker's list. Only loaded lockers
        // can have a device connected; the others sync at their device's boot.
        for locker in self.lockers.values() {
            locker.do_send(crate::actors::messages::SyncLocalList);
        }
    }
}

impl Handler<KickCarriers> for Hub {
    type Result = ();

    fn handle(&mut self, msg: KickCarriers, _: &mut Context<Self>) {
        match msg.carrier_id {
            Some(id) => {
                if let Some(a) = self.carriers.get(&id) {
                    a.do_send(Kick);
                }
            }
            None => self.carriers.values().for_each(|a| a.do_send(Kick)),
        }
    }
}

impl Handler<OutboxQueued> for Hub {
    type Result = ();

    fn handle(&mut self, msg: OutboxQueued, _: &mut Context<Self>) {
        for id in msg.0.carriers {
            self.ensure_carrier(id).do_send(Kick);
        }
        if msg.0.notifications {
            if let Some(n) = &self.notifier {
                n.do_send(Kick);
            }
        }
        if msg.0.alerts {
            if let Some(o) = &self.operator {
                o.do_send(Kick);
            }
        }
        if !msg.0.deadlines.is_empty() {
            if let Some(t) = &self.timeouts {
                t.do_send(DeadlinesQueued {
                    due_at: msg.0.deadlines,
                });
            }
        }
    }
}

impl Handler<FireDueTimers> for Hub {
    type Result = ResponseFuture<usize>;

    /// Asks every loaded locker actor, and answers once all have fired theirs.
    fn handle(&mut self, _: FireDueTimers, _: &mut Context<Self>) -> Self::Result {
        let lockers: Vec<_> = self.lockers.values().cloned().collect();
        Box::pin(async move {
            let mut fired = 0;
            for l in lockers {
                fired += l.send(FireDueTimers).await.unwrap_or(0);
            }
            fired
        })
    }
}

impl Handler<ScheduledDeadlines> for Hub {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: ScheduledDeadlines, _: &mut Context<Self>) -> Self::Result {
        let timeouts = self.timeouts.clone();
        Box::pin(async move {
            match timeouts {
                Some(t) => t.send(ScheduledDeadlines).await.unwrap_or(0),
                None => 0,
            }
        })
    }
}

impl Handler<FireDueDeadlines> for Hub {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, _: FireDueDeadlines, _: &mut Context<Self>) -> Self::Result {
        let timeouts = self.timeouts.clone();
        Box::pin(async move {
            match timeouts {
                Some(t) => t.send(FireDueDeadlines).await.unwrap_or(0),
                None => 0,
            }
        })
    }
}

impl Handler<Shutdown> for Hub {
    type Result = ();

    /// Stops every locker and carrier actor by stopping their threads. Used when the server
    /// stops (and by tests that restart a server on the same database).
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        self.lockers.clear();
        self.carriers.clear();
        self.notifier = None;
        self.operator = None;
        self.timeouts = None;
        for a in self.arbiters.drain(..) {
            a.stop();
        }
    }
}
