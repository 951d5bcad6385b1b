//! Deposit rules: what a deposit request says, where the parcel goes back to if it is
//! cancelled, and when its dwell window closes and its reminders fall.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::parcel::ParcelState;
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
}
