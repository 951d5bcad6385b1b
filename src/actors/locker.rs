//! One actor per locker bank. Every allocation, reservation, door event and pickup for the
//! locker passes through its mailbox, one at a time (`AtomicResponse`), so two drivers can
//! never be given the same compartment. Each change is committed to the database before the
//! device hears about it, and only then applied to the actor's memory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::hub::LockerDeps;
use super::messages::*;
use crate::config::{SecondFactor, Settings};
use crate::credentials::ServerKey;
use crate::db::deposits::{self, LockerCtx, Prior};
use crate::db::lockouts::{self, CodeKind};
use crate::db::pickups::TakenBy;
use crate::db::remote_opens::{self, RemoteOpenRecord};
use crate::db::{carriers, device_calls, interrupted, lockers, pickups, recipients, DbConn};
use crate::domain::allocation::Slot;
use crate::domain::kiosk::{Kiosk, KioskRefusal};
use crate::domain::lockout::{Policy, Started};
use crate::domain::recovery::{self, Decision, Interrupted, Sensed};
use crate::domain::remote_open::Outcome;
use crate::domain::second_factor;
use crate::domain::CompartmentStatus;
use crate::error::{AppError, DeviceError};
use crate::protocol::messages::*;
use crate::protocol::{ErrorCode, Frame, FrameError, PROTOCOL_VERSION};

mod admin;

/// At most this many residents answer one `SearchDirectory`.
const DIRECTORY_RESULTS: i64 = 5;

/// How many answered message ids each locker remembers for deduplication.
const DEDUP_CAPACITY: usize = 512;

/// A door that is expected to open and close: what closing it will mean.
#[derive(Debug)]
enum DoorSession {
    Deposit {
        parcel_id: String,
        carrier_id: String,
        needs_accessible: bool,
        prior: Prior,
        opened: bool,
        timer: SpawnHandle,
    },
    Pickup {
        parcel_id: String,
        opened: bool,
        timer: SpawnHandle,
    },
    /// A carrier's driver taking an expired parcel back.
    Collection {
        parcel_id: String,
        opened: bool,
        timer: SpawnHandle,
    },
    Remote {
        opened: bool,
        open: RemoteDoor,
    },
}

/// A server call awaiting the device's answer: where the answer goes, the compartment opened,
/// and the remote open it belongs to.
type PendingCall = (oneshot::Sender<Result<Value, FrameError>>, i32, RemoteDoor);

/// What a remote open was for: its audit record, and the parcel that was inside.
#[derive(Debug, Clone)]
struct RemoteDoor {
    open_id: String,
    parcel_id: Option<String>,
}

impl DoorSession {
    /// The parcel this door session moves, if any (remote opens move none).
    fn parcel_id(&self) -> Option<&str> {
        match self {
            Self::Deposit { parcel_id, .. } | Self::Pickup { parcel_id, .. } | Self::Collection { parcel_id, .. } => {
                Some(parcel_id)
            }
            Self::Remote { .. } => None,
        }
    }

    fn timer_mut(&mut self) -> Option<&mut SpawnHandle> {
        match self {
            Self::Deposit { timer, .. } | Self::Pickup { timer, .. } | Self::Collection { timer, .. } => Some(timer),
            Self::Remote { .. } => None,
        }
    }

    fn opened_mut(&mut self) -> &mut bool {
        match self {
            Self::Deposit { opened, .. }
            | Self::Pickup { opened, .. }
            | Self::Collection { opened, .. }
            | Self::Remote { opened, .. } => opened,
        }
    }
}

/// Answers already given, by message id: a retried call gets the same answer, not a second action.
#[derive(Default)]
struct Dedup {
    order: VecDeque<String>,
    answers: HashMap<String, (String, String)>,
}

impl Dedup {
    fn get(&self, id: &str, fingerprint: &str) -> Option<String> {
        self.answers
            .get(id)
            .filter(|(f, _)| f == fingerprint)
            .map(|(_, a)| a.clone())
    }

    fn put(&mut self, id: String, fingerprint: String, answer: String) {
        if self.answers.insert(id.clone(), (fingerprint, answer)).is_none() {
            self.order.push_back(id);
            if self.order.len() > DEDUP_CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.answers.remove(&old);
                }
            }
        }
    }
}

/// Which device call a transaction answers: stored with the change it commits.
#[derive(Debug, Clone)]
struct CallRecord {
    msg_id: String,
    fingerprint: String,
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
}

type Reply = Result<Value, DeviceError>;

/// Which errors mean the server failed (restart from the database) rather than refused.
pub trait Failure {
    fn is_server_failure(&self) -> bool;
}

impl Failure for DeviceError {
    fn is_server_failure(&self) -> bool {
        matches!(self, DeviceError::Failed(e) if e.is_server_failure())
    }
}

impl Failure for AppError {
    fn is_server_failure(&self) -> bool {
        matches!(self, AppError::Internal(_) | AppError::Unavailable(_))
    }
}

/// What checking a code found.
enum Checked<T> {
    Found(T),
    /// A lockout is running: the code was not checked.
    Locked(chrono::Duration),
    /// No match; with the lockout this miss started.
    Wrong(Option<(CodeKind, Started)>),
}

fn lockout_policy(s: &Settings) -> Policy {
    let secs = |n: u64| chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1000).min(10 * 365 * 86_400));
    Policy {
        attempts: s.pickup_attempts,
        window: secs(s.pickup_attempt_window_secs),
        base: secs(s.pickup_lockout_secs),
        max: secs(s.pickup_lockout_max_secs),
    }
}

fn locked_out(left: chrono::Duration) -> DeviceError {
    let secs = left.num_seconds().max(1) as u64;
    refuse(
        ErrorCode::LockedOut,
        format!("too many wrong codes; try again in {secs} s"),
    )
    .with_retry(Duration::from_secs(secs))
}

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

/// The answer to a `DoorEvent`, whatever its transaction returned.
fn outcome<T>(o: &'static str) -> impl FnOnce(&T) -> Option<Value> {
    move |_| Some(json!(DoorEventResponse { outcome: o.to_string() }))
}

