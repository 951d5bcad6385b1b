//! A 1.1 device's offline side (docs/protocol.md §15): what its boot says of its journal and
//! clock, and `ReplayJournal`.

use actix::prelude::*;
use serde_json::json;

use super::{fail, refuse, LockerActor, Reply};
use crate::domain::CompartmentStatus;
use crate::protocol::messages::{JournalState, ReplayJournal};
use crate::protocol::{DeviceError, ErrorCode, FrameError};
use crate::workflows::journal::{AfterReplay, Replayed, Slot};

/// What the server keeps of a 1.1 session between its boot and its replay.
#[derive(Debug, Clone, Default)]
pub(super) struct OfflineSession {
    /// Server clock minus device clock, measured at boot: corrects the journal's times.
    pub clock_offset: chrono::Duration,
    /// The boot's reconciliation, waiting for the journal (`None`: it ran at boot).
    pub after_replay: Option<AfterReplay>,
    /// The device's local code list.
    pub list: super::local_list::ListState,
    /// The last journal event the device held at boot: nothing beyond it can have happened
    /// offline in this session.
    pub journal_end: i64,
}

/// Largest sequence number a device may report (JSON numbers stay exact below 2^53).
const MAX_SEQ: i64 = 1 << 53;

/// Checks what a booting device says of its journal: `next_seq` from 1, `pending` events
/// below it.
pub(super) fn check_journal_state(j: &JournalState) -> Result<(), DeviceError> {
    if !(1..=MAX_SEQ).contains(&j.next_seq) || j.pending < 0 || j.pending >= j.next_seq {
        return Err(refuse(
            ErrorCode::ProtocolError,
            "offline.journal: next_seq must be 1 to 2^53 and pending 0 to next_seq - 1",
        ));
    }
    Ok(())
}

/// The earliest and latest time a device may give (its boot clock, a journaled event): outside
/// them it is a broken clock, refused before any arithmetic on it.
fn sane_time(t: &chrono::DateTime<chrono::Utc>) -> bool {
    use chrono::Datelike;
    (2000..=2200).contains(&t.year())
}

/// Refuses a device clock that cannot be right.
pub(super) fn check_clock(t: &chrono::DateTime<chrono::Utc>) -> Result<(), DeviceError> {
    if sane_time(t) {
        Ok(())
    } else {
        Err(refuse(
            ErrorCode::ProtocolError,
            "offline.clock must be a time between 2000 and 2200",
        ))
    }
}

/// Checks a replay's events before anything is applied: sequence numbers in range and not
/// beyond the journal the device reported at boot, times that a clock could give.
fn check_events(r: &ReplayJournal, journal_end: i64) -> Result<(), DeviceError> {
    for e in &r.events {
        if !(1..=journal_end.min(MAX_SEQ)).contains(&e.seq) {
            return Err(refuse(
                ErrorCode::ProtocolError,
                format!(
                    "journal event {} is not in 1 to {journal_end}, the journal reported at boot",
                    e.seq
                ),
            ));
        }
        if !sane_time(&e.at) {
            return Err(refuse(
                ErrorCode::ProtocolError,
                format!("journal event {}: at must be a time between 2000 and 2200", e.seq),
            ));
        }
    }
    Ok(())
}

impl LockerActor {
    /// `ReplayJournal`: applies what the device journaled offline, once per event.
    pub(super) fn replay_journal(&mut self, r: ReplayJournal) -> ResponseActFuture<Self, Reply> {
        let Some(session) = &self.offline else {
            return fail(refuse(
                ErrorCode::ProtocolError,
                "ReplayJournal needs a 1.1 boot (BootNotification with an offline object)",
            ));
        };
        if let Err(e) = check_events(&r, session.journal_end) {
            return fail(e);
        }
        let offset = session.clock_offset;
        let after = session.after_replay.clone();
        let busy = self.busy();
        let key = self.deps.key.clone();
        let now = self.deps.clock.now();
        let guessing = super::codes::lockout_policy(&self.deps.settings);
        let deposit = self.deps.settings.deposit_policy(self.deps.clock.clone());
        self.db_op(
            move |c, me| -> Result<Replayed, DeviceError> {
                let after = after.as_ref().map(|a| (a, &busy));
                let times = crate::workflows::journal::Times {
                    offset,
                    now,
                    guessing,
                    deposit,
                };
                Ok(crate::workflows::journal::replay(c, me, &key, &r.events, times, after)?)
            },
            |replayed, act, _| match replayed {
                Replayed::Gap { expected_seq } => Err(DeviceError::Refused(
                    FrameError::new(
                        ErrorCode::JournalGap,
                        format!("the journal continues at {expected_seq}; resend from there"),
                    )
                    .with_details(json!({"expected_seq": expected_seq})),
                )),
                Replayed::Applied {
                    applied_through,
                    results,
                    slots,
                    reconciled,
                } => {
                    for slot in slots {
                        match slot {
                            Slot::Freed(n) => act.set_slot(n, CompartmentStatus::Free),
                            Slot::Occupied(n) => act.set_slot(n, CompartmentStatus::Occupied),
                        }
                    }
                    let mut out = json!({"applied_through": applied_through, "results": results});
                    if let Some(found) = reconciled {
                        for d in &found {
                            act.set_slot(d.compartment, CompartmentStatus::OutOfService);
                        }
                        if let Some(s) = act.offline.as_mut() {
                            s.after_replay = None;
                        }
                        out["discrepancies"] = json!(found);
                    }
                    Ok(out)
                }
            },
        )
    }

    /// A device that booted with journal events the server has not applied serves nobody
    /// until it has replayed them (§15.4): what it did offline comes first.
    pub(super) fn replay_first(&self) -> Result<(), DeviceError> {
        match self.offline.as_ref().and_then(|s| s.after_replay.as_ref()) {
            Some(a) => Err(refuse(
                ErrorCode::ProtocolError,
                format!("replay the journal through {} first (ReplayJournal)", a.through),
            )),
            None => Ok(()),
        }
    }
}
