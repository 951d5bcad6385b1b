//! Compartment allocation: which free compartment a parcel gets.
//!
//! Rules, in order:
//! - only free compartments whose size fits; the smallest that fits wins, so larger ones stay
//!   available (upsizing happens naturally when no exact size is free);
//! - a compartment in a carrier's dedicated section is never given to another carrier;
//! - a carrier with a section uses it first, then the shared pool, unless the section is exclusive;
//! - a recipient who needs an accessible compartment gets one first; everyone else is steered
//!   away from accessible compartments so they stay free for those who need them.

use super::{CompartmentStatus, Size};

/// A carrier's dedicated section, as the allocator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub carrier_id: String,
    pub exclusive: bool,
}

/// One compartment, as the allocator sees it.
#[derive(Debug, Clone)]
pub struct Slot {
    pub number: i32,
    pub size: Size,
    pub accessible: bool,
    pub status: CompartmentStatus,
    pub section: Option<Section>,
}

#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub carrier_id: &'a str,
    pub size: Size,
    pub needs_accessible: bool,
}

/// Picks the compartment for `req`, or `None` when nothing fits.
pub fn allocate(slots: &[Slot], req: Request<'_>) -> Option<i32> {
    let exclusive = slots
        .iter()
        .filter_map(|s| s.section.as_ref())
        .any(|sec| sec.carrier_id == req.carrier_id && sec.exclusive);
    slots
        .iter()
        .filter(|s| s.status == CompartmentStatus::Free && s.size >= req.size)
        .filter_map(|s| {
            let tier = match &s.section {
                Some(sec) if sec.carrier_id == req.carrier_id => 0u8,
                Some(_) => return None,
                None if exclusive => return None,
                None => 1,
            };
            let access_miss = u8::from(s.accessible != req.needs_accessible);
            let key = if req.needs_accessible {
                (access_miss, tier, s.size, 0u8, s.number)
            } else {
                (0, tier, s.size, access_miss, s.number)
            };
            Some(key)
        })
        .min()
        .map(|k| k.4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(number: i32, size: Size) -> Slot {
        Slot {
            number,
            size,
            accessible: false,
            status: CompartmentStatus::Free,
            section: None,
        }
    }

    fn req(carrier: &str, size: Size) -> Request<'_> {
        Request {
            carrier_id: carrier,
            size,
            needs_accessible: false,
        }
    }

    fn dedicated(mut s: Slot, carrier: &str, exclusive: bool) -> Slot {
        s.section = Some(Section {
            carrier_id: carrier.into(),
            exclusive,
        });
        s
    }

    #[test]
    fn smallest_fit_then_upsize() {
        let slots = vec![slot(1, Size::L), slot(2, Size::M), slot(3, Size::S)];
        assert_eq!(allocate(&slots, req("ups", Size::S)), Some(3));
        assert_eq!(allocate(&slots, req("ups", Size::M)), Some(2));
        let mut slots = slots;
        slots[1].status = CompartmentStatus::Occupied;
        assert_eq!(allocate(&slots, req("ups", Size::M)), Some(1), "upsizes to L");
        assert_eq!(allocate(&slots, req("ups", Size::XL)), None);
    }

    #[test]
    fn skips_reserved_and_out_of_service() {
        let mut slots = vec![slot(1, Size::S), slot(2, Size::S), slot(3, Size::S)];
        slots[0].status = CompartmentStatus::Reserved;
        slots[1].status = CompartmentStatus::OutOfService;
        assert_eq!(allocate(&slots, req("ups", Size::S)), Some(3));
        slots[2].status = CompartmentStatus::Occupied;
        assert_eq!(allocate(&slots, req("ups", Size::S)), None);
    }

    #[test]
    fn dedicated_section_first_then_shared_pool() {
        let slots = vec![slot(1, Size::S), dedicated(slot(2, Size::M), "ups", false)];
        // UPS prefers its own section even though a smaller shared compartment is free.
        assert_eq!(allocate(&slots, req("ups", Size::S)), Some(2));
        // Other carriers never get a dedicated compartment.
        assert_eq!(allocate(&slots, req("dhl", Size::S)), Some(1));
        assert_eq!(allocate(&slots, req("dhl", Size::M)), None);
        let mut full = slots.clone();
        full[1].status = CompartmentStatus::Occupied;
        assert_eq!(
            allocate(&full, req("ups", Size::S)),
            Some(1),
            "falls back to the shared pool"
        );
    }

    #[test]
    fn exclusive_section_never_spills_over() {
        let slots = vec![slot(1, Size::S), dedicated(slot(2, Size::S), "ups", true)];
        assert_eq!(allocate(&slots, req("ups", Size::S)), Some(2));
        let mut full = slots.clone();
        full[1].status = CompartmentStatus::Occupied;
        assert_eq!(allocate(&full, req("ups", Size::S)), None);
        assert_eq!(allocate(&full, req("dhl", Size::S)), Some(1));
    }

    #[test]
    fn accessible_compartments_go_to_those_who_need_them() {
        let mut a = slot(1, Size::L);
        a.accessible = true;
        let slots = vec![a, slot(2, Size::S)];
        let need = Request {
            needs_accessible: true,
            ..req("ups", Size::S)
        };
        assert_eq!(allocate(&slots, need), Some(1), "accessible first, even if larger");
        assert_eq!(allocate(&slots, req("ups", Size::S)), Some(2));
        // Without a non-accessible fit, anyone may use the accessible one.
        assert_eq!(allocate(&slots, req("ups", Size::L)), Some(1));
    }
}
