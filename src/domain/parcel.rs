//! The parcel state machine.

use serde::{Deserialize, Serialize};

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

    /// Still in the network: holds (or will hold) a compartment.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Expected | Self::Reserved | Self::Deposited | Self::Expired)
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
}
