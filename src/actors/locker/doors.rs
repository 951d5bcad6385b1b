//! Door sessions: a door the actor expects to open and close, what closing it means (the
//! device's `DoorEvent`), its timeout, and the sessions a server restart interrupted.

use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};

use super::{done, fail, refuse, LockerActor, Reply};
use crate::db::interrupted;
use crate::domain::deposit::Prior;
use crate::domain::recovery::{Decision, Interrupted};
use crate::domain::CompartmentStatus;
use crate::protocol::messages::*;
use crate::protocol::DeviceError;
use crate::protocol::ErrorCode;
use crate::workflows::deposits;
use crate::workflows::pickups::TakenBy;

/// A door that is expected to open and close: what closing it will mean.
#[derive(Debug)]
pub(super) enum DoorSession {
    Deposit {
        parcel_id: String,
        carrier_id: String,
        needs_accessible: bool,
        prior: Prior,
        opened: bool,
        timer: DoorTimer,
    },
    Pickup {
        parcel_id: String,
        opened: bool,
        timer: DoorTimer,
    },
    /// A carrier's driver taking an expired parcel back.
    Collection {
        parcel_id: String,
        opened: bool,
        timer: DoorTimer,
    },
    Remote {
        opened: bool,
        open: RemoteDoor,
    },
}

/// A door session's timeout: the real timer, and when it falls due by the application's clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct DoorTimer {
    pub(super) handle: SpawnHandle,
    pub(super) due_at: chrono::NaiveDateTime,
}

/// What a remote open was for: its audit record, and the parcel that was inside.
#[derive(Debug, Clone)]
pub(super) struct RemoteDoor {
    pub(super) open_id: String,
    pub(super) parcel_id: Option<String>,
}

impl DoorSession {
    /// The parcel this door session moves, if any (remote opens move none).
    pub(super) fn parcel_id(&self) -> Option<&str> {
        match self {
            Self::Deposit { parcel_id, .. } | Self::Pickup { parcel_id, .. } | Self::Collection { parcel_id, .. } => {
                Some(parcel_id)
            }
            Self::Remote { .. } => None,
        }
    }

    pub(super) fn timer_mut(&mut self) -> Option<&mut DoorTimer> {
        match self {
            Self::Deposit { timer, .. } | Self::Pickup { timer, .. } | Self::Collection { timer, .. } => Some(timer),
            Self::Remote { .. } => None,
        }
    }

    pub(super) fn opened_mut(&mut self) -> &mut bool {
        match self {
            Self::Deposit { opened, .. }
            | Self::Pickup { opened, .. }
            | Self::Collection { opened, .. }
            | Self::Remote { opened, .. } => opened,
        }
    }
}

/// The answer to a `DoorEvent`, whatever its transaction returned.
pub(super) fn outcome<T>(o: &'static str) -> impl FnOnce(&T) -> Option<Value> {
    move |_| Some(json!(DoorEventResponse { outcome: o.to_string() }))
}

