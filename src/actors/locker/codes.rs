//! Codes typed or scanned at the kiosk: pickup codes and QR tokens, collection codes and
//! courier codes, checked against their lockouts, and the door session a found code opens.

use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};

use super::doors::DoorSession;
use super::{fail, refuse, LockerActor, Reply};
use crate::config::{SecondFactor, Settings};
use crate::credentials::ServerKey;
use crate::db::lockers::LockerCtx;
use crate::db::lockouts::{self, CodeKind};
use crate::db::{carriers, DbConn};
use crate::domain::lockout::{Policy, Started};
use crate::domain::second_factor;
use crate::protocol::messages::*;
use crate::protocol::DeviceError;
use crate::protocol::{ErrorCode, FrameError};
use crate::workflows::pickups::TakenBy;

/// What checking a code found.
pub(super) enum Checked<T> {
    Found(T),
    /// A lockout is running: the code was not checked.
    Locked(chrono::Duration),
    /// No match; with the lockout this miss started.
    Wrong(Option<(CodeKind, Started)>),
}

pub(super) fn lockout_policy(s: &Settings) -> Policy {
    let secs = |n: u64| chrono::Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 1000).min(10 * 365 * 86_400));
    Policy {
        attempts: s.pickup_attempts,
        window: secs(s.pickup_attempt_window_secs),
        base: secs(s.pickup_lockout_secs),
        max: secs(s.pickup_lockout_max_secs),
    }
}

pub(super) fn locked_out(left: chrono::Duration) -> DeviceError {
    let secs = left.num_seconds().max(1) as u64;
    refuse(
        ErrorCode::LockedOut,
        format!("too many wrong codes; try again in {secs} s"),
    )
    .with_retry(Duration::from_secs(secs))
}

/// The answer to a code that opened a compartment.
pub(super) fn pickup_open(parcel_id: &str, compartment: i32) -> Value {
    json!(PickupOpen {
        compartment,
        parcel_id: parcel_id.to_string()
    })
}

impl LockerActor {
    pub(super) fn identify_courier(&mut self, code: String) -> ResponseActFuture<Self, Reply> {
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

    pub(super) fn pickup(&mut self, p: PickupRequest) -> ResponseActFuture<Self, Reply> {
        let PickupRequest { by, second_factor } = p;
        match &by {
            // A QR token is unguessable (256 bits): it is never locked out and never counted, so
            // nobody's guessing at the keypad can keep a QR holder from their parcel.
            Pickup::QrToken(_) => self.open_by_code(TakenBy::Recipient, "QR code", None, move |c, me, key| {
                Ok(crate::workflows::pickups::find(c, me, key, &by)?)
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
                        let Some((pid, number)) = crate::workflows::pickups::find(c, me, key, &by)? else {
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

    pub(super) fn collect_return(&mut self, code: String) -> ResponseActFuture<Self, Reply> {
        self.open_by_code(
            TakenBy::Carrier,
            "collection code",
            Some(CodeKind::Collect),
            move |c, me, key| Ok(crate::workflows::pickups::find_collection(c, me, key, &code)?),
        )
    }

    /// Checks a code in one transaction. With a `kind`, the code is refused unchecked during a
    /// lockout, and a miss is counted (and may start a lockout) in the same transaction, so the
    /// count survives a restart. `find` may write: it runs only when no lockout is running.
    ///
    /// `answer` gives the device's answer to a found code when that answer reports a change: it
    /// is stored with the change, like `db_change` does, for a retry after a restart.
    pub(super) fn check_code<T, F, A>(
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
        let stored = record.clone();
        let retention = self.call_retention();
        let server_key = self.deps.key.clone();
        let clock = self.deps.clock.clone();
        let policy = lockout_policy(&self.deps.settings);
        let checked = self.db_op(
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
                        r.remember(c, &me.locker_id, &p.to_string(), retention)?;
                    }
                    return Ok(Checked::Found(found));
                }
                let Some((kind, mut st)) = counted else {
                    return Ok(Checked::Wrong(None));
                };
                // A retry of a call answered before (its code is spent now) is not a miss: it
                // gets that answer, and counts nothing.
                if let Some(r) = &record {
                    r.check(c, &me.locker_id)?;
                }
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
        );
        self.answered_before_wins(checked, stored)
    }

    /// Opens the compartment a code unlocks: a recipient's pickup code or QR token, or a
    /// carrier's collection code. Wrong codes of a counted `kind` count toward its lockout.
    pub(super) fn open_by_code<F>(
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
                    TakenBy::Recipient => crate::workflows::pickups::record(
                        c,
                        me,
                        &pid,
                        "pickup_opened",
                        json!({"compartment": number, "by": what}),
                    )?,
                    TakenBy::Carrier => crate::workflows::pickups::record(
                        c,
                        me,
                        &pid,
                        "collection_opened",
                        json!({"compartment": number}),
                    )?,
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
}
