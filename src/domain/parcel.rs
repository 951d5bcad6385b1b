//! The parcel state machine.

use serde::{Deserialize, Serialize};

use super::refusal::Refusal;

/// expected → reserved → deposited → picked_up, or deposited → expired → returned;
/// expected and reserved can be cancelled. A deposited or expired parcel that is taken out
/// after a remote open (not by its recipient or carrier) is `removed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParcelState {
    Expected,
    Reserved,
    Deposited,
    PickedUp,
    Expired,
    Returned,
    Cancelled,
    Removed,
}

impl ParcelState {
    pub const ALL: [ParcelState; 8] = [
        Self::Expected,
        Self::Reserved,
        Self::Deposited,
        Self::PickedUp,
        Self::Expired,
        Self::Returned,
        Self::Cancelled,
        Self::Removed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expected => "expected",
            Self::Reserved => "reserved",
            Self::Deposited => "deposited",
            Self::PickedUp => "picked_up",
            Self::Expired => "expired",
            Self::Returned => "returned",
            Self::Cancelled => "cancelled",
            Self::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether a parcel in this state can move to `next`.
    pub fn can_become(self, next: ParcelState) -> bool {
        use ParcelState::*;
        matches!(
            (self, next),
            (Expected, Reserved)
                | (Expected, Cancelled)
                | (Reserved, Expected)
                | (Reserved, Deposited)
                | (Reserved, Cancelled)
                | (Deposited, PickedUp)
                | (Deposited, Expired)
                | (Expired, PickedUp)
                | (Expired, Returned)
                | (Deposited, Removed)
                | (Expired, Removed)
        )
    }

    /// The one gate of the state machine: a `Transition` can only be had from here, and the
    /// database layer writes a parcel's state only from a `Transition`
    /// (`db::parcels::apply`), so no code path can move a parcel where the machine forbids.
    pub fn transition(self, to: ParcelState) -> Result<Transition, Refusal> {
        if self.can_become(to) {
            Ok(Transition { from: Some(self), to })
        } else {
            Err(Refusal::InvalidTransition { from: self, to })
        }
    }

    /// A new parcel comes into being `expected` (pre-advised) or `reserved` (a walk-up
    /// deposit, or a pre-advice that reserved a compartment at once); never further along.
    pub fn create(to: ParcelState) -> Result<Transition, Refusal> {
        match to {
            Self::Expected | Self::Reserved => Ok(Transition { from: None, to }),
            _ => Err(Refusal::InvalidTransition {
                from: Self::Expected,
                to,
            }),
        }
    }
}

/// A change of state the machine allows; made only by [`ParcelState::transition`] or
/// [`ParcelState::create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    from: Option<ParcelState>,
    to: ParcelState,
}

impl Transition {
    /// The state before, or `None` for a parcel created by this change.
    pub fn from(self) -> Option<ParcelState> {
        self.from
    }

    pub fn to(self) -> ParcelState {
        self.to
    }

    /// As the event log records it: a creation is logged as coming from `expected`.
    pub fn as_event(self) -> (ParcelState, ParcelState) {
        (self.from.unwrap_or(ParcelState::Expected), self.to)
    }
}

#[cfg(test)]
mod tests {
    use super::ParcelState::*;
    use super::*;

    #[test]
    fn happy_paths_are_allowed() {
        for (a, b) in [
            (Expected, Reserved),
            (Reserved, Deposited),
            (Deposited, PickedUp),
            (Deposited, Expired),
            (Expired, Returned),
            (Reserved, Cancelled),
        ] {
            assert!(a.can_become(b), "{a:?} -> {b:?}");
        }
    }

    #[test]
    fn terminal_states_stay_terminal() {
        for from in [PickedUp, Returned, Cancelled, Removed] {
            for to in ParcelState::ALL {
                assert!(!from.can_become(to), "{from:?} -> {to:?}");
            }
        }
        assert!(!Deposited.can_become(Cancelled));
        assert!(!Expected.can_become(Deposited));
    }

    #[test]
    fn names_round_trip() {
        for s in ParcelState::ALL {
            assert_eq!(ParcelState::parse(s.as_str()), Some(s));
        }
        assert_eq!(ParcelState::parse("lost"), None);
    }

