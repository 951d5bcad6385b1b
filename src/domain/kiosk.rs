//! The kiosk interaction: who is standing at the locker's kiosk, as far as deposits go.
//!
//! A driver who enters a courier code (`IdentifyCourier`) has proved which carrier they drive
//! for; the deposits that follow in the same interaction are bound to that carrier, so a
//! driver identified as carrier A cannot deposit a parcel as carrier B (B would otherwise get
//! webhooks for a parcel it never delivered). The interaction ends with an explicit
//! `EndInteraction`, with a new courier code (which starts a new interaction for its
//! carrier), or after `timeout` without any call from the kiosk. Before any courier code, and
//! after the end, deposits are walk-up deposits: any active carrier may be named, as for
//! devices that never send a courier code.
//!
//! Time is passed in, read from the application's clock, so the rule is a plain function of
//! its inputs and tests move the clock instead of waiting.

use chrono::NaiveDateTime;

/// One kiosk's current interaction, if a courier code was entered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kiosk {
    bound: Option<Bound>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Bound {
    carrier_id: String,
    last_activity: NaiveDateTime,
}

/// Why a deposit is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KioskRefusal {
    /// The interaction is bound to another carrier by its courier code.
    OtherCarrier { bound_carrier_id: String },
}

impl Kiosk {
    /// A courier code was accepted: a new interaction, bound to its carrier, begins now.
    pub fn identify(&mut self, carrier_id: &str, now: NaiveDateTime) {
        self.bound = Some(Bound {
            carrier_id: carrier_id.to_string(),
            last_activity: now,
        });
    }

    /// The device ended the interaction (the driver finished, or the kiosk returned to its
    /// start screen). Returns whether one was in progress.
    pub fn end(&mut self) -> bool {
        self.bound.take().is_some()
    }

    /// A call from the kiosk: ends an interaction idle for longer than `timeout`, else keeps
    /// it alive from `now`.
    pub fn activity(&mut self, now: NaiveDateTime, timeout: chrono::Duration) {
        if let Some(b) = &mut self.bound {
            if now - b.last_activity > timeout {
                self.bound = None;
            } else if now > b.last_activity {
                b.last_activity = now;
            }
        }
    }

    /// The carrier the current interaction is bound to, if any.
    pub fn bound_carrier(&self) -> Option<&str> {
        self.bound.as_ref().map(|b| b.carrier_id.as_str())
    }

    /// Whether a deposit for `carrier_id` may start in the current interaction. Call
    /// [`Kiosk::activity`] first, so an expired interaction no longer binds.
    pub fn check_deposit(&self, carrier_id: &str) -> Result<(), KioskRefusal> {
        match self.bound_carrier() {
            Some(bound) if bound != carrier_id => Err(KioskRefusal::OtherCarrier {
                bound_carrier_id: bound.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0)
            .unwrap()
            .naive_utc()
    }

    const TIMEOUT: chrono::Duration = chrono::Duration::seconds(120);

    #[test]
    fn walk_up_deposits_name_any_carrier() {
        let mut k = Kiosk::default();
        k.activity(t(0), TIMEOUT);
        assert_eq!(k.check_deposit("a"), Ok(()));
        assert_eq!(k.check_deposit("b"), Ok(()));
    }

    #[test]
    fn a_courier_code_binds_until_the_end() {
        let mut k = Kiosk::default();
        k.identify("a", t(0));
        assert_eq!(k.check_deposit("a"), Ok(()));
        assert_eq!(
            k.check_deposit("b"),
            Err(KioskRefusal::OtherCarrier {
                bound_carrier_id: "a".into()
            })
        );
        assert!(k.end());
        assert!(!k.end());
        assert_eq!(k.check_deposit("b"), Ok(()));
    }

    #[test]
    fn a_new_courier_code_rebinds() {
        let mut k = Kiosk::default();
        k.identify("a", t(0));
        k.identify("b", t(5));
        assert_eq!(k.check_deposit("b"), Ok(()));
        assert!(k.check_deposit("a").is_err());
    }

    #[test]
    fn activity_keeps_it_alive_and_silence_ends_it() {
        let mut k = Kiosk::default();
        k.identify("a", t(0));
        k.activity(t(100), TIMEOUT);
        k.activity(t(220), TIMEOUT);
        assert!(k.check_deposit("b").is_err(), "120 s after the last call: still bound");
        k.activity(t(341), TIMEOUT);
        assert_eq!(k.check_deposit("b"), Ok(()), "121 s of silence ended it");
        assert_eq!(k.bound_carrier(), None);
    }
}
