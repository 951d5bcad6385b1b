//! Deposit rules: what a deposit request says, where the parcel goes back to if it is
//! cancelled, and when its dwell window closes and its reminders fall.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use super::effects::{rfc3339, CancelDeadlines, Effects, Notice, Webhook};
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
}
