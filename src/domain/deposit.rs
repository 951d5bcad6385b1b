//! Deposit rules: what a deposit request says, where the parcel goes back to if it is
//! cancelled, and when its dwell window closes and its reminders fall.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use std::collections::HashSet;

use super::allocation::{allocate, Request, Slot};
use super::effects::{rfc3339, CancelDeadlines, Effects, Notice, Webhook};
use super::parcel::{ParcelState, Transition};
use super::refusal::Refusal;
use super::{CompartmentStatus, Size};
use crate::clock::Clock;

/// How the driver identified the recipient (device protocol `StartDeposit.identify`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Identify {
    /// A pre-advised parcel's barcode.
    TrackingNumber(String),
    /// The recipient's phone number.
    Phone(String),
    /// A recipient picked from the building directory.
    RecipientId(String),
}

/// A deposit request (device protocol `StartDeposit`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartDeposit {
    pub carrier_id: String,
    pub identify: Identify,
    pub size: Size,
    /// The parcel's barcode, when the recipient was identified another way.
    #[serde(default)]
    pub tracking_number: Option<String>,
}

/// Where the parcel stood before the deposit began, so a cancel can put it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prior {
    /// Created by this deposit (identified by phone or directory): a cancel cancels it.
    WalkUp,
    /// Pre-advised: a cancel returns it to `reserved` in `compartment` if it still holds it,
    /// otherwise to `expected`.
    PreAdvised { compartment: Option<i32> },
}

impl Prior {
    /// Where a deposit in compartment `number` that is cancelled leaves the parcel and the
    /// compartment.
    pub fn cancelled_in(&self, number: i32) -> (ParcelState, CompartmentStatus) {
        match self {
            Prior::WalkUp => (ParcelState::Cancelled, CompartmentStatus::Free),
            Prior::PreAdvised { compartment: Some(n) } if *n == number => {
                (ParcelState::Reserved, CompartmentStatus::Reserved)
            }
            Prior::PreAdvised { .. } => (ParcelState::Expected, CompartmentStatus::Free),
        }
    }
}

/// A pre-advised parcel found by the tracking number a driver scanned, as the workflow read it.
#[derive(Debug, Clone)]
pub struct Advised {
    pub parcel_id: String,
    pub state: ParcelState,
    pub site_id: String,
    /// The locker its pre-advice named, if any.
    pub locker_id: Option<String>,
    /// Whether it holds a compartment (a reservation) somewhere.
    pub holds_compartment: bool,
    /// The compartment it holds at *this* locker, if any.
    pub reserved_here: Option<i32>,
}

/// Whom the deposit is for, as the workflow found them.
#[derive(Debug, Clone)]
pub enum Found {
    /// A parcel the carrier pre-advised.
    Advised(Advised),
    /// A recipient identified by phone or directory: the deposit creates the parcel.
    WalkUp,
}

/// Everything a deposit start is decided on: the request, who it is for, the compartments
/// and which of them have a door session in progress.
#[derive(Debug, Clone, Copy)]
pub struct StartFacts<'a> {
    pub locker_id: &'a str,
    pub site_id: &'a str,
    pub carrier_id: &'a str,
    pub size: Size,
    pub needs_accessible: bool,
    pub found: &'a Found,
    pub slots: &'a [Slot],
    pub busy: &'a HashSet<i32>,
}

/// What becomes of the parcel row when a deposit starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParcelStart {
    /// A walk-up: a new parcel, created `reserved`.
    Create(Transition),
    /// Already reserved by its pre-advice: the state stays, the compartment may move.
    StayReserved,
    /// A pre-advised parcel that held nothing (or something elsewhere) becomes `reserved`.
    Change(Transition),
}

/// The decision a deposit start makes; the workflow persists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartDecision {
    /// The compartment whose door opens.
    pub number: i32,
    /// Whether `number` is newly claimed (it was free), rather than the parcel's own reservation.
    pub claims: bool,
    /// A pre-advice reservation given up for a better-fitting compartment (it goes back to free).
    pub released: Option<i32>,
    pub parcel: ParcelStart,
    pub prior: Prior,
}

