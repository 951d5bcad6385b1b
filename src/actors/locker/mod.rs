//! One actor per locker bank. Every allocation, reservation, door event and pickup for the
//! locker passes through its mailbox, one at a time (`AtomicResponse`), so two drivers can
//! never be given the same compartment. Each change is committed to the database before the
//! device hears about it, and only then applied to the actor's memory.
//!
//! The actor is split by concern: `dispatch` (the device-call pipeline), `deposit`, `doors`
//! (door sessions and their timers), `codes`, `remote_open`, `commands` (carrier, admin and
//! timeout requests), `admin` (changes to the locker itself) and `dedup`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix::prelude::*;
use serde_json::Value;

use crate::actors::messages::*;
use crate::actors::LockerDeps;
use crate::db::lockers::LockerCtx;
use crate::db::{device_calls, interrupted, lockers, DbConn};
use crate::domain::allocation::Slot;
use crate::domain::kiosk::Kiosk;
use crate::domain::CompartmentStatus;
use crate::error::{AppError, Failure};
use crate::protocol::DeviceError;
use crate::protocol::{ErrorCode, Fingerprint};

mod admin;
mod codes;
mod commands;
mod dedup;
mod deposit;
mod dispatch;
mod doors;
mod journal;
mod local_list;
mod remote_open;

use self::dedup::Dedup;
use self::doors::DoorSession;
use self::remote_open::PendingCall;

/// Which device call a transaction answers: stored with the change it commits.
#[derive(Debug, Clone)]
struct CallRecord {
    msg_id: String,
    fingerprint: Fingerprint,
}

pub struct LockerActor {
    id: String,
    deps: LockerDeps,
    me: Option<LockerCtx>,
    slots: Vec<Slot>,
    session: Option<(u64, Recipient<ToDevice>)>,
    booted: bool,
    doors: HashMap<i32, DoorSession>,
    dedup: Dedup,
    /// Server calls awaiting the device's answer: the reply channel and the compartment opened.
    pending: HashMap<String, PendingCall>,
    /// Whether stale deposits from before a server restart were cleaned up.
    recovered: bool,
    /// The device call being dispatched, if its answer is to be stored with its change.
    recording: Option<CallRecord>,
    /// Door sessions rebuilt after a server restart, by compartment, that the device's next
    /// boot decides; `true` once reported as `session_outcome_unknown`.
    awaiting_boot: HashMap<i32, bool>,
    next_call: u64,
    /// The kiosk's current interaction: which carrier a courier code bound deposits to.
    kiosk: Kiosk,
    /// What a device session must present to attach; kept across restarts of this actor.
    auth: Option<admin::DeviceAuth>,
    /// A 1.1 session's offline side, from its boot (`None` for a 1.0 device).
    offline: Option<journal::OfflineSession>,
    /// Since when no device has been connected (application clock): since its connection
    /// ended, or since this actor started. `None` while one is. Bookings refuse a locker offline
    /// for longer than `booking_offline_grace_secs`.
    offline_since: Option<chrono::NaiveDateTime>,
    /// Compartments whose door was last reported blocked (`DoorAlarm`), until it opens: a
    /// second blocked report in a row takes the compartment out of service.
    blocked: HashSet<i32>,
    /// Accepted boots so far: tells a 1.1 session's state from an earlier one's.
    boots: u64,
}

type Reply = Result<Value, DeviceError>;

/// Loads the locker's identity and compartments. With `recover`, also finds the door sessions
/// a server stop interrupted (all but the parcels in `keep`), to rebuild them.
fn load(c: &mut DbConn, id: &str, recover: Option<&HashSet<String>>) -> Result<Loaded, AppError> {
    let l = lockers::get(c, id)?;
    let auth = admin::DeviceAuth::of(&l);
    let me = LockerCtx {
        locker_id: l.id.clone(),
        locker_name: l.name,
        site_id: l.site_id,
        code_salt: l.code_salt,
        // Until the device boots as 1.1 (`dispatch::boot`).
        offline_list: false,
        quota_carriers: crate::db::quotas::carriers_with_quotas(c, id)?,
        allowed_carriers: crate::db::locker_carriers::allowed(c, id)?,
    };
    let found = match recover {
        Some(keep) => interrupted::load(c, &me, keep)?,
        None => Vec::new(),
    };
    if !found.is_empty() {
        tracing::warn!(locker = %id, sessions = found.len(), "door sessions interrupted by a restart; the device's boot decides them");
    }
    Ok((me, lockers::slots(c, id)?, auth, found))
}

