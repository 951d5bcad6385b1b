//! Remote opens: the audited request, the server's `OpenCompartment` call to the device, and
//! the device's answer to it (or its silence).

use std::time::Duration;

use actix::prelude::*;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::doors::{DoorSession, RemoteDoor};
use super::LockerActor;
use crate::actors::messages::*;
use crate::db::remote_opens::{self, RemoteOpenRecord};
use crate::domain::remote_open::Outcome;
use crate::domain::CompartmentStatus;
use crate::error::AppError;
use crate::protocol::messages::*;
use crate::protocol::{Frame, FrameError};

/// A server call awaiting the device's answer: where the answer goes, the compartment opened,
/// the remote open it belongs to, and when it times out by the application's clock (dropping
/// it, as `FireDueTimers` does then, ends the wait with an unknown outcome).
pub(super) type PendingCall = (
    oneshot::Sender<Result<Value, FrameError>>,
    i32,
    RemoteDoor,
    chrono::NaiveDateTime,
);

impl Handler<DeviceAnswer> for LockerActor {
    type Result = ();

    fn handle(&mut self, msg: DeviceAnswer, ctx: &mut Context<Self>) {
        if self.list_answer(&msg.msg_id, &msg.answer, ctx) {
            return;
        }
        if let Some((tx, number, open, _)) = self.pending.remove(&msg.msg_id) {
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
    pub(super) fn ask_device_to_open(
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
        let secs = self.deps.settings.device_call_timeout_secs;
        let due_at = self.deps.clock.now()
            + chrono::Duration::try_seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
                .unwrap_or(chrono::Duration::days(365));
        self.pending.insert(call_id.clone(), (tx, number, open.clone(), due_at));
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
        let timeout = Duration::from_secs(secs);
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
                                                crate::workflows::hardware::fault(
                                                    c,
                                                    &me,
                                                    Some(number),
                                                    "open_outcome_unknown",
                                                    &detail,
                                                )
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