/// The answer to a code that opened a compartment.
fn pickup_open(parcel_id: &str, compartment: i32) -> Value {
    json!(PickupOpen {
        compartment,
        parcel_id: parcel_id.to_string()
    })
}

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
        }
    }

    /// Rebuilds a door session a server restart interrupted. It waits for the device's boot
    /// (see `boot`); if none comes within the door timeout, the timer reports it.
    fn rebuild(&mut self, f: interrupted::Found, ctx: &mut Context<Self>) {
        let (number, pid) = (f.session.number, f.session.parcel_id.clone());
        if self.doors.contains_key(&number) {
            return;
        }
        let timer = self.door_timer(number, pid.clone(), ctx);
        let session = match f.session.kind {
            Interrupted::Deposit => DoorSession::Deposit {
                parcel_id: pid,
                carrier_id: f.carrier_id,
                needs_accessible: f.needs_accessible,
                prior: f.session.prior.unwrap_or(Prior::WalkUp),
                opened: false,
                timer,
            },
            Interrupted::Pickup => DoorSession::Pickup {
                parcel_id: pid,
                opened: false,
                timer,
            },
            Interrupted::Collection => DoorSession::Collection {
                parcel_id: pid,
                opened: false,
                timer,
            },
        };
        self.doors.insert(number, session);
        self.awaiting_boot.insert(number, f.reported);
    }

    /// The rebuilt sessions the next boot decides, as settling needs them.
    fn awaiting_sessions(&self) -> Vec<interrupted::Session> {
        self.awaiting_boot
            .keys()
            .filter_map(|n| self.doors.get(n).map(|d| (*n, d)))
            .filter_map(|(number, d)| {
                let (kind, prior) = match d {
                    DoorSession::Deposit { prior, .. } => (Interrupted::Deposit, Some(prior.clone())),
                    DoorSession::Pickup { .. } => (Interrupted::Pickup, None),
                    DoorSession::Collection { .. } => (Interrupted::Collection, None),
                    DoorSession::Remote { .. } => return None,
                };
                Some(interrupted::Session {
                    parcel_id: d.parcel_id()?.to_string(),
                    number,
                    kind,
                    prior,
                })
            })
            .collect()
    }

    /// Applies boot-time decisions to memory, after their transaction committed.
    fn settled(&mut self, decided: Vec<(i32, Decision)>, ctx: &mut Context<Self>) {
        for (number, decision) in decided {
            match decision {
                Decision::Unknown => continue,
                Decision::Hold => {
                    // The door is open: an ordinary session again, with a fresh timeout.
                    self.awaiting_boot.remove(&number);
                    let Some(pid) = self
                        .doors
                        .get(&number)
                        .and_then(DoorSession::parcel_id)
                        .map(str::to_string)
                    else {
                        continue;
                    };
                    let timer = self.door_timer(number, pid, ctx);
                    if let Some(door) = self.doors.get_mut(&number) {
                        *door.opened_mut() = true;
                        if let Some(old) = door.timer_mut().map(|t| std::mem::replace(t, timer)) {
                            ctx.cancel_future(old);
                        }
                    }
                }
                _ => {
                    self.awaiting_boot.remove(&number);
                    self.end_door(number, ctx);
                }
            }
            tracing::info!(locker = %self.id, compartment = number, ?decision, "interrupted door session decided at boot");
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
                    Ok((me, slots, auth, found)) => {
                        act.recovered = true;
                        act.me = Some(me);
                        act.auth = Some(auth);
                        act.adopt_slots(slots);
                        for f in found {
                            act.rebuild(f, ctx);
                        }
                        let held: Vec<i32> = act
                            .doors
                            .iter()
                            .filter(|(_, d)| d.parcel_id().is_some())
                            .map(|(n, _)| *n)
                            .collect();
                        for n in held {
                            act.set_slot(n, CompartmentStatus::Reserved);
                        }
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

    /// [`Self::db_op`] for a device call that changes state: `answer` computes the result
    /// payload from what the transaction did (`None`: no result, `then` refuses), and that
    /// payload is stored for the call being dispatched in the same transaction, so the change
    /// and the answer a retry gets are committed together.
    /// How long a stored device-call answer is kept (`device_call_retention_secs`).
    fn call_retention(&self) -> chrono::Duration {
        let secs = i64::try_from(self.deps.settings.device_call_retention_secs).unwrap_or(i64::MAX / 1000);
        chrono::Duration::try_seconds(secs).unwrap_or(chrono::Duration::days(365))
    }

    fn db_change<T, W, A, M>(&mut self, work: W, answer: A, then: M) -> ResponseActFuture<Self, Reply>
    where
        T: Send + 'static,
        W: FnOnce(&mut DbConn, &LockerCtx) -> Result<T, DeviceError> + Send + 'static,
        A: FnOnce(&T) -> Option<Value> + Send + 'static,
        M: FnOnce(T, &mut Self, &mut Context<Self>) -> Result<(), DeviceError> + 'static,
    {
        let record = self.recording.take();
        let retention = self.call_retention();
        self.db_op(
            move |c, me| {
                let t = work(c, me)?;
                let payload = answer(&t);
                if let (Some(r), Some(p)) = (&record, &payload) {
                    device_calls::remember(c, &me.locker_id, &r.msg_id, &r.fingerprint, &p.to_string(), retention)?;
                }
                Ok((t, payload))
            },
            |(t, payload), act, ctx| {
                then(t, act, ctx)?;
                payload.ok_or_else(|| DeviceError::Failed(AppError::internal("a device call produced no answer")))
            },
        )
    }

    fn dispatch(&mut self, req: DeviceRequest, ctx: &mut Context<Self>) -> ResponseActFuture<Self, Reply> {
        if !self.booted && !matches!(req, DeviceRequest::BootNotification(_)) {
            return fail(refuse(ErrorCode::ProtocolError, "send BootNotification first"));
        }
        if !matches!(req, DeviceRequest::BootNotification(_) | DeviceRequest::Heartbeat) {
            // Anything the kiosk does keeps its interaction alive; silence past the timeout
            // (on the app clock) ends it before this call is judged.
            let timeout = chrono::Duration::seconds(self.deps.settings.kiosk_interaction_timeout_secs as i64);
            self.kiosk.activity(self.deps.clock.now(), timeout);
        }
        match req {
            DeviceRequest::BootNotification(b) => self.boot(b),
            DeviceRequest::Heartbeat => done(json!({"server_time": crate::db::ts_string(crate::db::now())})),
            DeviceRequest::ListCarriers => self.db_op(
                |c, _| Ok(carriers::active(c)?),
                |list, _, _| {
                    let list: Vec<CarrierInfo> = list.into_iter().map(CarrierInfo::from).collect();
                    Ok(json!({"carriers": list}))
                },
            ),
            DeviceRequest::IdentifyCourier { courier_code } => self.identify_courier(courier_code),
            DeviceRequest::EndInteraction => done(json!({"ended": self.kiosk.end()})),
            DeviceRequest::SearchDirectory { query } => self.search_directory(query),
            DeviceRequest::StartDeposit(s) => self.start_deposit(s),
            DeviceRequest::DoesNotFit(r) => self.does_not_fit(r.deposit_id),
            DeviceRequest::CancelDeposit(r) => self.cancel_deposit(r.deposit_id, ctx),
            DeviceRequest::DoorEvent(e) => self.door_event(e),
            DeviceRequest::Pickup(p) => self.pickup(p),
            DeviceRequest::FaultNotification(f) => self.fault(f),
            DeviceRequest::CollectReturn { collection_code } => self.collect_return(collection_code),
        }
    }

    fn boot(&mut self, b: BootNotification) -> ResponseActFuture<Self, Reply> {
        let settings = self.deps.settings.clone();
        let settings_for_settle = settings.clone();
        let config = BootConfig {
            pickup_code_length: settings.pickup_code_length,
            deposit_timeout_secs: settings.deposit_timeout_secs,
            kiosk_interaction_timeout_secs: settings.kiosk_interaction_timeout_secs,
        };
        let major = |v: &str| v.split('.').next().unwrap_or_default().to_string();
        if major(&b.protocol_version) != major(PROTOCOL_VERSION)
            || b.compartments.len() > crate::domain::MAX_COMPARTMENTS as usize
        {
            let resp = BootResponse {
                status: "Rejected".into(),
                server_time: crate::db::ts_string(crate::db::now()),
                heartbeat_interval: settings.device_heartbeat_secs,
                config,
                discrepancies: vec![],
            };
            return done(json!(resp));
        }
        let busy = self.busy();
        let id = self.id.clone();
        let waiting = self.awaiting_sessions();
        let key = self.deps.key.clone();
        self.db_op(
            move |c, me| {
                let fw: String = b.firmware_version.chars().take(64).collect();
                let pv: String = b.protocol_version.chars().take(16).collect();
                lockers::set_connection(c, &me.locker_id, true, Some((&fw, &pv)))?;
                // Sessions a server restart interrupted: the snapshot says how they ended.
                let mut decided = Vec::new();
                for s in &waiting {
                    let sensed = b.compartments.iter().find(|c| c.number == s.number).map(|c| Sensed {
                        door_open: c.door == Door::Open,
                        occupied: c.occupied,
                    });
                    let decision = recovery::decide(s.kind, sensed);
                    interrupted::settle(c, me, &key, &settings_for_settle, s, decision)?;
                    decided.push((s.number, decision));
                }
                let found = pickups::reconcile(c, me, &b.compartments, &busy)?;
                Ok((found, decided, lockers::slots(c, &id)?))
            },
            move |(found, decided, slots), act, ctx| {
                act.settled(decided, ctx);
                act.slots = slots;
                for n in act.doors.keys().copied().collect::<Vec<_>>() {
                    act.set_slot(n, CompartmentStatus::Reserved);
                }
                act.booted = true;
                if !found.is_empty() {
                    tracing::warn!(locker = %act.id, discrepancies = found.len(), "boot snapshot differs from the database");
                }
                Ok(json!(BootResponse {
                    status: "Accepted".into(),
                    server_time: crate::db::ts_string(crate::db::now()),
                    heartbeat_interval: settings.device_heartbeat_secs,
                    config,
                    discrepancies: found,
                }))
            },
        )
    }

    fn identify_courier(&mut self, code: String) -> ResponseActFuture<Self, Reply> {
        Box::pin(
            self.check_code(
                Some(CodeKind::Courier),
                "courier code",
                move |c, _, _| {
                    if code.len() > 64 {
                        return Ok(None);
                    }
                    Ok(carriers::by_courier_code(c, &code)?)
                },
                |_| None,
            )
            .map(|res, act, _| {
                res.map(|carrier| {
                    // The deposits that follow in this interaction are this carrier's.
                    act.kiosk.identify(&carrier.id, act.deps.clock.now());
                    json!({"carrier": CarrierInfo::from(carrier)})
                })
            }),
        )
    }

    /// Takes one kiosk lookup (directory search or phone match) from this locker's hourly
    /// allowance: a stolen or spoofed device credential must not enumerate a building.
    fn lookup_allowed(&self) -> Result<(), DeviceError> {
        self.deps.directory_lookups.check(&self.id).map_err(|wait| {
            tracing::warn!(locker = %self.id, "kiosk directory lookups over the hourly allowance");
            refuse(
                ErrorCode::LockedOut,
                format!("too many directory lookups; try again in {} s", wait.as_secs().max(1)),
            )
            .with_retry(wait)
        })
    }

    fn search_directory(&mut self, query: String) -> ResponseActFuture<Self, Reply> {
        let q = query.trim().to_string();
        if !(2..=50).contains(&q.chars().count()) {
            return fail(refuse(ErrorCode::ProtocolError, "query must be 2 to 50 characters"));
        }
        if let Err(e) = self.lookup_allowed() {
            return fail(e);
        }
        self.db_op(
            move |c, me| Ok(recipients::directory(c, &me.site_id, &q, DIRECTORY_RESULTS)?),
            |found, _, _| {
                // The least a driver needs to pick the resident on the label: a reference to
                // deposit with, initials and the unit. Never a full name or a phone number.
                let entries: Vec<RecipientEntry> = found
                    .into_iter()
                    .map(|r| RecipientEntry {
                        id: r.id,
                        name: crate::domain::privacy::masked_name(&r.name),
                        unit: r.unit,
                    })
                    .collect();
                Ok(json!({"recipients": entries}))
            },
        )
    }

    fn start_deposit(&mut self, req: StartDeposit) -> ResponseActFuture<Self, Reply> {
        if let Err(KioskRefusal::OtherCarrier { bound_carrier_id }) = self.kiosk.check_deposit(&req.carrier_id) {
            return fail(DeviceError::Refused(
                FrameError::new(
                    ErrorCode::InvalidState,
                    "this kiosk interaction is bound to the carrier of the courier code entered; \
                     deposit for that carrier, or send EndInteraction first",
                )
                .with_details(json!({"bound_carrier_id": bound_carrier_id})),
            ));
        }
        // A phone match confirms that a number belongs to a resident: it counts as a lookup.
        if matches!(req.identify, Identify::Phone(_)) {
            if let Err(e) = self.lookup_allowed() {
                return fail(e);
            }
        }
        let slots = self.slots.clone();
        let busy = self.busy();
        self.db_change(
            move |c, me| deposits::start(c, me, &req, &slots, &busy),
            |started| {
                Some(json!(DepositOpen {
                    deposit_id: started.parcel_id.clone(),
                    compartment: started.number,
                    size: started.size
                }))
            },
            |started, act, ctx| {
                if let Some(old) = started.released {
                    act.set_slot(old, CompartmentStatus::Free);
                }
                act.set_slot(started.number, CompartmentStatus::Reserved);
                let timer = act.door_timer(started.number, started.parcel_id.clone(), ctx);
                act.doors.insert(
                    started.number,
                    DoorSession::Deposit {
                        parcel_id: started.parcel_id.clone(),
                        carrier_id: started.carrier_id,
                        needs_accessible: started.needs_accessible,
                        prior: started.prior,
                        opened: false,
                        timer,
                    },
                );
                Ok(())
            },
        )
    }

    fn deposit_by_id(&self, deposit_id: &str) -> Option<(i32, &DoorSession)> {
        self.doors
            .iter()
            .find(|(_, d)| matches!(d, DoorSession::Deposit { parcel_id, .. } if parcel_id == deposit_id))
            .map(|(n, d)| (*n, d))
    }

    fn does_not_fit(&mut self, deposit_id: String) -> ResponseActFuture<Self, Reply> {
        let Some((
            current,
            DoorSession::Deposit {
                carrier_id,
                needs_accessible,
                ..
            },
        )) = self.deposit_by_id(&deposit_id)
        else {
            return fail(refuse(ErrorCode::NotFound, "no deposit in progress with this id"));
        };
        let (carrier_id, needs_accessible) = (carrier_id.clone(), *needs_accessible);
        let slots = self.slots.clone();
        let busy = self.busy();
        let pid = deposit_id.clone();
        let answer_id = deposit_id.clone();
        self.db_change(
            move |c, me| {
                let d = deposits::DepositInProgress {
                    parcel_id: pid,
                    carrier_id,
                    needs_accessible,
                    number: current,
                };
                deposits::upsize(c, me, &d, &slots, &busy)
            },
            move |(number, size)| {
                Some(json!(DepositOpen {
                    deposit_id: answer_id,
                    compartment: *number,
                    size: *size
                }))
            },
            move |(number, _), act, ctx| {
                if let Some(mut session) = act.doors.remove(&current) {
                    // The door timer follows the deposit to its new compartment.
                    if let Some(timer) = session.timer_mut() {
                        ctx.cancel_future(*timer);
                        *timer = act.door_timer(number, deposit_id.clone(), ctx);
                    }
                    act.doors.insert(number, session);
                }
                act.set_slot(current, CompartmentStatus::Free);
                act.set_slot(number, CompartmentStatus::Reserved);
                Ok(())
            },
        )
    }

    fn cancel_deposit(&mut self, deposit_id: String, _: &mut Context<Self>) -> ResponseActFuture<Self, Reply> {
        let Some((number, DoorSession::Deposit { prior, .. })) = self.deposit_by_id(&deposit_id) else {
            return fail(refuse(ErrorCode::NotFound, "no deposit in progress with this id"));
        };
        let prior = prior.clone();
        self.db_change(
            move |c, me| deposits::cancel(c, me, &deposit_id, number, &prior, "cancelled by the driver"),
            |_| Some(json!({"status": "Cancelled"})),
            move |status, act, ctx| {
                act.end_door(number, ctx);
                act.set_slot(number, status);
                Ok(())
            },
        )
    }

    /// Ends a door session and its timer.
    fn end_door(&mut self, number: i32, ctx: &mut Context<Self>) -> Option<DoorSession> {
        let mut door = self.doors.remove(&number)?;
        if let Some(timer) = door.timer_mut() {
            ctx.cancel_future(*timer);
        }
        Some(door)
    }

    fn door_event(&mut self, ev: DoorEvent) -> ResponseActFuture<Self, Reply> {
        let number = ev.compartment;
        if !self.slots.iter().any(|s| s.number == number) {
            return fail(refuse(ErrorCode::NotFound, format!("no compartment {number}")));
        }
        // What closing the door means depends on the sensor only while a parcel moves.
        let moves_parcel = self.doors.get(&number).is_some_and(|d| d.parcel_id().is_some());
        let occupied = match (ev.door, ev.occupied) {
            (DoorChange::Closed, None) if moves_parcel => {
                return fail(refuse(
                    ErrorCode::ProtocolError,
                    format!(
                        "occupied is required on a closed DoorEvent while a deposit, pickup or collection \
                         is in progress on compartment {number}"
                    ),
                ));
            }
            (_, occupied) => occupied.unwrap_or(false),
        };
        match (self.doors.get_mut(&number), ev.door) {
            (Some(door), DoorChange::Opened) => {
                *door.opened_mut() = true;
                done(json!(DoorEventResponse { outcome: "none".into() }))
            }
            (Some(DoorSession::Deposit { parcel_id, prior, .. }), DoorChange::Closed) => {
                let (pid, prior) = (parcel_id.clone(), prior.clone());
                if occupied {
                    let key = self.deps.key.clone();
                    let s = self.deps.settings.clone();
                    self.db_change(
                        move |c, me| deposits::complete(c, me, &key, &s, &pid, number),
                        outcome("deposited"),
                        move |_, act, ctx| {
                            act.end_door(number, ctx);
                            act.set_slot(number, CompartmentStatus::Occupied);
                            Ok(())
                        },
                    )
                } else {
                    self.db_change(
                        move |c, me| {
                            deposits::cancel(c, me, &pid, number, &prior, "door closed on an empty compartment")
                        },
                        outcome("deposit_cancelled"),
                        move |status, act, ctx| {
                            act.end_door(number, ctx);
                            act.set_slot(number, status);
                            Ok(())
                        },
                    )
                }
            }
            (Some(door @ (DoorSession::Pickup { .. } | DoorSession::Collection { .. })), DoorChange::Closed) => {
                let (by, done_as, left_as) = match door {
                    DoorSession::Collection { .. } => (TakenBy::Carrier, "returned", "collection_abandoned"),
                    _ => (TakenBy::Recipient, "picked_up", "pickup_abandoned"),
                };
                let pid = door.parcel_id().unwrap_or_default().to_string();
                if occupied {
                    self.db_change(
                        move |c, me| pickups::record(c, me, &pid, left_as, json!({"compartment": number})),
                        outcome(left_as),
                        move |_, act, ctx| {
                            act.end_door(number, ctx);
                            Ok(())
                        },
                    )
                } else {
                    self.db_change(
                        move |c, me| pickups::taken_out(c, me, &pid, number, by),
                        outcome(done_as),
                        move |_, act, ctx| {
                            act.end_door(number, ctx);
                            act.set_slot(number, CompartmentStatus::Free);
                            Ok(())
                        },
                    )
                }
            }
            (
                Some(DoorSession::Remote {
                    open:
                        RemoteDoor {
                            open_id,
                            parcel_id: Some(pid),
                        },
                    ..
                }),
                DoorChange::Closed,
            ) => {
                // A parcel was inside when the door was opened remotely: what the door sensor
                // says now decides whether it was taken out.
                let (pid, open_id) = (pid.clone(), open_id.clone());
                let now = self.deps.clock.now();
                self.db_change(
                    move |c, me| Ok(remote_opens::door_closed(c, me, &pid, &open_id, number, occupied, now)?),
                    outcome("none"),
                    move |removed, act, ctx| {
                        act.end_door(number, ctx);
                        if removed {
                            act.set_slot(number, CompartmentStatus::Free);
                        }
                        Ok(())
                    },
                )
            }
            (Some(DoorSession::Remote { .. }), DoorChange::Closed) => {
                self.doors.remove(&number);
                done(json!(DoorEventResponse { outcome: "none".into() }))
            }
            (None, DoorChange::Opened) => self.db_change(
                move |c, me| {
                    pickups::fault(
                        c,
                        me,
                        Some(number),
                        "unexpected_door_open",
                        "door opened without a command",
                    )
                },
                outcome("fault"),
                move |_, act, _| {
                    act.set_slot(number, CompartmentStatus::OutOfService);
                    Ok(())
                },
            ),
            (None, DoorChange::Closed) => done(json!(DoorEventResponse { outcome: "none".into() })),
        }
    }

    fn pickup(&mut self, p: PickupRequest) -> ResponseActFuture<Self, Reply> {
        let PickupRequest { by, second_factor } = p;
        match &by {
            // A QR token is unguessable (256 bits): it is never locked out and never counted, so
            // nobody's guessing at the keypad can keep a QR holder from their parcel.
            Pickup::QrToken(_) => self.open_by_code(TakenBy::Recipient, "QR code", None, move |c, me, key| {
                pickups::find(c, me, key, &by)
            }),
            Pickup::Code(_) => {
                let required = self.deps.settings.pickup_second_factor == SecondFactor::Required;
                if required && second_factor.is_none() {
                    // Not checked and not counted: the code is neither confirmed nor denied.
                    let e = FrameError::new(
                        ErrorCode::InvalidCode,
                        "enter the code together with the last 4 digits of your phone number \
                         (or your unit if you gave no phone number)",
                    );
                    return fail(DeviceError::Refused(
                        e.with_details(json!({"second_factor_required": true})),
                    ));
                }
                self.open_by_code(
                    TakenBy::Recipient,
                    "pickup code",
                    Some(CodeKind::Pickup),
                    move |c, me, key| {
                        let Some((pid, number)) = pickups::find(c, me, key, &by)? else {
                            return Ok(None);
                        };
                        // A right code with a wrong (or, where optional, a wrong given) factor is
                        // answered exactly like a wrong code, and counted like one.
                        if second_factor.is_some() || required {
                            let (phone, unit) = lockouts::factor_for_parcel(c, &pid)?.unwrap_or_default();
                            if !second_factor::matches(phone.as_deref(), &unit, second_factor.as_deref()) {
                                return Ok(None);
                            }
                        }
                        Ok(Some((pid, number)))
                    },
                )
            }
        }
    }

    fn collect_return(&mut self, code: String) -> ResponseActFuture<Self, Reply> {
        self.open_by_code(
            TakenBy::Carrier,
            "collection code",
            Some(CodeKind::Collect),
            move |c, me, key| pickups::find_collection(c, me, key, &code),
        )
    }

    /// Checks a code in one transaction. With a `kind`, the code is refused unchecked during a
    /// lockout, and a miss is counted (and may start a lockout) in the same transaction, so the
    /// count survives a restart. `find` may write: it runs only when no lockout is running.
    ///
    /// `answer` gives the device's answer to a found code when that answer reports a change: it
    /// is stored with the change, like `db_change` does, for a retry after a restart.
    fn check_code<T, F, A>(
        &mut self,
        kind: Option<CodeKind>,
        what: &'static str,
        find: F,
        answer: A,
    ) -> ResponseActFuture<Self, Result<T, DeviceError>>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConn, &LockerCtx, &ServerKey) -> Result<Option<T>, DeviceError> + Send + 'static,
        A: FnOnce(&T) -> Option<Value> + Send + 'static,
    {
        let record = self.recording.take();
        let retention = self.call_retention();
        let server_key = self.deps.key.clone();
        let clock = self.deps.clock.clone();
        let policy = lockout_policy(&self.deps.settings);
        self.db_op(
            move |c, me| {
                let now = clock.now();
                let mut counted = None;
                if let Some(kind) = kind {
                    let st = lockouts::state(c, &me.locker_id, kind, now)?;
                    if let Some(left) = st.locked(now) {
                        return Ok(Checked::Locked(left));
                    }
                    counted = Some((kind, st));
                }
                if let Some(found) = find(c, me, &server_key)? {
                    if let (Some(r), Some(p)) = (&record, answer(&found)) {
                        device_calls::remember(c, &me.locker_id, &r.msg_id, &r.fingerprint, &p.to_string(), retention)?;
                    }
                    return Ok(Checked::Found(found));
                }
                let Some((kind, mut st)) = counted else {
                    return Ok(Checked::Wrong(None));
                };
                let started = st.fail(&policy, now);
                lockouts::save(c, &me.locker_id, kind, &st, started.as_ref(), now)?;
                Ok(Checked::Wrong(started.map(|s| (kind, s))))
            },
            move |checked, act, _| match checked {
                Checked::Found(t) => Ok(t),
                Checked::Locked(left) => Err(locked_out(left)),
                Checked::Wrong(None) => Err(refuse(ErrorCode::InvalidCode, format!("wrong {what}"))),
                Checked::Wrong(Some((kind, started))) => {
                    // docs/security.md §3: lockouts show in the log (never the code) and in the admin API.
                    tracing::warn!(
                        locker = %act.id,
                        kind = kind.as_str(),
                        level = started.level,
                        lockout_secs = started.length.num_seconds(),
                        until = %crate::db::ts_string(started.until),
                        "too many wrong codes: lockout started"
                    );
                    Err(locked_out(started.length))
                }
            },
        )
    }

    /// Opens the compartment a code unlocks: a recipient's pickup code or QR token, or a
    /// carrier's collection code. Wrong codes of a counted `kind` count toward its lockout.
    fn open_by_code<F>(
        &mut self,
        by: TakenBy,
        what: &'static str,
        kind: Option<CodeKind>,
        find: F,
    ) -> ResponseActFuture<Self, Reply>
    where
        F: FnOnce(&mut DbConn, &LockerCtx, &ServerKey) -> Result<Option<(String, i32)>, DeviceError> + Send + 'static,
    {
        let busy = self.busy();
        let checked = self.check_code(
            kind,
            what,
            move |c, me, key| {
                let Some((pid, number)) = find(c, me, key)? else {
                    return Ok(None);
                };
                if busy.contains(&number) {
                    return Err(refuse(ErrorCode::InvalidState, "this compartment is already open"));
                }
                match by {
                    TakenBy::Recipient => {
                        pickups::record(c, me, &pid, "pickup_opened", json!({"compartment": number, "by": what}))?
                    }
                    TakenBy::Carrier => {
                        pickups::record(c, me, &pid, "collection_opened", json!({"compartment": number}))?
                    }
                }
                Ok(Some((pid, number)))
            },
            |(parcel_id, number)| Some(pickup_open(parcel_id, *number)),
        );
        Box::pin(checked.map(move |found, act, ctx| {
            let (parcel_id, number) = found?;
            let timer = act.door_timer(number, parcel_id.clone(), ctx);
            let (pid, opened) = (parcel_id.clone(), false);
            let session = match by {
                TakenBy::Recipient => DoorSession::Pickup {
                    parcel_id: pid,
                    opened,
                    timer,
                },
                TakenBy::Carrier => DoorSession::Collection {
                    parcel_id: pid,
                    opened,
                    timer,
                },
            };
            act.doors.insert(number, session);
            Ok(pickup_open(&parcel_id, number))
        }))
    }

    fn fault(&mut self, f: FaultNotification) -> ResponseActFuture<Self, Reply> {
        let number = f.compartment;
        if !self.slots.iter().any(|s| s.number == number) {
            return fail(refuse(ErrorCode::NotFound, format!("no compartment {number}")));
        }
        let kind: String = f.kind.chars().take(64).collect();
        let detail: String = f.detail.chars().take(500).collect();
        self.db_change(
            move |c, me| pickups::fault(c, me, Some(number), &kind, &detail),
            |_| Some(json!({})),
            move |_, act, _| {
                act.set_slot(number, CompartmentStatus::OutOfService);
                Ok(())
            },
        )
    }

    /// A deposit or pickup must finish within the deposit timeout. If it does not, a deposit
    /// is cancelled; a door left open is reported as a fault.
    fn door_timer(&self, number: i32, parcel_id: String, ctx: &mut Context<Self>) -> SpawnHandle {
        let after = Duration::from_secs(self.deps.settings.deposit_timeout_secs);
        ctx.run_later(after, move |act, ctx| {
            let matches = act.doors.get(&number).and_then(DoorSession::parcel_id) == Some(parcel_id.as_str());
            if !matches {
                return;
            }
            if let Some(reported) = act.awaiting_boot.get_mut(&number) {
                // Interrupted by a restart and the device has not booted since: the parcel may
                // be inside or not. Not cancelled: out of service for a person to check, and the
                // session waits for the boot that decides it.
                if !std::mem::replace(reported, true) {
                    act.report_outcome_unknown(number, ctx);
                }
                return;
            }
            let Some(door) = act.doors.remove(&number) else { return };
            let Some(me) = act.me.clone() else { return };
            let db = act.deps.db.clone();
            let (opened, deposit_prior) = match door {
                DoorSession::Deposit { opened, prior, .. } => (opened, Some(prior)),
                DoorSession::Pickup { opened, .. }
                | DoorSession::Collection { opened, .. }
                | DoorSession::Remote { opened, .. } => (opened, None),
            };
            let pid = parcel_id.clone();
            let work = async move {
                db.transaction_as(move |c| -> Result<CompartmentStatus, DeviceError> {
                    let mut status = CompartmentStatus::Occupied;
                    if let Some(prior) = &deposit_prior {
                        status = deposits::cancel(c, &me, &pid, number, prior, "timed out")?;
                    } else {
                        pickups::record(c, &me, &pid, "pickup_timed_out", json!({"compartment": number}))?;
                    }
                    if opened {
                        pickups::fault(
                            c,
                            &me,
                            Some(number),
                            "door_not_closed",
                            "the door was not closed in time",
                        )?;
                        status = CompartmentStatus::OutOfService;
                    }
                    Ok(status)
                })
                .await
            };
            ctx.wait(work.into_actor(act).map(move |res, act, ctx| match res {
                Ok(status) => act.set_slot(number, status),
                Err(e) => {
                    tracing::error!(locker = %act.id, error = ?e, "door timeout handling failed; restarting");
                    ctx.stop();
                }
            }));
        })
    }
}

impl LockerActor {
    fn report_outcome_unknown(&mut self, number: i32, ctx: &mut Context<Self>) {
        let Some(session) = self.awaiting_sessions().into_iter().find(|s| s.number == number) else {
            return;
        };
        let Some(me) = self.me.clone() else { return };
        self.set_slot(number, CompartmentStatus::OutOfService);
        tracing::warn!(locker = %self.id, compartment = number, parcel = %session.parcel_id,
            "interrupted door session not decided: the locker has not booted since the restart");
        let db = self.deps.db.clone();
        ctx.spawn(
            async move {
                let r = db
                    .transaction_as(move |c| interrupted::outcome_unknown(c, &me, &session))
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = ?e, "could not record an interrupted session's unknown outcome");
                }
            }
            .into_actor(self),
        );
    }
}