impl LockerActor {
    /// Rebuilds a door session a server restart interrupted. It waits for the device's boot
    /// (see `boot`); if none comes within the door timeout, the timer reports it.
    pub(super) fn rebuild(&mut self, f: interrupted::Found, ctx: &mut Context<Self>) {
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
    pub(super) fn awaiting_sessions(&self) -> Vec<interrupted::Session> {
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
    pub(super) fn settled(&mut self, decided: Vec<(i32, Decision)>, ctx: &mut Context<Self>) {
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
                            ctx.cancel_future(old.handle);
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

    /// Ends a door session and its timer.
    pub(super) fn end_door(&mut self, number: i32, ctx: &mut Context<Self>) -> Option<DoorSession> {
        let mut door = self.doors.remove(&number)?;
        if let Some(timer) = door.timer_mut() {
            ctx.cancel_future(timer.handle);
        }
        Some(door)
    }

    pub(super) fn door_event(&mut self, ev: DoorEvent) -> ResponseActFuture<Self, Reply> {
        let number = ev.compartment;
        if !self.slots.iter().any(|s| s.number == number) {
            return fail(refuse(ErrorCode::NotFound, format!("no compartment {number}")));
        }
        if ev.door == DoorChange::Opened {
            // It opens: whatever blocked it before is gone.
            self.blocked.remove(&number);
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
                    let policy = self.deps.settings.deposit_policy(self.deps.clock.clone());
                    self.db_change(
                        move |c, me| deposits::complete(c, me, &key, &policy, &pid, number),
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
                        move |c, me| {
                            crate::workflows::pickups::record(c, me, &pid, left_as, json!({"compartment": number}))
                        },
                        outcome(left_as),
                        move |_, act, ctx| {
                            act.end_door(number, ctx);
                            Ok(())
                        },
                    )
                } else {
                    self.db_change(
                        move |c, me| crate::workflows::pickups::taken_out(c, me, &pid, number, by),
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
                    move |c, me| {
                        crate::workflows::remote_open::door_closed(c, me, &pid, &open_id, number, occupied, now)
                    },
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
                    // The door's truth (1.1 §15.9): opened with no command is a forced door,
                    // whichever protocol reported it.
                    crate::workflows::hardware::alerting_fault(
                        c,
                        me,
                        number,
                        "unexpected_door_open",
                        "door_forced",
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

    /// `DoorAlarm` (1.1, docs/protocol.md §15.9). `forced`: a fault, the compartment out of
    /// service until a person returns it, and an operator alert. `blocked`: the door session
    /// ends as a timeout would, a fault and an alert; a second `blocked` in a row (no opening
    /// between) also takes the compartment out of service.
    pub(super) fn door_alarm(&mut self, a: DoorAlarm, ctx: &mut Context<Self>) -> ResponseActFuture<Self, Reply> {
        let number = a.compartment;
        if !self.slots.iter().any(|s| s.number == number) {
            return fail(refuse(ErrorCode::NotFound, format!("no compartment {number}")));
        }
        let seen =
            a.at.map(|t| format!(" (device time {})", t.to_rfc3339()))
                .unwrap_or_default();
        if a.kind == AlarmKind::Forced {
            let detail = format!("the door opened without an open command{seen}");
            return self.db_change(
                move |c, me| {
                    crate::workflows::hardware::alerting_fault(c, me, number, "door_forced", "door_forced", &detail)
                },
                outcome("fault"),
                move |_, act, _| {
                    act.set_slot(number, CompartmentStatus::OutOfService);
                    Ok(())
                },
            );
        }
        let again = !self.blocked.insert(number);
        let ended = match self
            .doors
            .get(&number)
            .and_then(DoorSession::parcel_id)
            .map(str::to_string)
        {
            Some(pid) => self.door_timed_out(number, pid, ctx),
            None => {
                self.doors.remove(&number);
                None
            }
        };
        let alarm = move |act: &mut Self| {
            act.db_change(
                move |c, me| {
                    if again {
                        let detail = format!("the door did not open when unlocked, twice in a row{seen}");
                        crate::workflows::hardware::alerting_fault(
                            c,
                            me,
                            number,
                            "door_blocked",
                            "door_blocked",
                            &detail,
                        )
                    } else {
                        let detail = format!("the door did not open when unlocked{seen}");
                        crate::workflows::hardware::alert(c, me, Some(number), "door_blocked", &detail)
                    }
                },
                outcome("fault"),
                move |_, act, _| {
                    if again {
                        act.set_slot(number, CompartmentStatus::OutOfService);
                    }
                    Ok(())
                },
            )
        };
        match ended {
            // The session's end commits first; the alarm's transaction, which stores this
            // call's answer, follows.
            Some(end) => {
                let record = self.recording.take();
                Box::pin(end.then(move |(), act, _| {
                    act.recording = record;
                    alarm(act)
                }))
            }
            None => alarm(self),
        }
    }

    /// A deposit or pickup must finish within the deposit timeout, by the application's clock.
    /// A real timer fires it in production; `FireDueTimers` fires it once the clock has passed
    /// `due_at` (tests move the clock instead of waiting).
    pub(super) fn door_timer(&self, number: i32, parcel_id: String, ctx: &mut Context<Self>) -> DoorTimer {
        let secs = self.deps.settings.deposit_timeout_secs;
        let due_at = self.deps.clock.now()
            + chrono::Duration::try_seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
                .unwrap_or(chrono::Duration::days(365));
        let handle = ctx.run_later(Duration::from_secs(secs), move |act, ctx| {
            if let Some(work) = act.door_timed_out(number, parcel_id, ctx) {
                ctx.wait(work);
            }
        });
        DoorTimer { handle, due_at }
    }

    /// A door session's time is up. If it is still the session for `parcel_id`, a deposit is
    /// cancelled; a door left open is reported as a fault. Returns the transaction that does it,
    /// for the caller to run before anything else reaches this actor.
    pub(super) fn door_timed_out(
        &mut self,
        number: i32,
        parcel_id: String,
        ctx: &mut Context<Self>,
    ) -> Option<ResponseActFuture<Self, ()>> {
        let matches = self.doors.get(&number).and_then(DoorSession::parcel_id) == Some(parcel_id.as_str());
        if !matches {
            return None;
        }
        if let Some(reported) = self.awaiting_boot.get_mut(&number) {
            // Interrupted by a restart and the device has not booted since: the parcel may
            // be inside or not. Not cancelled: out of service for a person to check, and the
            // session waits for the boot that decides it.
            if !std::mem::replace(reported, true) {
                self.report_outcome_unknown(number, ctx);
            }
            return None;
        }
        let door = self.doors.remove(&number)?;
        let me = self.me.clone()?;
        let db = self.deps.db.clone();
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
                    crate::workflows::pickups::record(
                        c,
                        &me,
                        &pid,
                        "pickup_timed_out",
                        json!({"compartment": number}),
                    )?;
                }
                if opened {
                    crate::workflows::hardware::fault(
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
        Some(Box::pin(work.into_actor(self).map(move |res, act, ctx| match res {
            Ok(status) => act.set_slot(number, status),
            Err(e) => {
                tracing::error!(locker = %act.id, error = ?e, "door timeout handling failed; restarting");
                ctx.stop();
            }
        })))
    }

    pub(super) fn report_outcome_unknown(&mut self, number: i32, ctx: &mut Context<Self>) {
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
                    .transaction_as(move |c| crate::workflows::interrupted::outcome_unknown(c, &me, &session))
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = ?e, "could not record an interrupted session's unknown outcome");
                }
            }
            .into_actor(self),
        );
    }
}
