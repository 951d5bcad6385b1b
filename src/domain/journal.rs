//! A 1.1 locker's offline journal (docs/protocol.md §15.4): which events of a replay are
//! new, what a journaled pickup does to its parcel, and which time it happened at.
//!
//! The server applies each event at most once, in sequence order, without gaps. These are the
//! rules; `workflows::journal` applies them in one transaction per call.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::parcel::ParcelState;

/// Most events one `ReplayJournal` call may carry (the frame limit, 16 KiB, usually binds first).
pub const MAX_EVENTS_PER_CALL: usize = 100;

/// One journaled event as the device sends it. Unknown fields are refused, so a device that
/// sends something this server would silently drop finds out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalEvent {
    /// Per locker, from 1, never reused.
    pub seq: i64,
    /// When it happened, by the device's clock (RFC 3339).
    pub at: DateTime<Utc>,
    /// `pickup`, `collection`, `deposit` or `wrong_code`; the other kinds of the design
    /// (docs/design/protocol-1.1.md §5.1) are answered `rejected` by this server.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compartment: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<PickupBy>,
    /// For a `wrong_code`: which code was wrong, `pickup` (the default), `collection` or `courier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_kind: Option<String>,
}

/// Which kind of code a journaled wrong code was typed as: each counts toward its own
/// allowance, as online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrongCodeOf {
    Pickup,
    Collection,
    Courier,
}