impl DeviceError {
    /// Adds `retry_after_secs` to a refusal's details.
    pub fn with_retry(self, after: Duration) -> Self {
        match self {
            DeviceError::Refused(e) => {
                DeviceError::Refused(e.with_details(json!({"retry_after_secs": after.as_secs().max(1)})))
            }
            other => other,
        }
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
        self.record_connection(true, ctx);
    }
}

impl Handler<Detach> for LockerActor {
    type Result = ();

    fn handle(&mut self, msg: Detach, ctx: &mut Context<Self>) {
        if self.session.as_ref().is_some_and(|(id, _)| *id == msg.session_id) {
            self.session = None;
            self.booted = false;
            self.record_connection(false, ctx);
        }
    }
}

impl Handler<DeviceCall> for LockerActor {
    type Result = AtomicResponse<Self, String>;

    fn handle(&mut self, msg: DeviceCall, ctx: &mut Context<Self>) -> Self::Result {
        // A boot always runs: it re-establishes the session's state.
        let is_boot = matches!(msg.request, DeviceRequest::BootNotification(_));
        if let Some(answer) = self.dedup.get(&msg.msg_id, &msg.fingerprint).filter(|_| !is_boot) {
            return AtomicResponse::new(Box::pin(fut::ready(answer)));
        }
        if self.session.as_ref().is_none_or(|(s, _)| *s != msg.session_id) {
            let e = FrameError::new(ErrorCode::ProtocolError, "this session was replaced by a newer one");
            let id = msg.msg_id;
            return AtomicResponse::new(Box::pin(fut::ready(Frame::Error { id, error: e }.to_text())));
        }
        if !changes_state(&msg.request) {
            return AtomicResponse::new(self.run_call(msg, false, ctx));
        }
        // Not in memory: the answer may have been committed by a server process that has
        // since stopped. The mailbox waits for this lookup, so nothing runs in between.
        let (db, locker_id, msg_id) = (self.deps.db.clone(), self.id.clone(), msg.msg_id.clone());
        let lookup = async move { db.run(move |c| Ok(device_calls::find(c, &locker_id, &msg_id)?)).await };
        AtomicResponse::new(Box::pin(lookup.into_actor(self).then(move |found, act, ctx| {
            match found {
                Ok(Some(stored)) if stored.fingerprint == msg.fingerprint => {
                    let text = match serde_json::from_str(&stored.answer) {
                        Ok(payload) => Frame::Result {
                            id: msg.msg_id.clone(),
                            payload,
                        }
                        .to_text(),
                        Err(e) => Frame::Error {
                            id: msg.msg_id.clone(),
                            error: FrameError::new(ErrorCode::InternalError, format!("stored answer unreadable: {e}")),
                        }
                        .to_text(),
                    };
                    act.dedup.put(msg.msg_id, msg.fingerprint, text.clone());
                    Box::pin(fut::ready(text)) as ResponseActFuture<Self, String>
                }
                // Whether this call already ran is unknown: it must not run (again) blindly.
                Err(e) => {
                    tracing::warn!(locker = %act.id, error = %e, "cannot read remembered device calls");
                    let error = FrameError::new(ErrorCode::InternalError, "server unavailable; retry with the same id");
                    Box::pin(fut::ready(Frame::Error { id: msg.msg_id, error }.to_text()))
                }
                // Never answered, or a reused id with another payload: it runs as a new call.
                Ok(_) => act.run_call(msg, true, ctx),
            }
        })))
    }
}

