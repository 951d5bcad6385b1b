//! Domain rules as plain types and functions: no actix, no database.

pub mod allocation;
pub mod booking;
pub mod deposit;
pub mod effects;
pub mod hardware;
pub mod inputs;
pub mod journal;
pub mod kiosk;
pub mod lifecycle;
pub mod lockout;
pub mod parcel;
pub mod partition;
pub mod privacy;
pub mod recovery;
pub mod refusal;
pub mod remote_open;
pub mod second_factor;

use serde::{Deserialize, Serialize};

/// Most compartments one locker bank may have: the admin API refuses larger layouts, a boot
/// reporting more is `Rejected`, and the boot frame limit (`protocol::MAX_BOOT_FRAME_BYTES`)
/// is sized so that a locker of this size can boot.
pub const MAX_COMPARTMENTS: i32 = 1000;

/// Compartment size class. Ordered: a parcel fits any compartment of its size or larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Size {
    S,
    M,
    L,
    XL,
}

impl Size {
    pub const ALL: [Size; 4] = [Size::S, Size::M, Size::L, Size::XL];

    pub fn as_str(self) -> &'static str {
        match self {
            Size::S => "S",
            Size::M => "M",
            Size::L => "L",
            Size::XL => "XL",
        }
    }

    pub fn parse(s: &str) -> Option<Size> {
        match s.trim().to_ascii_uppercase().as_str() {
            "S" => Some(Size::S),
            "M" => Some(Size::M),
            "L" => Some(Size::L),
            "XL" => Some(Size::XL),
            _ => None,
        }
    }

    /// The next size up, if any.
    pub fn larger(self) -> Option<Size> {
        match self {
            Size::S => Some(Size::M),
            Size::M => Some(Size::L),
            Size::L => Some(Size::XL),
            Size::XL => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompartmentStatus {
    Free,
    Reserved,
    Occupied,
    OutOfService,
}

impl CompartmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Reserved => "reserved",
            Self::Occupied => "occupied",
            Self::OutOfService => "out_of_service",
        }
    }

    /// The status a new parcel's compartment can be claimed from (then it is `reserved`).
    pub const CLAIMABLE: CompartmentStatus = CompartmentStatus::Free;

    /// Statuses that an operation's outcome does not overwrite: a fault reported during a
    /// deposit or pickup survives its completion until a person checks the compartment.
    pub const STICKY: [CompartmentStatus; 1] = [CompartmentStatus::OutOfService];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "free" => Some(Self::Free),
            "reserved" => Some(Self::Reserved),
            "occupied" => Some(Self::Occupied),
            "out_of_service" => Some(Self::OutOfService),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_order_and_parse() {
        assert!(Size::S < Size::M && Size::M < Size::L && Size::L < Size::XL);
        assert_eq!(Size::parse(" xl "), Some(Size::XL));
        assert_eq!(Size::parse("XXL"), None);
        assert_eq!(Size::L.larger(), Some(Size::XL));
        assert_eq!(Size::XL.larger(), None);
        for s in Size::ALL {
            assert_eq!(Size::parse(s.as_str()), Some(s));
        }
    }
}
