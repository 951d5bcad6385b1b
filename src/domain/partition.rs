//! Partitioning a locker into carriers' sections, and what a change may not do.
//!
//! The rule: a compartment that holds a live parcel (reserved for it, deposited, or expired and
//! awaiting collection) is never put into the section of a carrier other than that parcel's
//! carrier. A re-partition that would do so is refused as a whole, naming the parcels in the
//! way; the administrator tries again once they have left, or leaves those compartments out.
//! Taking compartments out of a section (a smaller section, or deleting it) is never refused:
//! they return to the shared pool and an occupied one keeps its parcel until it leaves.

use serde::Serialize;

/// A live parcel in a compartment of the locker being partitioned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Occupant {
    pub parcel_id: String,
    pub tracking_number: String,
    pub carrier_id: String,
    pub compartment: i32,
    /// The parcel's state: `reserved`, `deposited` or `expired`.
    pub state: String,
}

/// The occupants that making `numbers` the section of `carrier_id` would hand to another
/// carrier, in compartment order. Empty: the change may go ahead.
pub fn in_the_way<'a>(carrier_id: &str, numbers: &[i32], occupants: &'a [Occupant]) -> Vec<&'a Occupant> {
    let mut found: Vec<&Occupant> = occupants
        .iter()
        .filter(|o| numbers.contains(&o.compartment) && o.carrier_id != carrier_id)
        .collect();
    found.sort_by_key(|o| (o.compartment, o.parcel_id.clone()));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parcel(compartment: i32, carrier: &str) -> Occupant {
        Occupant {
            parcel_id: format!("p{compartment}"),
            tracking_number: format!("T{compartment}"),
            carrier_id: carrier.into(),
            compartment,
            state: "deposited".into(),
        }
    }

    #[test]
    fn another_carriers_parcel_is_in_the_way() {
        let occ = vec![parcel(1, "ups"), parcel(2, "dhl"), parcel(5, "dhl")];
        let way = in_the_way("fedex", &[1, 2, 3], &occ);
        assert_eq!(way.iter().map(|o| o.compartment).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn the_carriers_own_parcels_and_empty_compartments_are_not() {
        let occ = vec![parcel(1, "ups"), parcel(4, "dhl")];
        assert!(in_the_way("ups", &[1, 2, 3], &occ).is_empty(), "its own parcel");
        assert!(in_the_way("ups", &[], &occ).is_empty(), "an emptied section");
        assert!(in_the_way("fedex", &[2, 3], &occ).is_empty(), "free compartments");
    }
}
