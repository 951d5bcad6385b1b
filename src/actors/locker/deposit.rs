//! A driver's deposit from the kiosk: starting it (a compartment reserved), a parcel that does
//! not fit (a bigger one), and the driver cancelling. Closing the door is in `doors`.

use actix::prelude::*;
use serde_json::json;

use super::doors::DoorSession;
use super::{fail, refuse, LockerActor, Reply};
use crate::domain::kiosk::KioskRefusal;
use crate::domain::CompartmentStatus;
use crate::protocol::messages::*;
use crate::protocol::DeviceError;
use crate::protocol::{ErrorCode, FrameError};
use crate::workflows::deposits;

impl LockerActor {
    pub(super) fn start_deposit(&mut self, req: StartDeposit) -> ResponseActFuture<Self, Reply> {
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

    pub(super) fn deposit_by_id(&self, deposit_id: &str) -> Option<(i32, &DoorSession)> {
        self.doors
            .iter()
            .find(|(_, d)| matches!(d, DoorSession::Deposit { parcel_id, .. } if parcel_id == deposit_id))
            .map(|(n, d)| (*n, d))
    }

    pub(super) fn does_not_fit(&mut self, deposit_id: String) -> ResponseActFuture<Self, Reply> {
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
                        ctx.cancel_future(timer.handle);
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

    pub(super) fn cancel_deposit(
        &mut self,
        deposit_id: String,
        _: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Reply> {
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
}
