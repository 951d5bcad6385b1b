//! The device-call pipeline: dedup (memory, then the stored answers), one handler per action,
//! and the answer frame; plus the calls that are neither deposits, doors nor codes (boot,
//! heartbeat, carrier list, directory search, fault).

use actix::prelude::*;
use serde_json::json;

use super::{done, fail, refuse, stored_answer, CallRecord, LockerActor, Reply};
use crate::actors::messages::*;
use crate::db::{carriers, device_calls, lockers, recipients};
use crate::domain::recovery::{self, Decision, Sensed};
use crate::domain::CompartmentStatus;
use crate::error::{AppError, OpError};
use crate::protocol::messages::*;
use crate::protocol::DeviceError;
use crate::protocol::{ErrorCode, Frame, FrameError, PROTOCOL_VERSION};
use crate::qr_token::QrSigner;
use crate::workflows::journal::AfterReplay;

/// At most this many residents answer one `SearchDirectory`.
pub(super) const DIRECTORY_RESULTS: i64 = 5;

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
        // A call that changes state is recorded: the transaction that runs it stores its answer
        // with its change, and a retry of a call answered before (perhaps by a server process
        // that has since stopped) gets the stored answer instead (`db_change`).
        let record = changes_state(&msg.request);
        AtomicResponse::new(self.run_call(msg, record, ctx))
    }
}

/// Calls whose result reports a change the server committed (a compartment reserved, a deposit
/// completed, a door session begun, a fault recorded). Their answers are stored with the change
/// so a retry after a server restart gets them; the others are read-only and simply run again.
pub(super) fn changes_state(req: &DeviceRequest) -> bool {
    match req {
        DeviceRequest::BootNotification(_)
        | DeviceRequest::Heartbeat
        | DeviceRequest::ListCarriers
        | DeviceRequest::IdentifyCourier { .. }
        | DeviceRequest::EndInteraction
        | DeviceRequest::SearchDirectory { .. }
        // Applied once per sequence number, whatever the message id: a retry is answered from
        // the journal's stored outcomes.
        | DeviceRequest::ReplayJournal(_) => false,
        DeviceRequest::StartDeposit(_)
        | DeviceRequest::DoesNotFit(_)
        | DeviceRequest::CancelDeposit(_)
        | DeviceRequest::DoorEvent(_)
        | DeviceRequest::Pickup(_)
        | DeviceRequest::FaultNotification(_)
        | DeviceRequest::DoorAlarm(_)
        | DeviceRequest::CollectReturn { .. } => true,
    }
}

