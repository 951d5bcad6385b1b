//! Admin changes to what a locker actor holds in memory: compartments, sections, the locker
//! itself and its device credential. Each goes through the actor's mailbox like a device call
//! (`AtomicResponse`: nothing else runs meanwhile), is committed, and is applied to the actor's
//! memory before the administrator is answered. So "takes effect on the next allocation" is
//! true: a `StartDeposit` that arrives after the answer sees the change, and one that arrived
//! before it finished first.

use actix::prelude::*;
use serde_json::{json, Value};

use super::LockerActor;
use crate::actors::messages::{
    AddCompartments, DeleteSection, Detach, PutSection, RotateCredential, SetAllowedCarriers, SetQuota, ToDevice,
    UpdateCompartment, UpdateLocker,
};
use crate::db::lockers::LockerCtx;
use crate::db::lockers::{self, CompartmentChanges, Locker, NewCompartment};
use crate::db::{carriers, locker_carriers, quotas, DbConn};
use crate::domain::allocation::Slot;
use crate::domain::partition;
use crate::domain::CompartmentStatus;
use crate::error::AppError;

/// What a device session must present to attach: the locker's current credential, while the
/// locker is active. The connect handler checks the same against the database; this closes the
/// gap between that check and the attach, during which a rotation may commit.
#[derive(Debug, Clone)]
pub(super) struct DeviceAuth {
    credential_hash: String,
    active: bool,
}

impl DeviceAuth {
    pub(super) fn of(l: &Locker) -> Self {
        Self {
            credential_hash: l.credential_hash.clone(),
            active: l.active,
        }
    }
}

type AdminReply<T> = AtomicResponse<LockerActor, Result<T, AppError>>;

/// A row that must exist for the change: diesel's `NotFound` names what is missing.
fn named<T>(r: diesel::QueryResult<T>, what: &str) -> Result<T, AppError> {
    r.map_err(|e| match e {
        diesel::result::Error::NotFound => AppError::not_found(format!("{what} not found")),
        other => other.into(),
    })
}

impl LockerActor {
    /// Takes the compartments as the database has them, keeping compartments with a door
    /// session in progress reserved (their status in the database may still say free).
    pub(super) fn adopt_slots(&mut self, slots: Vec<Slot>) {
        self.slots = slots;
        self.reserve_held_slots();
    }

    /// Marks reserved, in memory, every compartment whose door session holds a parcel.
    pub(super) fn reserve_held_slots(&mut self) {
        let held: Vec<i32> = self
            .doors
            .iter()
            .filter(|(_, d)| d.parcel_id().is_some())
            .map(|(n, _)| *n)
            .collect();
        for n in held {
            self.set_slot(n, CompartmentStatus::Reserved);
        }
    }

    /// Whether a session authenticated with this credential hash may attach. Before the first
    /// load (there is none: loading runs before any message), the connect handler's check stands.
    pub(super) fn admits(&self, credential_hash: &str) -> bool {
        self.auth
            .as_ref()
            .is_none_or(|a| a.active && a.credential_hash == credential_hash)
    }

    /// Closes the live device session (credential rotated, locker deactivated) with 1008.
    fn revoke_session(&mut self, ctx: &mut Context<Self>) {
        if let Some((id, session)) = self.session.clone() {
            session.do_send(ToDevice::Revoked);
            // Detach records the disconnection, as for any session that ends.
            <Self as Handler<Detach>>::handle(self, Detach { session_id: id }, ctx);
        }
    }

    /// Runs an admin change in one transaction; once it commits, the actor adopts the
    /// compartments as they now are and `then` applies the rest, before the answer.
    fn admin_op<T, R, W, M>(&self, work: W, then: M) -> AdminReply<R>
    where
        T: Send + 'static,
        R: 'static,
        W: FnOnce(&mut DbConn, &LockerCtx) -> Result<T, AppError> + Send + 'static,
        M: FnOnce(T, &mut Self, &mut Context<Self>) -> R + 'static,
    {
        let id = self.id.clone();
        AtomicResponse::new(self.db_op(
            move |c, me| {
                let t = work(c, me)?;
                Ok((t, lockers::slots(c, &id)?))
            },
            move |(t, slots), act, ctx| {
                act.adopt_slots(slots);
                Ok(then(t, act, ctx))
            },
        ))
    }
}