/// What a journaled event asks of the server, once it is known to be one this server applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened<'a> {
    /// The recipient's parcel left compartment `compartment`, opened for this signed token.
    PickupByQr { compartment: i32, token: &'a str },
    /// The recipient's parcel left compartment `compartment`, opened for a typed code (and
    /// factor) that matched this local list entry.
    PickupByEntry { compartment: i32, entry: &'a str },
    /// An expired parcel left compartment `compartment`, opened for a carrier's collection code
    /// that matched this entry (the driver identified with their courier code first).
    Collection { compartment: i32, entry: &'a str },
    /// A pre-advised parcel was put into its reserved compartment `compartment`, opened for the
    /// tracking number and courier code that matched this entry.
    Deposit { compartment: i32, entry: &'a str },
    /// A typed code that matched no entry: counted toward the locker's lockout of its kind.
    WrongCode(WrongCodeOf),
}

impl JournalEvent {
    /// What the event asks, or why this server cannot apply it (its `rejected` reason).
    pub fn happened(&self) -> Result<Happened<'_>, &'static str> {
        let entry = match &self.by {
            Some(PickupBy::Entry(entry)) => Some(entry.as_str()),
            _ => None,
        };
        if self.kind != "wrong_code" && self.code_kind.is_some() {
            return Err("only a wrong code names a code kind");
        }
        match (self.kind.as_str(), self.compartment, &self.by) {
            ("pickup", Some(compartment), Some(PickupBy::QrToken(token))) => Ok(Happened::PickupByQr {
                compartment,
                token: token.as_str(),
            }),
            ("pickup", Some(compartment), Some(PickupBy::Entry(entry))) => Ok(Happened::PickupByEntry {
                compartment,
                entry: entry.as_str(),
            }),
            ("pickup", _, _) => Err("a pickup names its compartment and the QR token or list entry that opened it"),
            ("collection", Some(compartment), Some(PickupBy::Entry(_))) => Ok(Happened::Collection {
                compartment,
                entry: entry.unwrap_or_default(),
            }),
            ("collection", _, _) => Err("a collection names its compartment and the list entry that opened it"),
            ("deposit", Some(compartment), Some(PickupBy::Entry(_))) => Ok(Happened::Deposit {
                compartment,
                entry: entry.unwrap_or_default(),
            }),
            ("deposit", _, _) => Err("a deposit names its compartment and the list entry that opened it"),
            ("wrong_code", _, None) => match self.code_kind.as_deref() {
                None | Some("pickup") => Ok(Happened::WrongCode(WrongCodeOf::Pickup)),
                Some("collection") => Ok(Happened::WrongCode(WrongCodeOf::Collection)),
                Some("courier") => Ok(Happened::WrongCode(WrongCodeOf::Courier)),
                Some(_) => Err("a wrong code is of a pickup, collection or courier code"),
            },
            ("wrong_code", _, Some(_)) => Err("a wrong code names nothing it opened"),
            _ => Err("this server applies journaled pickups, collections, deposits and wrong codes only"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PickupBy {
    /// The signed token the recipient scanned, whole.
    QrToken(String),
    /// The local list entry the typed code and factor matched.
    Entry(String),
}

/// Which events of a call are new, or why none may be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Events at or below `applied_through` are answered with their stored outcomes; the rest
    /// (`fresh`, indexes into the call) are applied in order.
    Apply { fresh: std::ops::Range<usize> },
    /// Not the next sequence numbers: the device resends from `expected_seq`.
    Gap { expected_seq: i64 },
}

/// Plans a call: its sequence numbers must run one by one, and the first one above
/// `applied_through` must be the next. Anything else (a gap, a duplicate, an out-of-order
/// number) applies nothing and asks for the journal from the next number on.
pub fn plan(seqs: &[i64], applied_through: i64) -> Plan {
    let expected_seq = applied_through + 1;
    let gap = Plan::Gap { expected_seq };
    if seqs.first().is_some_and(|s| *s < 1) || seqs.windows(2).any(|w| w[0].checked_add(1) != Some(w[1])) {
        return gap;
    }
    let start = seqs.iter().position(|s| *s > applied_through).unwrap_or(seqs.len());
    if seqs.get(start).is_some_and(|s| *s != expected_seq) {
        return gap;
    }
    Plan::Apply {
        fresh: start..seqs.len(),
    }
}

/// When an event happened, on the server's clock: the device's time corrected by the offset
/// measured when it booted (server time minus device time), never later than `now` (a device
/// clock cannot put a pickup in the future) and never before `not_before` (the parcel was
/// deposited then; a pickup cannot precede it).
pub fn corrected_time(
    device_at: DateTime<Utc>,
    offset: chrono::Duration,
    now: NaiveDateTime,
    not_before: Option<NaiveDateTime>,
) -> NaiveDateTime {
    // Checked: an absurd offset or time (the caller refuses them; this never panics anyway)
    // counts as now.
    let t = device_at.naive_utc().checked_add_signed(offset).unwrap_or(now).min(now);
    not_before.map_or(t, |nb| t.max(nb))
}

/// What the server found when it applied an event (the result's `outcome`, and the journal row's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The parcel is picked up, at the event's time.
    PickedUp,
    /// The parcel had already left the locker (a remote open, a return, a cancellation): the
    /// event goes into its history only.
    AlreadyMoved,
    /// The event cannot be applied (see `reason`); counted as applied, and a fault for the operator.
    Rejected,
    /// Never replayed: the device lost it (its boot reported a journal starting past it).
    Lost,
    /// A wrong code, counted toward the locker's lockout at its own time.
    Counted,
    /// The expired parcel was collected for return, at the event's time.
    Returned,
    /// The pre-advised parcel was deposited, at the event's time.
    Deposited,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::PickedUp => "picked_up",
            Outcome::AlreadyMoved => "already_moved",
            Outcome::Rejected => "rejected",
            Outcome::Lost => "lost",
            Outcome::Counted => "counted",
            Outcome::Returned => "returned",
            Outcome::Deposited => "deposited",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::PickedUp,
            Self::AlreadyMoved,
            Self::Rejected,
            Self::Lost,
            Self::Counted,
            Self::Returned,
            Self::Deposited,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// A rule that decided an offline pickup, collection or deposit against what the server had
/// changed meanwhile (docs/protocol.md §15.6). The event stands in every case a conflict is
/// named: the door opened and the parcel left (or went in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conflict {
    /// The token used had been replaced by a resent code while the locker was offline.
    CodeRevoked,
    /// The parcel had expired (its return was requested) before the locker heard.
    AfterExpiry,
    /// The parcel's reservation had lapsed (expired) before the locker heard; the compartment
    /// was still free, so the deposit took it again.
    ReservationLapsed,
}

/// What the server holds of the parcel a journaled pickup names.
#[derive(Debug, Clone, Copy)]
pub struct ParcelNow<'a> {
    pub state: ParcelState,
    pub locker_id: Option<&'a str>,
    pub compartment: Option<i32>,
    /// Whether the token used is the parcel's current one.
    pub token_current: bool,
}

/// What a journaled pickup does to its parcel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickupVerdict {
    PickedUp { conflicts: Vec<Conflict> },
    AlreadyMoved,
}

/// Decides a journaled pickup at `locker_id`, compartment `number`, of a parcel in the state
/// `parcel` describes. A parcel still in that compartment (deposited, or expired with its return
/// not yet collected) is picked up, whatever changed on the server meanwhile; one that has moved
/// on stays where it is.
pub fn decide_pickup(parcel: &ParcelNow<'_>, locker_id: &str, number: i32) -> PickupVerdict {
    let here = parcel.locker_id == Some(locker_id) && parcel.compartment == Some(number);
    if !here || !matches!(parcel.state, ParcelState::Deposited | ParcelState::Expired) {
        return PickupVerdict::AlreadyMoved;
    }
    let mut conflicts = Vec::new();
    if !parcel.token_current {
        conflicts.push(Conflict::CodeRevoked);
    }
    if parcel.state == ParcelState::Expired {
        conflicts.push(Conflict::AfterExpiry);
    }
    PickupVerdict::PickedUp { conflicts }
}

/// Decides a journaled return collection: like a pickup, the parcel must still be in that
/// compartment, and expired (only an expired parcel has a collection code). The collection
/// stands whatever else changed; a collection code replaced meanwhile is `code_revoked`.
pub fn decide_collection(parcel: &ParcelNow<'_>, locker_id: &str, number: i32) -> PickupVerdict {
    let here = parcel.locker_id == Some(locker_id) && parcel.compartment == Some(number);
    if !here || parcel.state != ParcelState::Expired {
        return PickupVerdict::AlreadyMoved;
    }
    let conflicts = if parcel.token_current {
        Vec::new()
    } else {
        vec![Conflict::CodeRevoked]
    };
    PickupVerdict::PickedUp { conflicts }
}

/// What the server holds of the parcel and compartment a journaled deposit names.
#[derive(Debug, Clone, Copy)]
pub struct DepositNow<'a> {
    pub state: ParcelState,
    pub locker_id: Option<&'a str>,
    /// The compartment the parcel holds reserved, if any.
    pub compartment: Option<i32>,
    /// Whether compartment `number` is free on the server (for a lapsed reservation).
    pub number_free: bool,
}

/// What a journaled deposit does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepositVerdict {
    /// The parcel is deposited in that compartment; with `reclaim`, the compartment is claimed
    /// for it again first (its reservation had lapsed).
    Deposited { reclaim: bool, conflicts: Vec<Conflict> },
    /// The compartment went to another parcel meanwhile: the server cannot place the parcel
    /// the locker holds; a person decides (the boot snapshot shows the compartment occupied).
    Unplaceable,
    /// The parcel moved on meanwhile (cancelled, deposited elsewhere).
    AlreadyMoved,
}

/// Decides a journaled pre-advised deposit into compartment `number` of `locker_id`. The
/// parcel is in the compartment (the door closed on it), so the deposit stands where the
/// server can place it: still reserved there, or its reservation lapsed and the compartment
/// is still free.
pub fn decide_deposit(d: &DepositNow<'_>, locker_id: &str, number: i32) -> DepositVerdict {
    let at_locker = d.locker_id == Some(locker_id);
    match d.state {
        ParcelState::Reserved if at_locker && d.compartment == Some(number) => DepositVerdict::Deposited {
            reclaim: false,
            conflicts: Vec::new(),
        },
        ParcelState::Expected if at_locker && d.number_free => DepositVerdict::Deposited {
            reclaim: true,
            conflicts: vec![Conflict::ReservationLapsed],
        },
        ParcelState::Expected | ParcelState::Reserved if at_locker => DepositVerdict::Unplaceable,
        _ => DepositVerdict::AlreadyMoved,
    }
}

/// Marks a pickup applied from the journal: its history event says it happened offline (with
/// the sequence number, the time it happened and the conflicts decided), and so does the
/// carrier's `parcel.picked_up` webhook (`offline`, and `after_expiry` when the return it was
/// asked for is withdrawn by this pickup, §15.6).
pub fn mark_offline(
    detail: &mut serde_json::Value,
    effects: &mut super::effects::Effects,
    seq: i64,
    occurred_at: NaiveDateTime,
    conflicts: &[Conflict],
) {
    detail["offline"] = serde_json::json!(true);
    detail["seq"] = serde_json::json!(seq);
    detail["occurred_at"] = serde_json::json!(super::effects::rfc3339(occurred_at));
    detail["conflicts"] = serde_json::json!(conflicts);
    for w in &mut effects.webhooks {
        w.data["offline"] = serde_json::json!(true);
        if w.event == "parcel.picked_up" {
            w.data["after_expiry"] = serde_json::json!(conflicts.contains(&Conflict::AfterExpiry));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_numbers_apply_and_earlier_ones_are_answered() {
        assert_eq!(plan(&[5, 6, 7], 4), Plan::Apply { fresh: 0..3 });
        assert_eq!(plan(&[3, 4, 5], 4), Plan::Apply { fresh: 2..3 });
        assert_eq!(plan(&[3, 4], 4), Plan::Apply { fresh: 2..2 });
        assert_eq!(plan(&[1], 0), Plan::Apply { fresh: 0..1 });
    }

    #[test]
    fn gaps_duplicates_and_disorder_apply_nothing() {
        let gap = Plan::Gap { expected_seq: 5 };
        assert_eq!(plan(&[6, 7], 4), gap);
        assert_eq!(plan(&[5, 5], 4), gap);
        assert_eq!(plan(&[5, 7], 4), gap);
        assert_eq!(plan(&[6, 5], 4), gap);
        assert_eq!(plan(&[0, 1], 0), Plan::Gap { expected_seq: 1 });
        assert_eq!(plan(&[-3], 0), Plan::Gap { expected_seq: 1 });
    }

    fn ts(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn device_time_is_corrected_and_bounded() {
        let now = ts("2026-11-24T12:00:00Z").naive_utc();
        let at = ts("2026-11-24T11:00:00Z");
        let off = chrono::Duration::seconds(30);
        assert_eq!(
            corrected_time(at, off, now, None),
            ts("2026-11-24T11:00:30Z").naive_utc()
        );
        // A fast device clock cannot put the pickup in the future.
        assert_eq!(corrected_time(ts("2026-11-24T13:00:00Z"), off, now, None), now);
        // Nor before the deposit.
        let dep = ts("2026-11-24T11:30:00Z").naive_utc();
        assert_eq!(corrected_time(at, off, now, Some(dep)), dep);
    }

    #[test]
    fn a_pickup_stands_against_a_resend_and_an_expiry_but_not_a_parcel_gone() {
        let p = |state, token_current| ParcelNow {
            state,
            locker_id: Some("L"),
            compartment: Some(7),
            token_current,
        };
        assert_eq!(
            decide_pickup(&p(ParcelState::Deposited, true), "L", 7),
            PickupVerdict::PickedUp { conflicts: vec![] }
        );
        assert_eq!(
            decide_pickup(&p(ParcelState::Deposited, false), "L", 7),
            PickupVerdict::PickedUp {
                conflicts: vec![Conflict::CodeRevoked]
            }
        );
        assert_eq!(
            decide_pickup(&p(ParcelState::Expired, true), "L", 7),
            PickupVerdict::PickedUp {
                conflicts: vec![Conflict::AfterExpiry]
            }
        );
        for gone in [ParcelState::PickedUp, ParcelState::Returned] {
            assert_eq!(decide_pickup(&p(gone, true), "L", 7), PickupVerdict::AlreadyMoved);
        }
        assert_eq!(
            decide_pickup(&p(ParcelState::Deposited, true), "L", 8),
            PickupVerdict::AlreadyMoved
        );
        assert_eq!(
            decide_pickup(&p(ParcelState::Deposited, true), "M", 7),
            PickupVerdict::AlreadyMoved
        );
    }

    #[test]
    fn events_parse_strictly() {
        let e: JournalEvent = serde_json::from_value(serde_json::json!({
            "seq": 3, "at": "2026-11-24T11:02:13.400Z", "kind": "pickup",
            "compartment": 7, "by": {"qr_token": "lhq2.x.y"}}))
        .unwrap();
        assert_eq!(e.seq, 3);
        assert_eq!(
            e.happened(),
            Ok(Happened::PickupByQr {
                compartment: 7,
                token: "lhq2.x.y"
            })
        );
        let other: JournalEvent = serde_json::from_value(serde_json::json!({
            "seq": 4, "at": "2026-11-24T11:02:13Z", "kind": "wrong_code", "compartment": 7}))
        .unwrap();
        assert!(other.happened().is_ok(), "a wrong code is counted");
        let door: JournalEvent = serde_json::from_value(serde_json::json!({
            "seq": 5, "at": "2026-11-24T11:02:13Z", "kind": "door", "compartment": 7}))
        .unwrap();
        assert!(door.happened().is_err());
        let by_entry: JournalEvent = serde_json::from_value(serde_json::json!({
            "seq": 6, "at": "2026-11-24T11:02:13Z", "kind": "pickup", "compartment": 7, "by": {"entry": "e-1"}}))
        .unwrap();
        assert_eq!(
            by_entry.happened(),
            Ok(Happened::PickupByEntry {
                compartment: 7,
                entry: "e-1"
            })
        );
        for bad in [
            serde_json::json!({"seq": 3, "at": "yesterday", "kind": "pickup", "compartment": 7, "by": {"qr_token": "t"}}),
            serde_json::json!({"seq": "3", "at": "2026-11-24T11:02:13Z", "kind": "pickup", "compartment": 7, "by": {"qr_token": "t"}}),
            serde_json::json!({"seq": 3, "at": "2026-11-24T11:02:13Z", "compartment": 7}),
            serde_json::json!({"seq": 3, "at": "2026-11-24T11:02:13Z", "kind": "pickup", "compartment": 7, "by": {"qr_token": "t"}, "extra": 1}),
        ] {
            assert!(serde_json::from_value::<JournalEvent>(bad.clone()).is_err(), "{bad}");
        }
    }

    fn ev(v: serde_json::Value) -> JournalEvent {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn collections_deposits_and_wrong_codes_of_each_kind_parse() {
        let at = "2026-11-24T11:02:13Z";
        assert_eq!(
            ev(serde_json::json!({"seq": 1, "at": at, "kind": "collection", "compartment": 3, "by": {"entry": "e-9"}}))
                .happened(),
            Ok(Happened::Collection {
                compartment: 3,
                entry: "e-9"
            })
        );
        assert_eq!(
            ev(serde_json::json!({"seq": 1, "at": at, "kind": "deposit", "compartment": 4, "by": {"entry": "e-8"}}))
                .happened(),
            Ok(Happened::Deposit {
                compartment: 4,
                entry: "e-8"
            })
        );
        for (kind, of) in [
            (None, WrongCodeOf::Pickup),
            (Some("pickup"), WrongCodeOf::Pickup),
            (Some("collection"), WrongCodeOf::Collection),
            (Some("courier"), WrongCodeOf::Courier),
        ] {
            let e = ev(serde_json::json!({"seq": 1, "at": at, "kind": "wrong_code", "code_kind": kind}));
            assert_eq!(e.happened(), Ok(Happened::WrongCode(of)));
        }
        for bad in [
            // A collection or deposit is opened by a list entry, never by a QR token.
            serde_json::json!({"seq": 1, "at": at, "kind": "collection", "compartment": 3, "by": {"qr_token": "t"}}),
            serde_json::json!({"seq": 1, "at": at, "kind": "deposit", "by": {"entry": "e-1"}}),
            serde_json::json!({"seq": 1, "at": at, "kind": "wrong_code", "code_kind": "lottery"}),
            serde_json::json!({"seq": 1, "at": at, "kind": "pickup", "compartment": 3, "by": {"entry": "e-1"},
                               "code_kind": "pickup"}),
        ] {
            assert!(ev(bad.clone()).happened().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_collection_stands_only_for_an_expired_parcel_still_there() {
        let p = |state, current| ParcelNow {
            state,
            locker_id: Some("L"),
            compartment: Some(7),
            token_current: current,
        };
        assert_eq!(
            decide_collection(&p(ParcelState::Expired, true), "L", 7),
            PickupVerdict::PickedUp { conflicts: vec![] }
        );
        assert_eq!(
            decide_collection(&p(ParcelState::Expired, false), "L", 7),
            PickupVerdict::PickedUp {
                conflicts: vec![Conflict::CodeRevoked]
            }
        );
        for moved in [ParcelState::Deposited, ParcelState::PickedUp, ParcelState::Returned] {
            assert_eq!(decide_collection(&p(moved, true), "L", 7), PickupVerdict::AlreadyMoved);
        }
        assert_eq!(
            decide_collection(&p(ParcelState::Expired, true), "L", 8),
            PickupVerdict::AlreadyMoved
        );
    }

    #[test]
    fn a_deposit_stands_where_the_server_can_place_it() {
        let d = |state, compartment, number_free| DepositNow {
            state,
            locker_id: Some("L"),
            compartment,
            number_free,
        };
        assert_eq!(
            decide_deposit(&d(ParcelState::Reserved, Some(4), false), "L", 4),
            DepositVerdict::Deposited {
                reclaim: false,
                conflicts: vec![]
            }
        );
        assert_eq!(
            decide_deposit(&d(ParcelState::Expected, None, true), "L", 4),
            DepositVerdict::Deposited {
                reclaim: true,
                conflicts: vec![Conflict::ReservationLapsed]
            }
        );
        // The compartment went to another parcel, or this one is reserved elsewhere now.
        assert_eq!(
            decide_deposit(&d(ParcelState::Expected, None, false), "L", 4),
            DepositVerdict::Unplaceable
        );
        assert_eq!(
            decide_deposit(&d(ParcelState::Reserved, Some(5), false), "L", 4),
            DepositVerdict::Unplaceable
        );
        for moved in [ParcelState::Cancelled, ParcelState::Deposited, ParcelState::PickedUp] {
            assert_eq!(
                decide_deposit(&d(moved, Some(4), true), "L", 4),
                DepositVerdict::AlreadyMoved
            );
        }
        // Another locker's parcel is not placed here.
        assert_eq!(
            decide_deposit(&d(ParcelState::Reserved, Some(4), false), "M", 4),
            DepositVerdict::AlreadyMoved
        );
    }
}