/// Calls whose result reports a change the server committed (a compartment reserved, a deposit
/// completed, a door session begun, a fault recorded). Their answers are stored with the change
/// so a retry after a server restart gets them; the others are read-only and simply run again.
fn changes_state(req: &DeviceRequest) -> bool {
    match req {
        DeviceRequest::BootNotification(_)
        | DeviceRequest::Heartbeat
        | DeviceRequest::ListCarriers
        | DeviceRequest::IdentifyCourier { .. }
        | DeviceRequest::EndInteraction
        | DeviceRequest::SearchDirectory { .. } => false,
        DeviceRequest::StartDeposit(_)
        | DeviceRequest::DoesNotFit(_)
        | DeviceRequest::CancelDeposit(_)
        | DeviceRequest::DoorEvent(_)
        | DeviceRequest::Pickup(_)
        | DeviceRequest::FaultNotification(_)
        | DeviceRequest::CollectReturn { .. } => true,
    }
}

impl LockerActor {
    /// Runs a device call and turns its outcome into the frame to send; `persist` stores a
    /// state-changing result in the transaction that commits the change (see `db_change`).
    fn run_call(&mut self, msg: DeviceCall, persist: bool, ctx: &mut Context<Self>) -> ResponseActFuture<Self, String> {
        let (id, fingerprint) = (msg.msg_id, msg.fingerprint);
        let is_boot = matches!(msg.request, DeviceRequest::BootNotification(_));
        if !self.booted && !is_boot {
            // Not remembered: after booting, a retry with the same id must run.
            let e = FrameError::new(ErrorCode::ProtocolError, "send BootNotification first");
            return Box::pin(fut::ready(Frame::Error { id, error: e }.to_text()));
        }
        let action = msg.request.action();
        self.recording = persist.then(|| CallRecord {
            msg_id: id.clone(),
            fingerprint: fingerprint.clone(),
        });
        let work = self.dispatch(msg.request, ctx);
        // Only a transaction started by this dispatch may record this call.
        self.recording = None;
        Box::pin(work.map(move |res, act, _| {
            let (frame, remember) = match res {
                Ok(payload) => (
                    Frame::Result {
                        id: id.clone(),
                        payload,
                    },
                    true,
                ),
                // Failures are not remembered: a retry with the same id runs again.
                Err(e) => (
                    Frame::Error {
                        id: id.clone(),
                        error: e.to_frame_error(),
                    },
                    matches!(e, DeviceError::Refused(_)),
                ),
            };
            tracing::debug!(locker = %act.id, action, msg_id = %id, "device call answered");
            let text = frame.to_text();
            if remember && !is_boot {
                act.dedup.put(id, fingerprint, text.clone());
            }
            text
        }))
    }
}