/// What loading a locker gives its actor: identity, compartments, who may attach, and the door
/// sessions a restart interrupted.
type Loaded = (LockerCtx, Vec<Slot>, admin::DeviceAuth, Vec<interrupted::Found>);

fn refuse(code: ErrorCode, msg: impl Into<String>) -> DeviceError {
    DeviceError::refuse(code, msg)
}

fn done(v: Value) -> ResponseActFuture<LockerActor, Reply> {
    Box::pin(fut::ready(Ok(v)))
}

fn fail(e: DeviceError) -> ResponseActFuture<LockerActor, Reply> {
    Box::pin(fut::ready(Err(e)))
}

impl LockerActor {
    pub fn new(id: String, deps: LockerDeps) -> Self {
        let started = deps.clock.now();
        Self {
            id,
            deps,
            me: None,
            slots: Vec::new(),
            session: None,
            booted: false,
            doors: HashMap::new(),
            dedup: Dedup::default(),
            pending: HashMap::new(),
            recovered: false,
            recording: None,
            awaiting_boot: HashMap::new(),
            next_call: 0,
            kiosk: Kiosk::default(),
            auth: None,
            offline: None,
            offline_since: Some(started),
            blocked: HashSet::new(),
            boots: 0,
        }
    }

    fn reload(&mut self, ctx: &mut Context<Self>) {
        let db = self.deps.db.clone();
        let id = self.id.clone();
        // Once per actor life: deposits whose door sessions died with a previous server.
        let recover = (!self.recovered).then(|| {
            self.doors
                .values()
                .filter_map(|d| d.parcel_id().map(str::to_string))
                .collect::<HashSet<_>>()
        });
        ctx.wait(
            async move { db.run(move |c| load(c, &id, recover.as_ref())).await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok((mut me, slots, auth, found)) => {
                        act.recovered = true;
                        // A 1.1 session that outlived an internal restart keeps its list.
                        me.offline_list = act.offline.is_some();
                        act.me = Some(me);
                        act.auth = Some(auth);
                        act.adopt_slots(slots);
                        for f in found {
                            act.rebuild(f, ctx);
                        }
                        // The sessions just rebuilt hold their compartments too.
                        act.reserve_held_slots();
                    }
                    Err(e) => {
                        // Stop and let the supervisor start us again from the database, after a pause.
                        tracing::error!(locker = %act.id, error = %e, "cannot load locker; restarting");
                        ctx.run_later(Duration::from_secs(1), |_, ctx| ctx.stop());
                    }
                }),
        );
    }

    /// Updates a compartment's status in memory. An out-of-service compartment stays out of
    /// service (a person returns it to service, which reloads from the database).
    fn set_slot(&mut self, number: i32, status: CompartmentStatus) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.number == number) {
            if s.status != CompartmentStatus::OutOfService {
                s.status = status;
            }
        }
    }

    /// Records whether the device is connected (shown to the manager). The actor waits for
    /// the write, so a connect and the disconnect after it are stored in that order.
    fn record_connection(&self, connected: bool, ctx: &mut Context<Self>) {
        let (db, id) = (self.deps.db.clone(), self.id.clone());
        ctx.wait(
            async move {
                if let Err(e) = db
                    .run(move |c| Ok(lockers::set_connection(c, &id, connected, None)?))
                    .await
                {
                    tracing::warn!(error = %e, connected, "could not record the connection state");
                }
            }
            .into_actor(self),
        );
    }

    fn busy(&self) -> HashSet<i32> {
        self.doors.keys().copied().collect()
    }

    /// Runs `work` in one transaction off the actor's thread; on commit, `then` updates memory
    /// and builds the answer. A server failure restarts the actor from the database.
    fn db_op<T, R, E, W, M>(&self, work: W, then: M) -> ResponseActFuture<Self, Result<R, E>>
    where
        T: Send + 'static,
        R: 'static,
        E: Failure + From<AppError> + From<diesel::result::Error> + Send + 'static,
        W: FnOnce(&mut DbConn, &LockerCtx) -> Result<T, E> + Send + 'static,
        M: FnOnce(T, &mut Self, &mut Context<Self>) -> Result<R, E> + 'static,
    {
        let Some(me) = self.me.clone() else {
            return Box::pin(fut::ready(Err(E::from(AppError::Unavailable(
                "locker not loaded yet".into(),
            )))));
        };
        let db = self.deps.db.clone();
        Box::pin(
            async move { db.transaction_as(move |c| work(c, &me)).await }
                .into_actor(self)
                .map(move |res, act, ctx| match res {
                    Ok(t) => then(t, act, ctx),
                    Err(e) => {
                        if e.is_server_failure() {
                            // Memory may disagree with the database: stop, and the supervisor
                            // starts this actor again from the database. The caller may retry.
                            ctx.stop();
                        }
                        Err(e)
                    }
                }),
        )
    }

    /// How long a stored device-call answer is kept (`device_call_retention_secs`).
    fn call_retention(&self) -> chrono::Duration {
        let secs = i64::try_from(self.deps.settings.device_call_retention_secs).unwrap_or(i64::MAX / 1000);
        chrono::Duration::try_seconds(secs).unwrap_or(chrono::Duration::days(365))
    }

    /// [`Self::db_op`] for a device call that changes state: runs `work` (a workflow, whose
    /// refusals become the device's error frame), and `answer` computes the result payload
    /// from what it did (`None`: no result, `then` refuses). That payload is stored for the call
    /// being dispatched in the same transaction, so the change and the answer a retry gets are
    /// committed together; `then` runs on the actor after the commit. A retry of a call
    /// answered before gets that answer, and what it ran again rolls back.
    fn db_change<T, E, W, A, M>(&mut self, work: W, answer: A, then: M) -> ResponseActFuture<Self, Reply>
    where
        T: Send + 'static,
        DeviceError: From<E>,
        W: FnOnce(&mut DbConn, &LockerCtx) -> Result<T, E> + Send + 'static,
        A: FnOnce(&T) -> Option<Value> + Send + 'static,
        M: FnOnce(T, &mut Self, &mut Context<Self>) -> Result<(), DeviceError> + 'static,
    {
        let record = self.recording.take();
        let retention = self.call_retention();
        let stored = record.clone();
        let work = self.db_op(
            move |c, me| {
                let t = work(c, me)?;
                let payload = answer(&t);
                if let (Some(r), Some(p)) = (&record, &payload) {
                    r.remember(c, &me.locker_id, &p.to_string(), retention)?;
                }
                Ok((t, payload))
            },
            |(t, payload), act, ctx| {
                then(t, act, ctx)?;
                payload.ok_or_else(|| DeviceError::Failed(AppError::internal("a device call produced no answer")))
            },
        );
        self.answered_before_wins(work, stored)
    }

    /// For a recorded call (`record`), an answer stored before under its id wins over an
    /// outcome that [`may_have_answered_before`]; an unrecorded call's outcome stands.
    fn answered_before_wins<T: 'static>(
        &self,
        work: ResponseActFuture<Self, Result<T, DeviceError>>,
        record: Option<CallRecord>,
    ) -> ResponseActFuture<Self, Result<T, DeviceError>> {
        match record {
            Some(r) => self.stored_answer_wins(work, r, may_have_answered_before),
            None => work,
        }
    }
}