/// Decides a deposit start: refuses a parcel expected elsewhere or already being deposited,
/// keeps a pre-advice reservation that fits, else allocates the best free compartment.
pub fn decide_start(f: StartFacts<'_>) -> Result<StartDecision, Refusal> {
    if let Found::Advised(a) = f.found {
        if a.site_id != f.site_id {
            return Err(Refusal::NotFound(
                "no parcel is expected here with this tracking number".into(),
            ));
        }
        if a.locker_id.as_deref().is_some_and(|l| l != f.locker_id) && a.holds_compartment {
            return Err(Refusal::InvalidState(
                "this parcel is reserved at another locker".into(),
            ));
        }
        if a.reserved_here.is_some_and(|n| f.busy.contains(&n)) {
            return Err(Refusal::InvalidState(
                "a deposit of this parcel is already in progress".into(),
            ));
        }
    }
    let reserved_here = match f.found {
        Found::Advised(a) => a.reserved_here,
        Found::WalkUp => None,
    };
    let fits = |n: i32| {
        f.slots
            .iter()
            .any(|s| s.number == n && s.size >= f.size && s.status != CompartmentStatus::OutOfService)
            && !f.busy.contains(&n)
    };
    let (number, claims, released) = match reserved_here {
        Some(n) if fits(n) => (n, false, None),
        other => {
            let free: Vec<Slot> = f
                .slots
                .iter()
                .filter(|s| !f.busy.contains(&s.number))
                .cloned()
                .collect();
            let n = allocate(
                &free,
                Request {
                    carrier_id: f.carrier_id,
                    size: f.size,
                    needs_accessible: f.needs_accessible,
                },
            )
            .ok_or_else(|| Refusal::NoCompartment(format!("no free compartment fits size {}", f.size.as_str())))?;
            (n, true, other)
        }
    };
    let (parcel, prior) = match f.found {
        Found::WalkUp => (
            ParcelStart::Create(ParcelState::create(ParcelState::Reserved)?),
            Prior::WalkUp,
        ),
        Found::Advised(a) => (
            match a.state {
                ParcelState::Reserved => ParcelStart::StayReserved,
                from => ParcelStart::Change(from.transition(ParcelState::Reserved)?),
            },
            Prior::PreAdvised {
                compartment: reserved_here,
            },
        ),
    };
    Ok(StartDecision {
        number,
        claims,
        released,
        parcel,
        prior,
    })
}

/// A deposit moved to a larger compartment ("doesn't fit").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upsize {
    pub from: i32,
    pub to: i32,
    /// The size the parcel is now known to need.
    pub needs: Size,
    /// The size of the compartment it gets.
    pub gets: Size,
}

/// Decides where a deposit in `current` that does not fit goes: the best free compartment
/// of the next size up or larger.
pub fn decide_upsize(
    current: i32,
    carrier_id: &str,
    needs_accessible: bool,
    slots: &[Slot],
    busy: &HashSet<i32>,
) -> Result<Upsize, Refusal> {
    let current_size = slots
        .iter()
        .find(|s| s.number == current)
        .map(|s| s.size)
        .unwrap_or(Size::XL);
    let larger = current_size
        .larger()
        .ok_or_else(|| Refusal::NoCompartment("there is no larger size".into()))?;
    let free: Vec<Slot> = slots.iter().filter(|s| !busy.contains(&s.number)).cloned().collect();
    let to = allocate(
        &free,
        Request {
            carrier_id,
            size: larger,
            needs_accessible,
        },
    )
    .ok_or_else(|| Refusal::NoCompartment(format!("no free compartment of size {} or larger", larger.as_str())))?;
    let gets = slots.iter().find(|s| s.number == to).map(|s| s.size).unwrap_or(larger);
    Ok(Upsize {
        from: current,
        to,
        needs: larger,
        gets,
    })
}

/// What a pre-advice gets at a locker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// This free compartment is reserved for it.
    Reserve(i32),
    /// Nothing fits: the parcel stays expected and the carrier hears `reservation_failed`.
    NoneFits,
    /// The recipient needs an accessible compartment and none that fits is free: the
    /// pre-advice is refused rather than given a compartment they cannot use.
    NoAccessible,
}

/// Decides the reservation for a pre-advised parcel.
pub fn decide_reservation(
    carrier_id: &str,
    size: Size,
    needs_accessible: bool,
    slots: &[Slot],
    busy: &HashSet<i32>,
) -> Reservation {
    let free: Vec<Slot> = slots.iter().filter(|s| !busy.contains(&s.number)).cloned().collect();
    match allocate(
        &free,
        Request {
            carrier_id,
            size,
            needs_accessible,
        },
    ) {
        None => Reservation::NoneFits,
        Some(n) if needs_accessible && !free.iter().any(|s| s.number == n && s.accessible) => Reservation::NoAccessible,
        Some(n) => Reservation::Reserve(n),
    }
}

/// The configured rules a completed deposit follows, handed down by the caller so the
/// workflow never reads configuration itself.
#[derive(Debug, Clone)]
pub struct DepositPolicy {
    pub pickup_code_length: usize,
    /// Hours a parcel waits when neither its site nor its carrier says otherwise.
    pub dwell_hours: i64,
    /// Hours before the deadline at which the recipient is reminded; the last is the
    /// "expiring soon" notice.
    pub reminder_offsets_hours: Vec<u32>,
    pub clock: Clock,
}