    /// One test per transition the machine refuses: each must be an `invalid_transition`
    /// refusal naming both states, never a silent `Transition`.
    macro_rules! refused {
        ($($name:ident: $from:ident -> $to:ident,)*) => {
            mod refused {
                use super::super::ParcelState::*;
                $(
                    #[test]
                    fn $name() {
                        let r = $from.transition($to).expect_err("the machine must refuse this");
                        assert_eq!(r.code(), "invalid_transition");
                        assert_eq!(
                            r,
                            crate::domain::refusal::Refusal::InvalidTransition { from: $from, to: $to }
                        );
                    }
                )*
            }
        };
    }

    refused! {
        expected_to_expected: Expected -> Expected,
        expected_to_deposited: Expected -> Deposited,
        expected_to_picked_up: Expected -> PickedUp,
        expected_to_expired: Expected -> Expired,
        expected_to_returned: Expected -> Returned,
        expected_to_removed: Expected -> Removed,
        reserved_to_reserved: Reserved -> Reserved,
        reserved_to_picked_up: Reserved -> PickedUp,
        reserved_to_expired: Reserved -> Expired,
        reserved_to_returned: Reserved -> Returned,
        reserved_to_removed: Reserved -> Removed,
        deposited_to_expected: Deposited -> Expected,
        deposited_to_reserved: Deposited -> Reserved,
        deposited_to_deposited: Deposited -> Deposited,
        deposited_to_returned: Deposited -> Returned,
        deposited_to_cancelled: Deposited -> Cancelled,
        picked_up_to_expected: PickedUp -> Expected,
        picked_up_to_reserved: PickedUp -> Reserved,
        picked_up_to_deposited: PickedUp -> Deposited,
        picked_up_to_picked_up: PickedUp -> PickedUp,
        picked_up_to_expired: PickedUp -> Expired,
        picked_up_to_returned: PickedUp -> Returned,
        picked_up_to_cancelled: PickedUp -> Cancelled,
        picked_up_to_removed: PickedUp -> Removed,
        expired_to_expected: Expired -> Expected,
        expired_to_reserved: Expired -> Reserved,
        expired_to_deposited: Expired -> Deposited,
        expired_to_expired: Expired -> Expired,
        expired_to_cancelled: Expired -> Cancelled,
        returned_to_expected: Returned -> Expected,
        returned_to_reserved: Returned -> Reserved,
        returned_to_deposited: Returned -> Deposited,
        returned_to_picked_up: Returned -> PickedUp,
        returned_to_expired: Returned -> Expired,
        returned_to_returned: Returned -> Returned,
        returned_to_cancelled: Returned -> Cancelled,
        returned_to_removed: Returned -> Removed,
        cancelled_to_expected: Cancelled -> Expected,
        cancelled_to_reserved: Cancelled -> Reserved,
        cancelled_to_deposited: Cancelled -> Deposited,
        cancelled_to_picked_up: Cancelled -> PickedUp,
        cancelled_to_expired: Cancelled -> Expired,
        cancelled_to_returned: Cancelled -> Returned,
        cancelled_to_cancelled: Cancelled -> Cancelled,
        cancelled_to_removed: Cancelled -> Removed,
        removed_to_expected: Removed -> Expected,
        removed_to_reserved: Removed -> Reserved,
        removed_to_deposited: Removed -> Deposited,
        removed_to_picked_up: Removed -> PickedUp,
        removed_to_expired: Removed -> Expired,
        removed_to_returned: Removed -> Returned,
        removed_to_cancelled: Removed -> Cancelled,
        removed_to_removed: Removed -> Removed,
    }

    #[test]
    fn every_pair_is_either_allowed_or_has_a_refusal_test() {
        // 64 pairs: the 11 arrows of the machine, and 53 refused (listed above).
        let allowed = ParcelState::ALL
            .iter()
            .flat_map(|a| ParcelState::ALL.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.transition(*b).is_ok())
            .count();
        assert_eq!(allowed, 11);
    }

    #[test]
    fn allowed_transitions_carry_both_states() {
        let t = Deposited.transition(PickedUp).unwrap();
        assert_eq!((t.from(), t.to()), (Some(Deposited), PickedUp));
        assert_eq!(t.as_event(), (Deposited, PickedUp));
    }

    #[test]
    fn parcels_are_created_expected_or_reserved_only() {
        assert_eq!(ParcelState::create(Expected).unwrap().from(), None);
        assert_eq!(ParcelState::create(Reserved).unwrap().as_event(), (Expected, Reserved));
        for s in [Deposited, PickedUp, Expired, Returned, Cancelled, Removed] {
            assert_eq!(ParcelState::create(s).unwrap_err().code(), "invalid_transition");
        }
    }
}