impl Handler<DeviceAnswer> for LockerActor {
    type Result = ();

    fn handle(&mut self, msg: DeviceAnswer, _: &mut Context<Self>) {
        if let Some((tx, number, open)) = self.pending.remove(&msg.msg_id) {
            // Register the open door now: its DoorEvent may be the very next message.
            if msg
                .answer
                .as_ref()
                .is_ok_and(|v| v.get("status").and_then(Value::as_str) == Some("Opened"))
            {
                self.doors
                    .entry(number)
                    .or_insert(DoorSession::Remote { opened: false, open });
            }
            let _ = tx.send(msg.answer);
        }
    }
}

impl Handler<RemoteOpen> for LockerActor {
    type Result = ResponseActFuture<Self, OpenOutcome>;

    fn handle(&mut self, msg: RemoteOpen, _: &mut Context<Self>) -> Self::Result {
        let number = msg.number;
        let open = RemoteDoor {
            open_id: msg.open_id.clone(),
            parcel_id: msg.parcel_id.clone(),
        };
        let asked = if !self.slots.iter().any(|s| s.number == number) {
            Box::pin(fut::ready(OpenOutcome::NoSuchCompartment))
        } else if let Some((_, session)) = self.session.clone().filter(|_| self.booted) {
            self.ask_device_to_open(number, msg.reason, msg.actor, open, session)
        } else {
            Box::pin(fut::ready(OpenOutcome::Offline))
        };
        // The audit record gets the outcome before anyone hears it, in this actor's future so
        // a caller that goes away cannot leave it `opening`.
        let (db, clock, open_id) = (self.deps.db.clone(), self.deps.clock.clone(), msg.open_id);
        Box::pin(asked.then(move |outcome, act, _| {
            let (status, detail) = match &outcome {
                OpenOutcome::Opened => (Outcome::Opened, String::new()),
                OpenOutcome::Failed(why) => (Outcome::Failed, format!("the locker could not open it: {why}")),
                OpenOutcome::Offline => (Outcome::Failed, "the locker is not connected".to_string()),
                OpenOutcome::NoSuchCompartment => (Outcome::Refused, "no such compartment".to_string()),
                OpenOutcome::Unknown => (
                    Outcome::Unknown,
                    "the locker did not confirm in time; the door may have opened".to_string(),
                ),
            };
            let id = open_id.clone();
            async move {
                let now = clock.now();
                let r = db
                    .transaction_as(move |c| -> Result<_, AppError> {
                        Ok(remote_opens::finish(c, &id, status, &detail, now)?)
                    })
                    .await;
                match r {
                    Ok(rec) => tracing::info!(
                        remote_open = %rec.id, admin_key = %rec.admin_key_id, holder = %rec.holder,
                        locker = %rec.locker_id, compartment = rec.compartment, outcome = %rec.outcome,
                        reason = %rec.reason, approved_by = ?rec.decided_by_holder, "remote open"
                    ),
                    Err(e) => {
                        tracing::error!(remote_open = %open_id, error = %e, "could not record a remote open's outcome")
                    }
                }
                outcome
            }
            .into_actor(act)
        }))
    }
}

