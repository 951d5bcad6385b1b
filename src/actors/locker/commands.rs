//! What carriers, the admin API and the timeout actor ask of a locker outside a device call:
//! pre-advice, cancelling a parcel, a collection code, a new pickup code, a reservation expiring.

use actix::prelude::*;
use serde_json::{json, Value};

use super::LockerActor;
use crate::actors::messages::*;
use crate::domain::booking::{self, Rejection};
use crate::domain::CompartmentStatus;
use crate::error::AppError;
use crate::workflows::carrier_events::{Cancelled, CollectionIssued};
use crate::workflows::deposits;

impl Handler<PreAdviseParcel> for LockerActor {
    type Result = AtomicResponse<Self, Result<crate::workflows::carrier_events::PreAdviceOutcome, AppError>>;

    fn handle(&mut self, msg: PreAdviseParcel, _: &mut Context<Self>) -> Self::Result {
        let slots = self.slots.clone();
        let busy = self.busy();
        let refused = if self.gone_too_long() {
            Some(Rejection::LockerUnavailable)
        } else if self.me.as_ref().is_some_and(|me| !me.allows(&msg.advice.carrier_id)) {
            Some(Rejection::CarrierNotAllowed)
        } else {
            None
        };
        if let Some(why) = refused {
            let e = AppError::Conflict {
                code: why.as_str(),
                message: why.message().into(),
            };
            return AtomicResponse::new(Box::pin(fut::ready(Err(e))));
        }
        let advice = msg.advice;
        let key = self.deps.key.clone();
        AtomicResponse::new(self.db_op(
            move |c, me| {
                let outcome = crate::workflows::carrier_events::pre_advise(c, me, &key, &advice, &slots, &busy)?;
                crate::db::inbound::remember(c, &advice.carrier_id, &advice.event_id, 202, &json!(outcome))?;
                Ok(outcome)
            },
            |outcome, act, ctx| {
                if let Some(n) = outcome.compartment {
                    act.set_slot(n, CompartmentStatus::Reserved);
                    act.sync_list(ctx);
                }
                Ok(outcome)
            },
        ))
    }
}

impl LockerActor {
    /// Whether the locker has been offline for longer than bookings allow
    /// (`booking_offline_grace_secs`): a reservation made now could not reach it in time.
    fn gone_too_long(&self) -> bool {
        let secs = i64::try_from(self.deps.settings.booking_offline_grace_secs).unwrap_or(i64::MAX);
        let grace = chrono::Duration::try_seconds(secs).unwrap_or(chrono::Duration::MAX);
        self.offline_since
            .is_some_and(|t| self.deps.clock.now().signed_duration_since(t) > grace)
    }
}

impl Handler<CheckAvailability> for LockerActor {
    type Result = ResponseActFuture<Self, Result<i32, Rejection>>;

    fn handle(&mut self, msg: CheckAvailability, _: &mut Context<Self>) -> Self::Result {
        let Some(me) = self.me.as_ref().filter(|_| !self.gone_too_long()) else {
            return Box::pin(fut::ready(Err(Rejection::LockerUnavailable)));
        };
        if !me.allows(&msg.carrier_id) {
            return Box::pin(fut::ready(Err(Rejection::CarrierNotAllowed)));
        }
        let has_quota = me.quota_carriers.contains(&msg.carrier_id);
        let (db, locker_id, carrier_id) = (self.deps.db.clone(), me.locker_id.clone(), msg.carrier_id.clone());
        // What the carrier holds is in the database; read only for a carrier with a quota here.
        let read = async move {
            if !has_quota {
                return Ok(None);
            }
            db.read(move |c| Ok(crate::db::quotas::quota(c, &locker_id, &carrier_id, true)?))
                .await
        };
        Box::pin(read.into_actor(self).map(move |quota, act, _| {
            let quota = quota.map_err(|e| {
                tracing::warn!(locker = %act.id, error = %e, "a pre-check could not read the carrier's quota");
                Rejection::LockerUnavailable
            })?;
            booking::availability_within(
                &msg.carrier_id,
                msg.size,
                msg.needs_accessible,
                &act.slots,
                &act.busy(),
                quota
                    .as_ref()
                    .map(|(limits, in_use)| crate::domain::booking::Quota { limits, in_use }),
            )
        }))
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
                let freed = crate::workflows::carrier_events::cancel(c, &msg.parcel_id, &actor, &msg.reason)?;
                let body = json!(Cancelled {
                    parcel_id: msg.parcel_id.clone(),
                    state: "cancelled".into(),
                    released_compartment: freed,
                });
                crate::db::inbound::remember(c, &msg.carrier_id, &msg.event_id, 200, &body)?;
                Ok((freed, body))
            },
            |(freed, body), act, ctx| {
                if let Some(n) = freed {
                    act.set_slot(n, CompartmentStatus::Free);
                    act.sync_list(ctx);
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
        let clock = self.deps.clock.clone();
        AtomicResponse::new(self.db_op(
            move |c, me| {
                let actor = format!("carrier:{}", msg.carrier_id);
                let (code, number) = crate::workflows::carrier_events::issue_collection_code(
                    c,
                    me,
                    &key,
                    &msg.parcel_id,
                    len,
                    &actor,
                    clock.now(),
                )?;
                let issued = |collection_code, note: Option<&str>| {
                    json!(CollectionIssued {
                        parcel_id: msg.parcel_id.clone(),
                        locker_id: me.locker_id.clone(),
                        compartment: number,
                        collection_code,
                        note: note.map(str::to_string),
                    })
                };
                let body = issued(Some(code), None);
                // The code is the carrier's to keep: what is remembered for a replay omits it.
                let remembered = issued(None, Some("already issued; request a new code with a new event id"));
                crate::db::inbound::remember(c, &msg.carrier_id, &msg.event_id, 200, &remembered)?;
                Ok(body)
            },
            |body, act, ctx| {
                act.sync_list(ctx);
                Ok(body)
            },
        ))
    }
}

impl Handler<ResendCode> for LockerActor {
    type Result = AtomicResponse<Self, Result<String, AppError>>;

    fn handle(&mut self, msg: ResendCode, _: &mut Context<Self>) -> Self::Result {
        // The new code's list entry reaches a 1.1 device with the sync that follows.
        let key = self.deps.key.clone();
        let len = self.deps.settings.pickup_code_length;
        let grace = self.deps.clock.hours(deposits::QR_TOKEN_GRACE_HOURS);
        AtomicResponse::new(self.db_op(
            move |c, me| deposits::reissue_code(c, me, &key, len, grace, &msg.parcel_id, &msg.actor),
            |id, act, ctx| {
                act.sync_list(ctx);
                Ok(id)
            },
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
                    crate::workflows::expiry::expire_reservation(c, me, &due)
                },
                |freed, act, ctx| {
                    if let Some(n) = freed {
                        act.set_slot(n, CompartmentStatus::Free);
                        act.sync_list(ctx);
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