/// Whether a recorded call's outcome may hide an answer stored before under its id. Calls do
/// not look their id up before they run (nearly every id is new): a retry of a call answered
/// before either finds that answer when it stores its own ([`DeviceError::AnsweredBefore`]), or
/// is refused or fails now, because what it did is done. Either way it rolled back, and the
/// stored answer is what it gets. A server failure is not looked up: the device retries.
pub(super) fn may_have_answered_before<T>(outcome: &Result<T, DeviceError>) -> bool {
    matches!(outcome, Err(e) if !e.is_server_failure() && !matches!(e, DeviceError::Replayed(_)))
}

impl CallRecord {
    /// Looks for an answer stored under this call's id, for a path that writes without storing
    /// an answer (a wrong code counted toward a lockout): the same call answered before is
    /// [`DeviceError::Replayed`] and writes nothing.
    fn check(&self, c: &mut DbConn, locker_id: &str) -> Result<(), DeviceError> {
        match device_calls::find(c, locker_id, &self.msg_id)? {
            Some(stored) if self.fingerprint.is_hex(&stored.fingerprint) => Err(stored_answer(&stored)),
            _ => Ok(()),
        }
    }

    /// Stores the call's answer in the transaction that commits its change; the same call's
    /// answer stored before is [`DeviceError::AnsweredBefore`], and the transaction rolls back.
    fn remember(
        &self,
        c: &mut DbConn,
        locker_id: &str,
        answer: &str,
        retention: chrono::Duration,
    ) -> Result<(), DeviceError> {
        let fingerprint = self.fingerprint.to_hex();
        match device_calls::remember(c, locker_id, &self.msg_id, &fingerprint, answer, retention)? {
            device_calls::Remembered::Stored => Ok(()),
            device_calls::Remembered::AnsweredBefore => Err(DeviceError::AnsweredBefore),
        }
    }
}