impl LockerActor {
    /// Sends `OpenCompartment` and waits (bounded) for the device's answer.
    fn ask_device_to_open(
        &mut self,
        number: i32,
        reason: String,
        actor: String,
        open: RemoteDoor,
        session: Recipient<ToDevice>,
    ) -> ResponseActFuture<Self, OpenOutcome> {
        self.next_call += 1;
        let call_id = format!("srv-{}", self.next_call);
        let (tx, rx) = oneshot::channel();
        self.pending.insert(call_id.clone(), (tx, number, open.clone()));
        let payload = json!(OpenCompartment {
            compartment: number,
            reason
        });
        session.do_send(ToDevice::Text(
            Frame::Call {
                id: call_id.clone(),
                action: "OpenCompartment".into(),
                payload,
            }
            .to_text(),
        ));
        let timeout = Duration::from_secs(self.deps.settings.device_call_timeout_secs);
        Box::pin(
            async move { tokio::time::timeout(timeout, rx).await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.pending.remove(&call_id);
                    let outcome = match res {
                        Ok(Ok(Ok(v))) if v.get("status").and_then(Value::as_str) == Some("Opened") => {
                            OpenOutcome::Opened
                        }
                        Ok(Ok(Ok(v))) => OpenOutcome::Failed(v.to_string()),
                        Ok(Ok(Err(e))) => OpenOutcome::Failed(format!("{}: {}", e.code.as_str(), e.description)),
                        Ok(Err(_)) | Err(_) => OpenOutcome::Unknown,
                    };
                    let detail = format!("remote open by {actor}: {outcome:?}");
                    match outcome {
                        OpenOutcome::Opened => {
                            act.doors
                                .entry(number)
                                .or_insert(DoorSession::Remote { opened: true, open });
                        }
                        OpenOutcome::Unknown => {
                            act.set_slot(number, CompartmentStatus::OutOfService);
                            // Never replayed automatically: the door may have opened. Record it for a person to check.
                            let (db, me) = (act.deps.db.clone(), act.me.clone());
                            if let Some(me) = me {
                                ctx.spawn(
                                    async move {
                                        let r = db
                                            .transaction_as(move |c| {
                                                pickups::fault(c, &me, Some(number), "open_outcome_unknown", &detail)
                                            })
                                            .await;
                                        if let Err(e) = r {
                                            tracing::error!(error = ?e, "could not record unknown open outcome");
                                        }
                                    }
                                    .into_actor(act),
                                );
                            }
                        }
                        _ => {}
                    }
                    outcome
                }),
        )
    }
}

