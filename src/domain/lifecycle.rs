//! What follows each turn in a parcel's life once it is in a locker: who is told, which
//! deadlines end. Plain decisions; `workflows/` persist them (`workflows::effects::persist`).

use chrono::NaiveDateTime;
use serde_json::json;

use super::effects::{rfc3339, CancelDeadlines, Effects, Notice, Webhook};
use super::parcel::ParcelState;

/// A parcel as these rules need it.
#[derive(Debug, Clone)]
pub struct ParcelAt<'a> {
    pub parcel_id: &'a str,
    pub tracking_number: &'a str,
    pub carrier_id: &'a str,
    pub recipient_id: Option<&'a str>,
    pub locker_id: Option<&'a str>,
    pub compartment: Option<i32>,
}

impl ParcelAt<'_> {
    fn webhook(&self, event: &'static str, extra: &[(&str, serde_json::Value)]) -> Webhook {
        let mut data = json!({
            "parcel_id": self.parcel_id,
            "tracking_number": self.tracking_number,
            "locker_id": self.locker_id,
            "compartment": self.compartment,
        });
        for (k, v) in extra {
            data[*k] = v.clone();
        }
        Webhook {
            carrier_id: self.carrier_id.to_string(),
            event,
            data,
        }
    }

    fn notice(&self, kind: &'static str, data: serde_json::Value) -> Notice {
        Notice {
            recipient_id: self.recipient_id.map(str::to_string),
            kind,
            data,
        }
    }
}

/// Who took the parcel out of the locker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakenBy {
    /// The recipient: the parcel is picked up.
    Recipient,
    /// The carrier's driver, collecting an expired parcel: it is returned.
    Carrier,
}

/// The door closed on an empty compartment: where the parcel goes, the event's kind, and
/// what follows (the carrier is told; every remaining deadline ends).
pub fn taken_out(p: &ParcelAt<'_>, by: TakenBy, now: NaiveDateTime) -> (ParcelState, &'static str, Effects) {
    let (to, kind, event, at_field) = match by {
        TakenBy::Recipient => (ParcelState::PickedUp, "picked_up", "parcel.picked_up", "picked_up_at"),
        TakenBy::Carrier => (ParcelState::Returned, "returned", "parcel.returned", "returned_at"),
    };
    let mut e = Effects::for_parcel(p.parcel_id);
    e.webhooks.push(p.webhook(event, &[(at_field, json!(rfc3339(now)))]));
    e.cancel = CancelDeadlines::All;
    (to, kind, e)
}

/// The dwell window closed: the carrier is asked to collect the parcel, the recipient told,
/// and the reminders end.
pub fn dwell_ended(p: &ParcelAt<'_>, now: NaiveDateTime) -> Effects {
    let mut e = Effects::for_parcel(p.parcel_id);
    e.webhooks
        .push(p.webhook("parcel.return_requested", &[("expired_at", json!(rfc3339(now)))]));
    e.notices.push(p.notice("returned", json!({})));
    e.cancel = CancelDeadlines::Kinds(vec!["reminder", "expiring_soon"]);
    e
}

/// A reminder (`reminder` or `expiring_soon`) for a parcel still waiting.
pub fn reminded(p: &ParcelAt<'_>, kind: &'static str, deadline: Option<NaiveDateTime>) -> Effects {
    let mut e = Effects::for_parcel(p.parcel_id);
    e.notices
        .push(p.notice(kind, json!({"pickup_deadline": deadline.map(rfc3339)})));
    e
}

/// A pre-advice reservation ran out: the carrier is told the compartment is released.
pub fn reservation_expired(p: &ParcelAt<'_>) -> Effects {
    let mut e = Effects::for_parcel(p.parcel_id);
    e.webhooks.push(p.webhook("parcel.reservation_expired", &[]));
    e
}

/// Taken out after a remote open, by whoever opened it: carrier and recipient are told and
/// every remaining deadline ends.
pub fn removed(p: &ParcelAt<'_>, now: NaiveDateTime) -> Effects {
    let mut e = Effects::for_parcel(p.parcel_id);
    e.webhooks
        .push(p.webhook("parcel.removed", &[("removed_at", json!(rfc3339(now)))]));
    e.notices.push(p.notice("removed", json!({})));
    e.cancel = CancelDeadlines::All;
    e
}