impl Handler<AddCompartments> for LockerActor {
    type Result = AdminReply<Vec<lockers::Compartment>>;

    fn handle(&mut self, msg: AddCompartments, _: &mut Context<Self>) -> Self::Result {
        self.admin_op(
            move |c, me| {
                let id = &me.locker_id;
                let existing = lockers::compartments_of(c, id)?;
                let offset = if msg.after_highest {
                    lockers::max_compartment_number(c, id)?
                } else {
                    0
                };
                let new: Vec<NewCompartment> = msg
                    .compartments
                    .iter()
                    .map(|n| NewCompartment {
                        number: n.number + offset,
                        ..*n
                    })
                    .collect();
                if existing.len() + new.len() > msg.max_total {
                    return Err(AppError::invalid(format!(
                        "a locker holds at most {} compartments",
                        msg.max_total
                    )));
                }
                if let Some(dup) = new.iter().find(|n| existing.iter().any(|e| e.number == n.number)) {
                    return Err(AppError::Conflict {
                        code: "duplicate_compartment",
                        message: format!("compartment {} already exists at this locker", dup.number),
                    });
                }
                lockers::insert_compartments(c, id, &new)?;
                let numbers: Vec<i32> = new.iter().map(|n| n.number).collect();
                Ok(lockers::compartments_of(c, id)?
                    .into_iter()
                    .filter(|c| numbers.contains(&c.number))
                    .collect::<Vec<_>>())
            },
            |created, _, _| created,
        )
    }
}

impl Handler<UpdateCompartment> for LockerActor {
    type Result = AdminReply<lockers::Compartment>;

    fn handle(&mut self, msg: UpdateCompartment, _: &mut Context<Self>) -> Self::Result {
        self.admin_op(
            move |c, me| {
                let id = &me.locker_id;
                let number = msg.number;
                let current = named(
                    lockers::compartment_by_number(c, id, number),
                    &format!("compartment {number}"),
                )?;
                let mut changes = CompartmentChanges {
                    size: msg.size.map(|s| s.as_str().to_string()),
                    accessible: msg.accessible,
                    ..Default::default()
                };
                match msg.in_service {
                    Some(false) => {
                        changes.status = Some(CompartmentStatus::OutOfService.as_str().into());
                        if current.fault.is_none() {
                            changes.fault = Some(Some("taken out of service by an administrator".into()));
                        }
                    }
                    Some(true) => {
                        changes.status = Some(lockers::status_from_parcels(c, &current.id)?.as_str().into());
                        changes.fault = Some(None);
                        crate::db::faults::resolve_faults(c, id, number)?;
                    }
                    None => {}
                }
                Ok(lockers::update_compartment(c, id, number, changes)?)
            },
            |updated, _, _| updated,
        )
    }
}

impl Handler<PutSection> for LockerActor {
    type Result = AdminReply<lockers::Section>;

    fn handle(&mut self, msg: PutSection, _: &mut Context<Self>) -> Self::Result {
        self.admin_op(
            move |c, me| {
                let id = &me.locker_id;
                named(carriers::get(c, &msg.carrier_id), "carrier")?;
                let existing: Vec<i32> = lockers::compartments_of(c, id)?.iter().map(|c| c.number).collect();
                if let Some(missing) = msg.compartments.iter().find(|n| !existing.contains(n)) {
                    // Which numbers exist is the locker's state, not a rule of the body: a conflict.
                    return Err(AppError::Conflict {
                        code: "unknown_compartment",
                        message: format!("compartment {missing} does not exist at this locker"),
                    });
                }
                let occupants = lockers::occupants(c, id)?;
                let in_the_way = partition::in_the_way(&msg.carrier_id, &msg.compartments, &occupants);
                if !in_the_way.is_empty() {
                    let numbers: Vec<String> = in_the_way.iter().map(|o| o.compartment.to_string()).collect();
                    return Err(AppError::ConflictWith {
                        code: "compartments_in_use",
                        message: format!(
                            "compartments {} hold another carrier's parcels; leave them out or wait until the parcels leave",
                            numbers.join(", ")
                        ),
                        details: json!({ "parcels": in_the_way }),
                    });
                }
                Ok(lockers::put_section(
                    c,
                    id,
                    &msg.carrier_id,
                    msg.exclusive,
                    &msg.compartments,
                )?)
            },
            |section, _, _| section,
        )
    }
}

