//! Door sessions interrupted by a server restart, decided from what the locker senses.
//!
//! A restart loses the server's memory of an open door, but not the database: a deposit or
//! pickup in progress is rebuilt when the locker's state is loaded, and decided when the
//! device boots, from its snapshot of that compartment. The parcel may be physically inside;
//! cancelling it blindly would strand it, so the hardware's report decides instead.

/// What a rebuilt door session was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    Deposit,
    /// A recipient's pickup.
    Pickup,
    /// A carrier's driver collecting an expired parcel.
    Collection,
}

/// The boot snapshot's view of one compartment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sensed {
    pub door_open: bool,
    pub occupied: bool,
}

/// What to do with an interrupted session at the device's boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Door closed on the parcel: it is deposited (reason `at_reconnection`), and the
    /// recipient and the carrier are told as for any deposit.
    CompleteDeposit,
    /// Door closed on an empty compartment: the deposit is cancelled as for `CancelDeposit`.
    CancelDeposit,
    /// Door closed on an empty compartment: the parcel was taken out (picked up or returned).
    TakenOut,
    /// Door closed with the parcel still inside: the pickup or collection was abandoned.
    LeftInside,
    /// The door is open: the session goes on, and the door's closing event (or the timeout)
    /// ends it as for any session.
    Hold,
    /// The snapshot does not mention the compartment: still unknown, keep waiting.
    Unknown,
}

pub fn decide(kind: Interrupted, sensed: Option<Sensed>) -> Decision {
    let Some(s) = sensed else { return Decision::Unknown };
    match (kind, s.door_open, s.occupied) {
        (_, true, _) => Decision::Hold,
        (Interrupted::Deposit, false, true) => Decision::CompleteDeposit,
        (Interrupted::Deposit, false, false) => Decision::CancelDeposit,
        (Interrupted::Pickup | Interrupted::Collection, false, false) => Decision::TakenOut,
        (Interrupted::Pickup | Interrupted::Collection, false, true) => Decision::LeftInside,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(door_open: bool, occupied: bool) -> Option<Sensed> {
        Some(Sensed { door_open, occupied })
    }

    #[test]
    fn deposits_follow_the_sensor() {
        assert_eq!(
            decide(Interrupted::Deposit, seen(false, true)),
            Decision::CompleteDeposit
        );
        assert_eq!(
            decide(Interrupted::Deposit, seen(false, false)),
            Decision::CancelDeposit
        );
        assert_eq!(decide(Interrupted::Deposit, seen(true, true)), Decision::Hold);
        assert_eq!(decide(Interrupted::Deposit, seen(true, false)), Decision::Hold);
        assert_eq!(decide(Interrupted::Deposit, None), Decision::Unknown);
    }

    #[test]
    fn pickups_and_collections_follow_the_sensor() {
        for kind in [Interrupted::Pickup, Interrupted::Collection] {
            assert_eq!(decide(kind, seen(false, false)), Decision::TakenOut);
            assert_eq!(decide(kind, seen(false, true)), Decision::LeftInside);
            assert_eq!(decide(kind, seen(true, false)), Decision::Hold);
            assert_eq!(decide(kind, None), Decision::Unknown);
        }
    }
}