/// A stored answer, to send again.
fn stored_answer(stored: &device_calls::StoredCall) -> DeviceError {
    match serde_json::from_str(&stored.answer) {
        Ok(payload) => DeviceError::Replayed(payload),
        Err(e) => DeviceError::Failed(AppError::internal(format!("stored answer unreadable: {e}"))),
    }
}

impl Actor for LockerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.reload(ctx);
        // Door sessions survive a restart (the supervisor keeps this struct); their timers do not.
        let sessions: Vec<(i32, String)> = self
            .doors
            .iter()
            .filter_map(|(n, d)| d.parcel_id().map(|p| (*n, p.to_string())))
            .collect();
        for (n, pid) in sessions {
            let t = self.door_timer(n, pid, ctx);
            if let Some(timer) = self.doors.get_mut(&n).and_then(DoorSession::timer_mut) {
                *timer = t;
            }
        }
    }
}

impl Supervised for LockerActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!(locker = %self.id, "locker actor restarting from the database");
        self.me = None;
        self.slots.clear();
        // A restart drops the context's futures, a list sync among them: the next change
        // syncs from what the device was last known to hold.
        if let Some(s) = self.offline.as_mut() {
            s.list.syncing = false;
            s.list.again = false;
            s.list.sent.clear();
        }
    }
}

impl Handler<FireDueTimers> for LockerActor {
    type Result = AtomicResponse<Self, usize>;

    /// Fires the door sessions and server calls whose time is up by the application's clock,
    /// and asks the session to check the device's silence. Atomic: nothing else reaches this
    /// actor until the door timeouts' transactions are done.
    fn handle(&mut self, _: FireDueTimers, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.deps.clock.now();
        let doors: Vec<(i32, String, SpawnHandle)> = self
            .doors
            .iter_mut()
            .filter_map(|(n, d)| {
                let pid = d.parcel_id()?.to_string();
                let timer = d.timer_mut()?;
                (timer.due_at <= now).then_some((*n, pid, timer.handle))
            })
            .collect();
        let calls: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, (_, _, _, due_at))| *due_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let fired = doors.len() + calls.len();
        // The answer waits for the door timeouts' transactions, one after the other, so a test
        // that moves the clock reads their outcome next.
        let mut work: ResponseActFuture<Self, ()> = Box::pin(fut::ready(()));
        for (number, parcel_id, handle) in doors {
            ctx.cancel_future(handle);
            if let Some(timed_out) = self.door_timed_out(number, parcel_id, ctx) {
                work = Box::pin(work.then(move |_, _, _| timed_out));
            }
        }
        // Dropping the reply channel ends the wait in `ask_device_to_open` as a timeout does.
        for id in calls {
            self.pending.remove(&id);
        }
        let session = self.session.as_ref().map(|(_, s)| s.clone());
        AtomicResponse::new(Box::pin(work.then(move |_, act, _| {
            async move {
                if let Some(s) = session {
                    let _ = s.send(ToDevice::CheckSilence).await;
                }
                fired
            }
            .into_actor(act)
        })))
    }
}

impl Handler<MemorySlots> for LockerActor {
    type Result = MessageResult<MemorySlots>;

    fn handle(&mut self, _: MemorySlots, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.slots.iter().map(|s| (s.number, s.status)).collect())
    }
}

impl Handler<Attach> for LockerActor {
    type Result = ();

    fn handle(&mut self, msg: Attach, ctx: &mut Context<Self>) {
        if !self.admits(&msg.credential_hash) {
            // Authenticated just before a rotation or deactivation: never attached.
            tracing::info!(locker = %self.id, session = msg.session_id, "session with a revoked credential closed");
            msg.session.do_send(ToDevice::Revoked);
            return;
        }
        if let Some((old, session)) = self.session.take() {
            if old != msg.session_id {
                session.do_send(ToDevice::Replaced);
            }
        }
        self.session = Some((msg.session_id, msg.session));
        self.booted = false;
        self.offline_since = None;
        self.record_connection(true, ctx);
    }
}

impl Handler<Detach> for LockerActor {
    type Result = ();

    fn handle(&mut self, msg: Detach, ctx: &mut Context<Self>) {
        if self.session.as_ref().is_some_and(|(id, _)| *id == msg.session_id) {
            self.session = None;
            self.booted = false;
            self.offline_since = Some(self.deps.clock.now());
            self.record_connection(false, ctx);
        }
    }
}