impl Handler<RequestRemoteOpen> for LockerActor {
    type Result = AtomicResponse<Self, Result<RemoteOpenRecord, AppError>>;

    /// Atomic: the window count and the new row are one decision per locker.
    fn handle(&mut self, msg: RequestRemoteOpen, _: &mut Context<Self>) -> Self::Result {
        let r = msg.request;
        let exists = self.slots.iter().any(|s| s.number == r.compartment);
        let s = &self.deps.settings;
        let secs = |n: u64| chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1000));
        let rule = remote_opens::WindowRule {
            max: s.remote_open_window_max,
            window: secs(s.remote_open_window_secs),
            approval_ttl: secs(s.remote_open_approval_ttl_secs),
        };
        let now = self.deps.clock.now();
        AtomicResponse::new(self.db_op(
            move |c, _| Ok(remote_opens::request(c, &r, exists, rule, now)?),
            |rec, _, _| Ok(rec),
        ))
    }
}

impl Handler<PreAdviseParcel> for LockerActor {
    type Result = AtomicResponse<Self, Result<crate::db::inbound::PreAdviceOutcome, AppError>>;

    fn handle(&mut self, msg: PreAdviseParcel, _: &mut Context<Self>) -> Self::Result {
        let slots = self.slots.clone();
        let busy = self.busy();
        let advice = msg.advice;
        AtomicResponse::new(self.db_op(
            move |c, me| {
                let outcome = crate::db::inbound::pre_advise(c, me, &advice, &slots, &busy)?;
                crate::db::inbound::remember(c, &advice.carrier_id, &advice.event_id, 202, &json!(outcome))?;
                Ok(outcome)
            },
            |outcome, act, _| {
                if let Some(n) = outcome.compartment {
                    act.set_slot(n, CompartmentStatus::Reserved);
                }
                Ok(outcome)
            },
        ))
    }
}