/// No compartment fits a pre-advised parcel: the carrier is told why (a stable code, as a
/// pre-check answers it) so it can reroute.
pub fn reservation_failed(p: &ParcelAt<'_>, why: super::booking::Rejection, reason: String) -> Effects {
    let mut e = Effects::for_parcel(p.parcel_id);
    e.webhooks.push(Webhook {
        carrier_id: p.carrier_id.to_string(),
        event: "parcel.reservation_failed",
        data: json!({"parcel_id": p.parcel_id, "tracking_number": p.tracking_number,
                     "locker_id": p.locker_id, "reason_code": why.as_str(), "reason": reason}),
    });
    e
}

/// A pre-advised parcel holds a compartment until `until`.
pub fn reserved(p: &ParcelAt<'_>, until: NaiveDateTime) -> Effects {
    let mut e = Effects::for_parcel(p.parcel_id);
    e.deadlines.push(("reservation_expiry", until));
    e
}

/// A parcel cancelled before it was deposited: none of its deadlines applies any more.
pub fn cancelled(p: &ParcelAt<'_>) -> Effects {
    let mut e = Effects::for_parcel(p.parcel_id);
    e.cancel = CancelDeadlines::All;
    e
}

/// A new code for a parcel in a locker: the recipient gets it (the old message is superseded
/// by the caller, which knows the outbox).
pub fn code_reissued(p: &ParcelAt<'_>, code: &str, qr_token: &str, deadline: Option<NaiveDateTime>) -> Effects {
    let mut e = Effects::for_parcel(p.parcel_id);
    e.notices.push(p.notice(
        "deposited",
        json!({"pickup_code": code, "qr_token": qr_token, "locker_id": p.locker_id,
               "pickup_deadline": deadline.map(rfc3339), "reissued": true}),
    ));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parcel() -> ParcelAt<'static> {
        ParcelAt {
            parcel_id: "p1",
            tracking_number: "1Z1",
            carrier_id: "c1",
            recipient_id: Some("r1"),
            locker_id: Some("l1"),
            compartment: Some(4),
        }
    }

    fn t() -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap().naive_utc()
    }

    #[test]
    fn a_pickup_tells_the_carrier_and_ends_every_deadline() {
        let (to, kind, e) = taken_out(&parcel(), TakenBy::Recipient, t());
        assert_eq!((to, kind), (ParcelState::PickedUp, "picked_up"));
        assert_eq!(e.webhooks[0].event, "parcel.picked_up");
        assert_eq!(e.webhooks[0].data["compartment"], 4);
        assert!(e.webhooks[0].data["picked_up_at"].is_string());
        assert_eq!(e.cancel, CancelDeadlines::All);
        assert!(e.notices.is_empty());
    }

    #[test]
    fn a_collection_returns_the_parcel() {
        let (to, kind, e) = taken_out(&parcel(), TakenBy::Carrier, t());
        assert_eq!((to, kind), (ParcelState::Returned, "returned"));
        assert_eq!(e.webhooks[0].event, "parcel.returned");
        assert!(e.webhooks[0].data["returned_at"].is_string());
    }

    #[test]
    fn an_expired_parcel_is_sent_back_and_its_reminders_end() {
        let e = dwell_ended(&parcel(), t());
        assert_eq!(e.webhooks[0].event, "parcel.return_requested");
        assert_eq!(e.notices[0].kind, "returned");
        assert_eq!(e.cancel, CancelDeadlines::Kinds(vec!["reminder", "expiring_soon"]));
    }

    #[test]
    fn a_removed_parcel_tells_both_and_ends_every_deadline() {
        let e = removed(&parcel(), t());
        assert_eq!(e.webhooks[0].event, "parcel.removed");
        assert_eq!(e.notices[0].kind, "removed");
        assert_eq!(e.cancel, CancelDeadlines::All);
    }

    #[test]
    fn pre_advice_outcomes() {
        let failed = reservation_failed(
            &parcel(),
            super::super::booking::Rejection::LockerFull,
            "no free compartment fits size L".into(),
        );
        assert_eq!(failed.webhooks[0].event, "parcel.reservation_failed");
        assert_eq!(failed.webhooks[0].data["reason_code"], "locker_full");
        assert!(failed.webhooks[0].data.get("compartment").is_none());
        assert_eq!(reserved(&parcel(), t()).deadlines, vec![("reservation_expiry", t())]);
        assert_eq!(cancelled(&parcel()).cancel, CancelDeadlines::All);
    }

    #[test]
    fn a_reissued_code_reaches_the_recipient_marked_as_such() {
        let e = code_reissued(&parcel(), "87654321", "lhq_y", Some(t()));
        assert_eq!(e.notices[0].kind, "deposited");
        assert_eq!(e.notices[0].data["pickup_code"], "87654321");
        assert_eq!(e.notices[0].data["reissued"], true);
        assert!(e.webhooks.is_empty());
    }
}
