//! Sending a 1.1 device its local code list (`SendLocalList`, docs/protocol.md §15.8): after
//! its boot, and after every call that may have issued or voided a code. One sync at a time;
//! a change during a sync runs another after it.

use actix::prelude::*;
use serde_json::{json, Value};

use super::LockerActor;
use crate::actors::messages::ToDevice;
use crate::db::local_lists;
use crate::error::AppError;
use crate::protocol::messages::{ListEntry, SendLocalList};
use crate::protocol::{Frame, FrameError};
use crate::workflows::local_list as workflow;

/// What the server knows of a 1.1 device's list.
#[derive(Debug, Clone, Default)]
pub(super) struct ListState {
    /// The version the device holds (`None`: unknown, it gets a full list).
    pub device_version: Option<i64>,
    pub syncing: bool,
    /// Something changed while a sync ran.
    pub again: bool,
    /// `SendLocalList` calls awaiting the device's answer, with the version each sends.
    pub sent: Vec<(String, i64)>,
    /// Which boot this state belongs to: a sync started before a later boot is dropped.
    pub generation: u64,
    /// When the last sync settled (application clock).
    pub synced_at: Option<chrono::NaiveDateTime>,
}

/// How often a list is synced when nothing at the locker changes: courier entries expire (30
/// days) and a deactivated carrier's entry must go without waiting for a deposit.
const REFRESH_HOURS: i64 = 24;

/// Verifier batches made at once, server-wide: each Argon2id run takes its memory (19 MiB by
/// default), so many lockers syncing together (after a restart) must not take it all at once.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

impl LockerActor {
    /// Brings the device's list up to date, if this is a 1.1 session.
    pub(super) fn sync_list(&mut self, ctx: &mut Context<Self>) {
        let Some(state) = self.offline.as_mut().map(|s| &mut s.list) else {
            return;
        };
        if state.syncing {
            state.again = true;
            return;
        }
        state.syncing = true;
        state.again = false;
        // The version the device holds, or will once it takes the update on its way: a diff is
        // made from there, and a device that refuses it (`VersionMismatch`) gets the whole list.
        let device_version = state.sent.first().map(|(_, v)| *v).or(state.device_version);
        let generation = state.generation;
        let (db, key, id) = (self.deps.db.clone(), self.deps.key.clone(), self.id.clone());
        let kdf = self.deps.settings.offline_list_kdf();
        let now = self.deps.clock.now();
        let work = async move {
            let read_id = id.clone();
            let (head, sealed) = db
                .read(move |c| {
                    let head = local_lists::current(c, &read_id)?
                        .ok_or_else(|| AppError::internal("a 1.1 locker has no local list"))?;
                    Ok((head, local_lists::sealed(c, &read_id)?))
                })
                .await?;
            let (k, i) = (key.clone(), id.clone());
            let _slot = HASHING.acquire().await.map_err(|e| AppError::internal(e.to_string()))?;
            let verified =
                actix_web::rt::task::spawn_blocking(move || workflow::make_verifiers(&k, &i, &head, &kdf, sealed))
                    .await
                    .map_err(|e| AppError::internal(e.to_string()))?;
            db.transaction_as(move |c| workflow::settle(c, &key, &id, &verified, now, device_version))
                .await
        };
        ctx.spawn(work.into_actor(self).map(move |res, act, ctx| {
            // A device that booted again meanwhile has a new list state: this update is not for
            // it. But this sync may have committed verifiers its own sync did not see yet (it
            // read them still sealed): that one syncs again, and sends them.
            if act.offline.as_ref().is_none_or(|s| s.list.generation != generation) {
                if res.is_ok() {
                    act.sync_list(ctx);
                }
                return;
            }
            let mut more = false;
            match res {
                Ok(settled) => {
                    more = settled.more;
                    if let Some(s) = act.offline.as_mut() {
                        s.list.synced_at = Some(act.deps.clock.now());
                    }
                    if let Some(update) = settled.update {
                        act.send_list(wire(update, kdf));
                    }
                }
                Err(e) => {
                    tracing::warn!(locker = %act.id, error = %e, "local code list not synced; the next change retries")
                }
            }
            let again = act.offline.as_mut().is_some_and(|s| {
                s.list.syncing = false;
                std::mem::take(&mut s.list.again) || more
            });
            if again {
                act.sync_list(ctx);
            }
        }));
    }

    /// At a heartbeat: syncs a list that has not been synced for [`REFRESH_HOURS`].
    pub(super) fn refresh_list(&mut self, ctx: &mut Context<Self>) {
        let now = self.deps.clock.now();
        let due = self.deps.clock.hours(REFRESH_HOURS);
        let stale = self
            .offline
            .as_ref()
            .is_some_and(|s| s.list.synced_at.is_some_and(|t| now - t >= due));
        if stale {
            self.sync_list(ctx);
        }
    }

    fn send_list(&mut self, update: SendLocalList) {
        let Some((_, session)) = &self.session else { return };
        let Some(state) = self.offline.as_mut().map(|s| &mut s.list) else {
            return;
        };
        self.next_call += 1;
        let call_id = format!("srv-{}", self.next_call);
        // Only the latest call's answer matters; older ones are forgotten (bounded).
        state.sent.truncate(3);
        state.sent.insert(0, (call_id.clone(), update.version));
        session.do_send(ToDevice::Text(
            Frame::Call {
                id: call_id,
                action: "SendLocalList".into(),
                payload: json!(update),
            }
            .to_text(),
        ));
    }

    /// The device's answer to a `SendLocalList`, if `msg_id` is one. `Accepted` records the
    /// version it holds; `VersionMismatch` (its base was not ours) sends the full list.
    pub(super) fn list_answer(
        &mut self,
        msg_id: &str,
        answer: &Result<Value, FrameError>,
        ctx: &mut Context<Self>,
    ) -> bool {
        let Some(state) = self.offline.as_mut().map(|s| &mut s.list) else {
            return false;
        };
        let Some(pos) = state.sent.iter().position(|(id, _)| id == msg_id) else {
            return false;
        };
        let (_, version) = state.sent.remove(pos);
        let status = answer
            .as_ref()
            .ok()
            .and_then(|v| v.get("status"))
            .and_then(Value::as_str);
        match status {
            Some("Accepted") => {
                state.device_version = Some(version);
                state.sent.retain(|(_, v)| *v > version);
            }
            Some("VersionMismatch") => {
                // Whatever else is on its way was made from the same wrong base.
                state.device_version = None;
                state.sent.clear();
                self.sync_list(ctx);
            }
            _ => tracing::warn!(locker = %self.id, ?answer, "the locker did not take its local code list"),
        }
        true
    }
}

impl Handler<crate::actors::messages::SyncLocalList> for LockerActor {
    type Result = ();

    fn handle(&mut self, _: crate::actors::messages::SyncLocalList, ctx: &mut Context<Self>) {
        self.sync_list(ctx);
    }
}

/// The `SendLocalList` payload of an update.
fn wire(u: workflow::ListUpdate, kdf: crate::offline_list::Kdf) -> SendLocalList {
    SendLocalList {
        version: u.version,
        update: if u.base.is_some() { "differential" } else { "full" }.into(),
        base_version: u.base,
        list_salt: u.salt,
        kdf,
        upsert: u
            .upsert
            .into_iter()
            .map(|e| ListEntry {
                entry: e.id,
                kind: e.kind,
                compartment: e.compartment,
                tag: u8::try_from(e.tag).unwrap_or_default(),
                verifier: e.verifier,
                expires_at: e.expires_at.and_utc(),
            })
            .collect(),
        remove: u.remove,
    }
}