impl Handler<CancelParcel> for LockerActor {
    type Result = AtomicResponse<Self, Result<Value, AppError>>;

    fn handle(&mut self, msg: CancelParcel, _: &mut Context<Self>) -> Self::Result {
        if self
            .doors
            .values()
            .any(|d| d.parcel_id() == Some(msg.parcel_id.as_str()))
        {
            let e = AppError::Conflict {
                code: "deposit_in_progress",
                message: "a driver is depositing this parcel right now".into(),
            };
            return AtomicResponse::new(Box::pin(fut::ready(Err(e))));
        }
        AtomicResponse::new(self.db_op(
            move |c, _| {
                let actor = format!("carrier:{}", msg.carrier_id);
                let freed = crate::db::inbound::cancel(c, &msg.parcel_id, &actor, &msg.reason)?;
                let body = json!({"parcel_id": msg.parcel_id, "state": "cancelled", "released_compartment": freed});
                crate::db::inbound::remember(c, &msg.carrier_id, &msg.event_id, 200, &body)?;
                Ok((freed, body))
            },
            |(freed, body), act, _| {
                if let Some(n) = freed {
                    act.set_slot(n, CompartmentStatus::Free);
                }
                Ok(body)
            },
        ))
    }
}

impl Handler<IssueCollectionCode> for LockerActor {
    type Result = AtomicResponse<Self, Result<Value, AppError>>;

    fn handle(&mut self, msg: IssueCollectionCode, _: &mut Context<Self>) -> Self::Result {
        let key = self.deps.key.clone();
        let len = self.deps.settings.pickup_code_length;
        AtomicResponse::new(self.db_op(
            move |c, me| {
                let actor = format!("carrier:{}", msg.carrier_id);
                let (code, number) =
                    crate::db::inbound::issue_collection_code(c, me, &key, &msg.parcel_id, len, &actor)?;
                let body = json!({"parcel_id": msg.parcel_id, "locker_id": me.locker_id, "compartment": number,
                                  "collection_code": code});
                // The code is the carrier's to keep: what is remembered for a replay omits it.
                let remembered = json!({"parcel_id": msg.parcel_id, "locker_id": me.locker_id, "compartment": number,
                                        "collection_code": null, "note": "already issued; request a new code with a new event id"});
                crate::db::inbound::remember(c, &msg.carrier_id, &msg.event_id, 200, &remembered)?;
                Ok(body)
            },
            |body, _, _| Ok(body),
        ))
    }
}

impl Handler<ResendCode> for LockerActor {
    type Result = AtomicResponse<Self, Result<String, AppError>>;

    fn handle(&mut self, msg: ResendCode, _: &mut Context<Self>) -> Self::Result {
        let key = self.deps.key.clone();
        let len = self.deps.settings.pickup_code_length;
        AtomicResponse::new(self.db_op(
            move |c, me| deposits::reissue_code(c, me, &key, len, &msg.parcel_id, &msg.actor),
            |id, _, _| Ok(id),
        ))
    }
}

impl Handler<ExpireReservation> for LockerActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: ExpireReservation, _: &mut Context<Self>) -> Self::Result {
        let due = msg.due;
        // The driver is depositing it right now: the reservation has done its job.
        let in_progress = self
            .doors
            .values()
            .any(|d| d.parcel_id() == Some(due.parcel_id.as_str()));
        AtomicResponse::new(Box::pin(
            self.db_op(
                move |c, me| -> Result<Option<i32>, AppError> {
                    if in_progress {
                        crate::db::deadlines::claim(c, &due.id)?;
                        return Ok(None);
                    }
                    crate::db::deadlines::expire_reservation(c, me, &due)
                },
                |freed, act, _| {
                    if let Some(n) = freed {
                        act.set_slot(n, CompartmentStatus::Free);
                    }
                    Ok(())
                },
            )
            .map(|res: Result<(), AppError>, _, _| {
                if let Err(e) = res {
                    tracing::warn!(error = %e, "reservation expiry failed; it will be retried");
                }
            }),
        ))
    }
}

impl From<crate::db::carriers::Carrier> for CarrierInfo {
    fn from(c: crate::db::carriers::Carrier) -> Self {
        CarrierInfo {
            id: c.id,
            code: c.code,
            name: c.name,
        }
    }
}