impl LockerActor {
    /// Runs a device call and turns its outcome into the frame to send; with `record`, the
    /// transaction that commits its change stores this answer, and a stored answer to the same
    /// call wins (see `db_change` and `CallRecord`).
    pub(super) fn run_call(
        &mut self,
        msg: DeviceCall,
        record: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, String> {
        let (id, fingerprint) = (msg.msg_id, msg.fingerprint);
        let is_boot = matches!(msg.request, DeviceRequest::BootNotification(_));
        // A heartbeat's answer is the time now: a retry gets a fresh one, and remembering it
        // would fill the window with heartbeats.
        let remembered = !is_boot && !matches!(msg.request, DeviceRequest::Heartbeat);
        // Before the boot, `dispatch` refuses every call but the boot. That refusal is not
        // remembered: after booting, a retry with the same id must run. A stored answer is sent
        // all the same (a server restart while the device waited for it).
        let booted = self.booted || is_boot;
        let action = msg.request.action();
        // Door closings issue and void codes (deposits, pickups, returns), and so does a replay:
        // a 1.1 device's local list follows.
        let list_may_change = matches!(
            msg.request,
            DeviceRequest::DoorEvent(_) | DeviceRequest::ReplayJournal(_)
        );
        self.recording = record.then(|| CallRecord {
            msg_id: id.clone(),
            fingerprint,
        });
        let mut work = self.dispatch(msg.request, ctx);
        // Only a transaction started by this dispatch may record this call. One that was
        // answered without such a transaction (a refusal memory decides, an outcome memory
        // alone decides) has not met a stored answer: it looks for one now, and a stored
        // answer is what a retry gets.
        if let Some(unchecked) = self.recording.take() {
            work = self.stored_answer_wins(work, unchecked, |_| true);
        }
        Box::pin(work.map(move |res, act, ctx| {
            if list_may_change && res.is_ok() {
                act.sync_list(ctx);
            }
            let res = match res {
                Err(DeviceError::Replayed(payload)) => Ok(payload),
                other => other,
            };
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
                    booted && matches!(e, DeviceError::Refused(_)),
                ),
            };
            tracing::debug!(locker = %act.id, action, msg_id = %id, "device call answered");
            let text = frame.to_text();
            if remember && remembered {
                act.dedup.put(id, fingerprint, text.clone());
            } else {
                act.dedup.forget(&id);
            }
            text
        }))
    }

    /// `work`'s answer, unless `when` says its outcome may hide an answer stored under the
    /// call's id, and one is stored with the same payload: then that one. A call that ran into
    /// its stored answer ([`DeviceError::AnsweredBefore`]) and finds none (pruned since) fails
    /// retryably.
    ///
    /// The lookup reads through the pool: the stored answer it looks for was committed before
    /// this call began, as one locker's calls run one at a time.
    pub(super) fn stored_answer_wins<T: 'static>(
        &self,
        work: ResponseActFuture<Self, Result<T, DeviceError>>,
        record: CallRecord,
        when: fn(&Result<T, DeviceError>) -> bool,
    ) -> ResponseActFuture<Self, Result<T, DeviceError>> {
        let (db, locker_id) = (self.deps.db.clone(), self.id.clone());
        Box::pin(
            work.then(move |res, act, _| -> ResponseActFuture<Self, Result<T, DeviceError>> {
                if !when(&res) {
                    return Box::pin(fut::ready(res));
                }
                let lookup = async move {
                    db.read(move |c| Ok(device_calls::find(c, &locker_id, &record.msg_id)?))
                        .await
                };
                Box::pin(lookup.into_actor(act).map(move |found, act, _| match found {
                    Ok(Some(stored)) if record.fingerprint.is_hex(&stored.fingerprint) => Err(stored_answer(&stored)),
                    Ok(_) => match res {
                        Err(DeviceError::AnsweredBefore) => Err(DeviceError::Failed(AppError::Unavailable(
                            "this call's stored answer is gone; retry".into(),
                        ))),
                        other => other,
                    },
                    Err(e) => {
                        // Whether this call was answered before is unknown: the device retries.
                        tracing::warn!(locker = %act.id, error = %e, "cannot read remembered device calls");
                        Err(DeviceError::Failed(e))
                    }
                }))
            }),
        )
    }

    pub(super) fn dispatch(&mut self, req: DeviceRequest, ctx: &mut Context<Self>) -> ResponseActFuture<Self, Reply> {
        if !self.booted && !matches!(req, DeviceRequest::BootNotification(_)) {
            return fail(refuse(ErrorCode::ProtocolError, "send BootNotification first"));
        }
        if !matches!(req, DeviceRequest::BootNotification(_) | DeviceRequest::Heartbeat) {
            // Anything the kiosk does keeps its interaction alive; silence past the timeout
            // (on the app clock) ends it before this call is judged.
            let timeout = chrono::Duration::seconds(self.deps.settings.kiosk_interaction_timeout_secs as i64);
            self.kiosk.activity(self.deps.clock.now(), timeout);
        }
        let serves_someone = matches!(
            req,
            DeviceRequest::StartDeposit(_) | DeviceRequest::Pickup(_) | DeviceRequest::CollectReturn { .. }
        );
        if serves_someone {
            if let Err(e) = self.replay_first() {
                return fail(e);
            }
        }
        match req {
            DeviceRequest::BootNotification(b) => self.boot(b),
            DeviceRequest::Heartbeat => {
                self.refresh_list(ctx);
                done(json!({"server_time": crate::db::ts_string(crate::db::now())}))
            }
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
            DeviceRequest::ReplayJournal(r) => self.replay_journal(r),
            DeviceRequest::DoorAlarm(a) => self.door_alarm(a, ctx),
            DeviceRequest::StartDeposit(s) => self.start_deposit(s),
            DeviceRequest::DoesNotFit(r) => self.does_not_fit(r.deposit_id),
            DeviceRequest::CancelDeposit(r) => self.cancel_deposit(r.deposit_id, ctx),
            DeviceRequest::DoorEvent(e) => self.door_event(e),
            DeviceRequest::Pickup(p) => self.pickup(p),
            DeviceRequest::FaultNotification(f) => self.fault(f),
            DeviceRequest::CollectReturn { collection_code } => self.collect_return(collection_code),
        }
    }

    pub(super) fn boot(&mut self, b: BootNotification) -> ResponseActFuture<Self, Reply> {
        let settings = self.deps.settings.clone();
        let policy = settings.deposit_policy(self.deps.clock.clone());
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
                offline: None,
            };
            return done(json!(resp));
        }
        // A 1.1 device: its journal and clock (docs/protocol.md §15.2).
        let offline = b.offline.clone();
        if let Some(o) = &offline {
            let checked = super::journal::check_journal_state(&o.journal).and(super::journal::check_clock(&o.clock));
            if let Err(e) = checked {
                return fail(e);
            }
        }
        // Measured on the application's clock, which the journal's times are corrected to.
        let clock_offset = offline
            .as_ref()
            .map(|o| self.deps.clock.now().and_utc() - o.clock)
            .unwrap_or_default();
        let snapshot = offline.is_some().then(|| b.compartments.clone());
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
                    let settled = crate::db::savepoint(c, |c| {
                        crate::workflows::interrupted::settle(c, me, &key, &policy, s, decision)
                    });
                    match settled {
                        Ok(()) => decided.push((s.number, decision)),
                        // The parcel moved on while the server was down (its state no longer
                        // allows this end): that session alone is dropped, the boot goes on.
                        Err(OpError::Refused(r)) => {
                            tracing::warn!(locker = %me.locker_id, compartment = s.number, parcel = %s.parcel_id,
                                refusal = %r, "interrupted session not settled: the parcel moved on");
                            decided.push((s.number, Decision::LeftInside));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                // A device that holds journal events the server has not applied is reconciled
                // after it replays them: its sensors already show what it did offline.
                let journal = match &b.offline {
                    Some(o) => Some((
                        crate::workflows::journal::at_boot(c, me, o.journal.next_seq, o.journal.pending)?,
                        crate::db::local_lists::head(c, &me.locker_id)?,
                    )),
                    None => None,
                };
                let found = match journal {
                    Some(((_, true), _)) => Vec::new(),
                    _ => crate::workflows::hardware::reconcile(c, me, &b.compartments, &busy)?,
                };
                Ok((found, decided, lockers::slots(c, &id)?, journal))
            },
            move |(found, decided, slots, journal), act, ctx| {
                act.settled(decided, ctx);
                act.slots = slots;
                for n in act.doors.keys().copied().collect::<Vec<_>>() {
                    act.set_slot(n, CompartmentStatus::Reserved);
                }
                act.booted = true;
                if !found.is_empty() {
                    tracing::warn!(locker = %act.id, discrepancies = found.len(), "boot snapshot differs from the database");
                }
                act.boots += 1;
                let offline_answer = match (journal, offline, snapshot) {
                    (Some(((applied_through, defer), head)), Some(o), Some(snapshot)) => {
                        act.offline = Some(super::journal::OfflineSession {
                            clock_offset,
                            after_replay: defer.then(|| AfterReplay {
                                snapshot,
                                through: o.journal.next_seq - 1,
                            }),
                            list: super::local_list::ListState {
                                device_version: o.local_list_version,
                                generation: act.boots,
                                ..Default::default()
                            },
                            journal_end: o.journal.next_seq - 1,
                        });
                        // Codes issued from now on get list entries.
                        if let Some(me) = act.me.as_mut() {
                            me.offline_list = true;
                        }
                        act.sync_list(ctx);
                        Some(OfflineAccepted {
                            allowed_skew_secs: settings.offline_clock_skew_secs as i64,
                            qr_keys: vec![QrSigner::of(&act.deps.key).public_key()],
                            journal: JournalAccepted {
                                applied_through,
                                reconcile: if defer { "after_replay" } else { "at_boot" }.into(),
                            },
                            local_list: LocalListInfo {
                                version: head.version,
                                epoch: head.epoch,
                                list_key: crate::workflows::local_list::list_key_text(&act.deps.key, &act.id, &head),
                            },
                            guessing: super::codes::lockout_policy(&settings).into(),
                        })
                    }
                    _ => {
                        act.offline = None;
                        if let Some(me) = act.me.as_mut() {
                            me.offline_list = false;
                        }
                        None
                    }
                };
                Ok(json!(BootResponse {
                    status: "Accepted".into(),
                    server_time: crate::db::ts_string(crate::db::now()),
                    heartbeat_interval: settings.device_heartbeat_secs,
                    config,
                    discrepancies: found,
                    offline: offline_answer,
                }))
            },
        )
    }

    /// Takes one kiosk lookup (directory search or phone match) from this locker's hourly
    /// allowance: a stolen or spoofed device credential must not enumerate a building.
    pub(super) fn lookup_allowed(&self) -> Result<(), DeviceError> {
        self.deps.directory_lookups.check(&self.id).map_err(|wait| {
            tracing::warn!(locker = %self.id, "kiosk directory lookups over the hourly allowance");
            refuse(
                ErrorCode::LockedOut,
                format!("too many directory lookups; try again in {} s", wait.as_secs().max(1)),
            )
            .with_retry(wait)
        })
    }

    pub(super) fn search_directory(&mut self, query: String) -> ResponseActFuture<Self, Reply> {
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

    pub(super) fn fault(&mut self, f: FaultNotification) -> ResponseActFuture<Self, Reply> {
        let number = f.compartment;
        if !self.slots.iter().any(|s| s.number == number) {
            return fail(refuse(ErrorCode::NotFound, format!("no compartment {number}")));
        }
        let kind: String = f.kind.chars().take(64).collect();
        let detail: String = f.detail.chars().take(500).collect();
        self.db_change(
            move |c, me| crate::workflows::hardware::fault(c, me, Some(number), &kind, &detail),
            |_| Some(json!({})),
            move |_, act, _| {
                act.set_slot(number, CompartmentStatus::OutOfService);
                Ok(())
            },
        )
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
