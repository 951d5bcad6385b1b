//! The hub: registry of locker actors, supervising each and routing messages to them.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::locker::LockerActor;
use super::messages::{GetLocker, ReloadLocker};
use crate::config::Settings;
use crate::credentials::ServerKey;
use crate::db::Db;
use crate::ratelimit::Lockout;

/// Shared by every locker actor.
#[derive(Clone)]
pub struct LockerDeps {
    pub db: Db,
    pub key: ServerKey,
    pub settings: Arc<Settings>,
    /// Wrong pickup codes, per locker.
    pub pickup_guesses: Arc<Lockout<String>>,
}

pub struct Hub {
    deps: LockerDeps,
    lockers: HashMap<String, Addr<LockerActor>>,
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
            arbiters,
            next: 0,
        }
    }

    /// Starts the hub under a supervisor.
    pub fn start_supervised(deps: LockerDeps, threads: usize) -> Addr<Hub> {
        Supervisor::start(move |_| Hub::new(deps, threads))
    }
}

impl Actor for Hub {
    type Context = Context<Self>;
}

/// The registry survives a restart: the supervisor keeps this instance, and the locker actors
/// (each under its own supervisor) keep their addresses.
impl Supervised for Hub {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("hub restarting");
    }
}

impl Handler<GetLocker> for Hub {
    type Result = MessageResult<GetLocker>;

    fn handle(&mut self, msg: GetLocker, _: &mut Context<Self>) -> Self::Result {
        if let Some(addr) = self.lockers.get(&msg.locker_id) {
            return MessageResult(addr.clone());
        }
        let arbiter = &self.arbiters[self.next % self.arbiters.len()];
        self.next = self.next.wrapping_add(1);
        let deps = self.deps.clone();
        let id = msg.locker_id.clone();
        let addr = Supervisor::start_in_arbiter(arbiter, move |_| LockerActor::new(id, deps));
        self.lockers.insert(msg.locker_id, addr.clone());
        MessageResult(addr)
    }
}

impl Handler<ReloadLocker> for Hub {
    type Result = ();

    fn handle(&mut self, msg: ReloadLocker, _: &mut Context<Self>) {
        if let Some(addr) = self.lockers.get(&msg.locker_id) {
            addr.do_send(super::locker::Reload);
        }
    }
}