impl Handler<DeleteSection> for LockerActor {
    type Result = AdminReply<()>;

    fn handle(&mut self, msg: DeleteSection, _: &mut Context<Self>) -> Self::Result {
        self.admin_op(
            move |c, me| named(lockers::delete_section(c, &me.locker_id, &msg.carrier_id), "section"),
            |(), _, _| (),
        )
    }
}

impl Handler<UpdateLocker> for LockerActor {
    type Result = AdminReply<Locker>;

    fn handle(&mut self, msg: UpdateLocker, _: &mut Context<Self>) -> Self::Result {
        self.admin_op(
            move |c, me| named(lockers::update(c, &me.locker_id, msg.changes), "locker"),
            |locker, act, ctx| {
                // Notifications name the locker: they use the new name from now on.
                if let Some(me) = act.me.as_mut() {
                    me.locker_name = locker.name.clone();
                }
                act.auth = Some(DeviceAuth::of(&locker));
                if !locker.active {
                    act.revoke_session(ctx);
                }
                locker
            },
        )
    }
}

impl Handler<RotateCredential> for LockerActor {
    type Result = AdminReply<String>;

    fn handle(&mut self, _: RotateCredential, _: &mut Context<Self>) -> Self::Result {
        self.admin_op(
            move |c, me| {
                let credential = named(lockers::rotate_credential(c, &me.locker_id), "locker")?;
                Ok((credential, named(lockers::get(c, &me.locker_id), "locker")?))
            },
            |(credential, locker), act, ctx| {
                act.auth = Some(DeviceAuth::of(&locker));
                act.revoke_session(ctx);
                credential
            },
        )
    }
}

impl Handler<SetAllowedCarriers> for LockerActor {
    // Atomic, like a quota: an allocation runs before it or after it, never across it.
    type Result = AtomicResponse<Self, Result<Vec<String>, AppError>>;

    fn handle(&mut self, msg: SetAllowedCarriers, _: &mut Context<Self>) -> Self::Result {
        AtomicResponse::new(self.db_op(
            move |c, me| {
                let mut ids = msg.carriers;
                ids.sort();
                ids.dedup();
                for id in &ids {
                    named(carriers::get(c, id), &format!("carrier {id}"))?;
                }
                locker_carriers::set(c, &me.locker_id, &ids)?;
                Ok(ids)
            },
            |ids, act, _| {
                if let Some(me) = act.me.as_mut() {
                    me.allowed_carriers = (!ids.is_empty()).then(|| ids.iter().cloned().collect());
                }
                Ok(ids)
            },
        ))
    }
}

impl Handler<SetQuota> for LockerActor {
    // Atomic: no allocation runs between counting what the carrier holds and setting the limit.
    type Result = AtomicResponse<Self, Result<(quotas::Limits, quotas::Limits), AppError>>;

    fn handle(&mut self, msg: SetQuota, _: &mut Context<Self>) -> Self::Result {
        let carrier_id = msg.carrier_id.clone();
        AtomicResponse::new(self.db_op(
            move |c, me| {
                named(carriers::get(c, &msg.carrier_id), "carrier")?;
                let used = quotas::in_use(c, &me.locker_id, &msg.carrier_id)?;
                let below: serde_json::Map<String, Value> = msg
                    .limits
                    .iter()
                    .filter_map(|(size, max)| {
                        let n = used.get(size).copied().unwrap_or(0);
                        (n > *max).then(|| (size.as_str().to_string(), json!(n)))
                    })
                    .collect();
                if !below.is_empty() {
                    return Err(AppError::ConflictWith {
                        code: "quota_below_use",
                        message: "the carrier holds more compartments than this quota allows; \
                                  raise it, or wait until its parcels leave"
                            .into(),
                        details: json!({ "in_use": below }),
                    });
                }
                quotas::replace(c, &me.locker_id, &msg.carrier_id, &msg.limits)?;
                Ok((msg.limits, used))
            },
            move |(limits, used), act, _| {
                if let Some(me) = act.me.as_mut() {
                    if limits.is_empty() {
                        me.quota_carriers.remove(&carrier_id);
                    } else {
                        me.quota_carriers.insert(carrier_id);
                    }
                }
                Ok((limits, used))
            },
        ))
    }
}