/// A reminder before the dwell deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reminder {
    pub due: NaiveDateTime,
    /// `expiring_soon` for the last one, `reminder` for the others.
    pub kind: &'static str,
}

impl DepositPolicy {
    /// When the dwell window of a parcel deposited at `now` closes: the site's dwell, else the
    /// carrier's, else the default; a recipient away on vacation starts it when they are back.
    pub fn deadline(
        &self,
        now: NaiveDateTime,
        site_hours: Option<i64>,
        carrier_hours: Option<i64>,
        away_until: Option<NaiveDateTime>,
    ) -> NaiveDateTime {
        let dwell = site_hours.or(carrier_hours).unwrap_or(self.dwell_hours);
        away_until.filter(|v| *v > now).unwrap_or(now) + self.clock.hours(dwell)
    }

    /// The reminders before `deadline` that still lie ahead of `now`, latest last.
    pub fn reminders(&self, now: NaiveDateTime, deadline: NaiveDateTime) -> Vec<Reminder> {
        let mut offsets = self.reminder_offsets_hours.clone();
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        offsets.dedup();
        let last = offsets.last().copied();
        offsets
            .into_iter()
            .map(|off| Reminder {
                due: deadline - self.clock.hours(i64::from(off)),
                kind: if Some(off) == last { "expiring_soon" } else { "reminder" },
            })
            .filter(|r| r.due > now)
            .collect()
    }
}

/// What completing a deposit needs to know about the parcel and where it is, as the workflow
/// read it.
#[derive(Debug, Clone)]
pub struct DepositFacts<'a> {
    pub parcel_id: &'a str,
    pub tracking_number: &'a str,
    pub carrier_id: &'a str,
    pub carrier_name: &'a str,
    pub recipient_id: Option<&'a str>,
    pub locker_id: &'a str,
    pub locker_name: &'a str,
    pub site_id: &'a str,
    pub compartment: i32,
    pub site_dwell_hours: Option<i64>,
    pub carrier_dwell_hours: Option<i64>,
    pub away_until: Option<NaiveDateTime>,
}

/// The decision a closed door on a parcel makes: when it was deposited, when its window
/// closes, and what follows (the carrier's webhook, the recipient's code, the deadlines).
#[derive(Debug, Clone, PartialEq)]
pub struct Deposited {
    pub at: NaiveDateTime,
    pub deadline: NaiveDateTime,
    pub effects: Effects,
}

impl DepositPolicy {
    /// The parcel in `f` is deposited at `now`, and `code` and `qr_token` will open it. The
    /// plaintext code travels only in the recipient's notice (redacted once it is sent).
    pub fn deposited(&self, now: NaiveDateTime, f: &DepositFacts<'_>, code: &str, qr_token: &str) -> Deposited {
        let deadline = self.deadline(now, f.site_dwell_hours, f.carrier_dwell_hours, f.away_until);
        let mut effects = Effects::for_parcel(f.parcel_id);
        effects.webhooks.push(Webhook {
            carrier_id: f.carrier_id.to_string(),
            event: "parcel.delivered_to_locker",
            data: serde_json::json!({
                "parcel_id": f.parcel_id,
                "tracking_number": f.tracking_number,
                "locker_id": f.locker_id,
                "compartment": f.compartment,
                "deposited_at": rfc3339(now),
                "pickup_deadline": rfc3339(deadline),
            }),
        });
        effects.notices.push(Notice {
            recipient_id: f.recipient_id.map(str::to_string),
            kind: "deposited",
            data: serde_json::json!({
                "pickup_code": code,
                "qr_token": qr_token,
                "locker_id": f.locker_id,
                "locker_name": f.locker_name,
                "site_id": f.site_id,
                "carrier": f.carrier_name,
                "tracking_number": f.tracking_number,
                "pickup_deadline": rfc3339(deadline),
            }),
        });
        // A pre-advice reservation's expiry no longer applies; the dwell window and its
        // reminders replace it.
        effects.cancel = CancelDeadlines::Kinds(vec!["reservation_expiry"]);
        effects.deadlines.push(("dwell_expiry", deadline));
        effects
            .deadlines
            .extend(self.reminders(now, deadline).into_iter().map(|r| (r.kind, r.due)));
        Deposited {
            at: now,
            deadline,
            effects,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy(offsets: Vec<u32>) -> DepositPolicy {
        DepositPolicy {
            pickup_code_length: 8,
            dwell_hours: 72,
            reminder_offsets_hours: offsets,
            clock: Clock::new(Duration::from_secs(3600)),
        }
    }

    fn t(h: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap().naive_utc() + chrono::Duration::hours(h)
    }

    #[test]
    fn site_dwell_wins_over_carrier_over_default() {
        let p = policy(vec![]);
        assert_eq!(p.deadline(t(0), Some(24), Some(48), None), t(24));
        assert_eq!(p.deadline(t(0), None, Some(48), None), t(48));
        assert_eq!(p.deadline(t(0), None, None, None), t(72));
    }

    #[test]
    fn a_vacation_starts_the_window_on_return_but_a_past_one_does_not() {
        let p = policy(vec![]);
        assert_eq!(p.deadline(t(0), None, None, Some(t(100))), t(172));
        assert_eq!(p.deadline(t(0), None, None, Some(t(-5))), t(72));
    }

    #[test]
    fn reminders_are_deduplicated_ordered_and_the_last_is_expiring_soon() {
        let p = policy(vec![4, 24, 4, 48]);
        let r = p.reminders(t(0), t(72));
        let got: Vec<_> = r.iter().map(|r| (r.due, r.kind)).collect();
        assert_eq!(
            got,
            vec![(t(24), "reminder"), (t(48), "reminder"), (t(68), "expiring_soon")]
        );
    }

    #[test]
    fn reminders_already_past_are_dropped() {
        let p = policy(vec![100, 4]);
        assert_eq!(p.reminders(t(0), t(72)).len(), 1);
    }

    #[test]
    fn a_cancel_puts_the_parcel_back_where_it_was() {
        use CompartmentStatus as C;
        use ParcelState as P;
        assert_eq!(Prior::WalkUp.cancelled_in(3), (P::Cancelled, C::Free));
        assert_eq!(
            Prior::PreAdvised { compartment: Some(3) }.cancelled_in(3),
            (P::Reserved, C::Reserved)
        );
        assert_eq!(
            Prior::PreAdvised { compartment: Some(2) }.cancelled_in(3),
            (P::Expected, C::Free)
        );
        assert_eq!(
            Prior::PreAdvised { compartment: None }.cancelled_in(3),
            (P::Expected, C::Free)
        );
    }

    #[test]
    fn a_deposit_queues_the_webhook_the_code_and_its_deadlines() {
        let p = policy(vec![24, 4]);
        let f = DepositFacts {
            parcel_id: "p1",
            tracking_number: "1Z1",
            carrier_id: "c1",
            carrier_name: "UPS",
            recipient_id: Some("r1"),
            locker_id: "l1",
            locker_name: "Lobby",
            site_id: "s1",
            compartment: 3,
            site_dwell_hours: None,
            carrier_dwell_hours: Some(48),
            away_until: None,
        };
        let d = p.deposited(t(0), &f, "12345678", "lhq_x");
        assert_eq!(d.deadline, t(48));
        let e = &d.effects;
        assert_eq!(e.webhooks.len(), 1);
        assert_eq!(e.webhooks[0].event, "parcel.delivered_to_locker");
        assert_eq!(e.webhooks[0].data["compartment"], 3);
        assert_eq!(e.notices[0].data["pickup_code"], "12345678");
        assert_eq!(e.notices[0].recipient_id.as_deref(), Some("r1"));
        assert_eq!(e.cancel, CancelDeadlines::Kinds(vec!["reservation_expiry"]));
        assert_eq!(
            e.deadlines,
            vec![("dwell_expiry", t(48)), ("reminder", t(24)), ("expiring_soon", t(44))]
        );
    }

    fn slot(number: i32, size: Size, accessible: bool, status: CompartmentStatus) -> Slot {
        Slot {
            number,
            size,
            accessible,
            status,
            section: None,
        }
    }

    fn bank() -> Vec<Slot> {
        use CompartmentStatus::*;
        vec![
            slot(1, Size::S, false, Free),
            slot(2, Size::M, false, Free),
            slot(3, Size::L, true, Free),
            slot(4, Size::S, false, Reserved),
            slot(5, Size::XL, false, OutOfService),
        ]
    }

    fn advised(state: ParcelState, locker: &str, reserved_here: Option<i32>) -> Found {
        Found::Advised(Advised {
            parcel_id: "p1".into(),
            state,
            site_id: "s1".into(),
            locker_id: Some(locker.into()),
            holds_compartment: reserved_here.is_some() || state == ParcelState::Reserved,
            reserved_here,
        })
    }

    fn start(found: &Found, size: Size, busy: &[i32]) -> Result<StartDecision, Refusal> {
        let slots = bank();
        let busy: HashSet<i32> = busy.iter().copied().collect();
        decide_start(StartFacts {
            locker_id: "l1",
            site_id: "s1",
            carrier_id: "c1",
            size,
            needs_accessible: false,
            found,
            slots: &slots,
            busy: &busy,
        })
    }

    #[test]
    fn a_walk_up_creates_a_reserved_parcel_in_the_smallest_fitting_compartment() {
        let d = start(&Found::WalkUp, Size::S, &[]).unwrap();
        assert_eq!((d.number, d.claims, d.released), (1, true, None));
        assert_eq!(d.prior, Prior::WalkUp);
        assert!(matches!(d.parcel, ParcelStart::Create(t) if t.to() == ParcelState::Reserved && t.from().is_none()));
        // A busy compartment is skipped.
        assert_eq!(start(&Found::WalkUp, Size::S, &[1]).unwrap().number, 2);
    }

    #[test]
    fn a_pre_advice_reservation_that_fits_is_kept() {
        let d = start(&advised(ParcelState::Reserved, "l1", Some(4)), Size::S, &[]).unwrap();
        assert_eq!((d.number, d.claims, d.released), (4, false, None));
        assert_eq!(d.parcel, ParcelStart::StayReserved);
        assert_eq!(d.prior, Prior::PreAdvised { compartment: Some(4) });
    }

    #[test]
    fn a_reservation_too_small_is_given_up_for_one_that_fits() {
        let d = start(&advised(ParcelState::Reserved, "l1", Some(4)), Size::M, &[]).unwrap();
        assert_eq!((d.number, d.claims, d.released), (2, true, Some(4)));
    }

    #[test]
    fn an_expected_parcel_becomes_reserved_through_the_state_machine() {
        let d = start(&advised(ParcelState::Expected, "l1", None), Size::S, &[]).unwrap();
        assert!(matches!(d.parcel, ParcelStart::Change(t)
            if t.from() == Some(ParcelState::Expected) && t.to() == ParcelState::Reserved));
        assert_eq!(d.prior, Prior::PreAdvised { compartment: None });
    }

    #[test]
    fn a_deposit_start_refuses_what_it_must() {
        // Expected at another site: as if unknown here.
        let mut elsewhere = advised(ParcelState::Expected, "l1", None);
        if let Found::Advised(a) = &mut elsewhere {
            a.site_id = "s2".into();
        }
        assert!(matches!(start(&elsewhere, Size::S, &[]), Err(Refusal::NotFound(_))));
        // Holding a compartment at another locker of the site.
        let other = advised(ParcelState::Reserved, "l2", None);
        assert!(matches!(start(&other, Size::S, &[]), Err(Refusal::InvalidState(_))));
        // Its own reservation has a door open already.
        let here = advised(ParcelState::Reserved, "l1", Some(4));
        assert!(matches!(start(&here, Size::S, &[4]), Err(Refusal::InvalidState(_))));
        // Nothing fits (the XL is out of service).
        assert!(matches!(
            start(&Found::WalkUp, Size::XL, &[]),
            Err(Refusal::NoCompartment(_))
        ));
    }

    #[test]
    fn an_upsize_moves_to_the_next_size_up_and_stops_at_the_largest() {
        let slots = bank();
        let none = HashSet::new();
        let up = decide_upsize(1, "c1", false, &slots, &none).unwrap();
        assert_eq!(
            up,
            Upsize {
                from: 1,
                to: 2,
                needs: Size::M,
                gets: Size::M
            }
        );
        let busy: HashSet<i32> = [2].into();
        let up = decide_upsize(1, "c1", false, &slots, &busy).unwrap();
        assert_eq!((up.to, up.gets), (3, Size::L));
        assert!(matches!(
            decide_upsize(3, "c1", false, &slots, &none),
            Err(Refusal::NoCompartment(_))
        ));
    }

    #[test]
    fn a_reservation_for_someone_who_needs_access_is_refused_rather_than_inaccessible() {
        let slots = bank();
        let none = HashSet::new();
        assert_eq!(
            decide_reservation("c1", Size::L, true, &slots, &none),
            Reservation::Reserve(3)
        );
        let busy: HashSet<i32> = [3].into();
        assert_eq!(
            decide_reservation("c1", Size::S, true, &slots, &busy),
            Reservation::NoAccessible
        );
        assert_eq!(
            decide_reservation("c1", Size::S, false, &slots, &none),
            Reservation::Reserve(1)
        );
        assert_eq!(
            decide_reservation("c1", Size::XL, false, &slots, &none),
            Reservation::NoneFits
        );
    }
}
