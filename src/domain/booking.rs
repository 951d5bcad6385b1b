//! Bookings as a carrier asks for them (docs: README "Carriers", the OpenAPI `carrier` tag):
//! which size class a parcel of given dimensions and weight needs at a locker, whether the
//! locker can take it, and the stable reason when it cannot.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::allocation::{allocate, Request, Slot};
use super::{CompartmentStatus, Size};

/// Why a locker cannot take a parcel: a stable code, the same in an HTTP answer and in a
/// `parcel.reservation_failed` webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// Every compartment this carrier may use is taken.
    LockerFull,
    /// Compartments are free, but none is large enough.
    NoFittingCompartment,
    /// The recipient needs an accessible compartment, and no accessible one that fits is free.
    NoAccessibleCompartment,
    /// The locker is deactivated, has every compartment out of service, or has been offline
    /// for longer than bookings allow.
    LockerUnavailable,
    /// The parcel is larger than the locker's largest compartment.
    DimensionsExceed,
    /// The parcel fits a compartment but is heavier than any compartment it fits may hold.
    WeightExceeds,
    /// No such resident at the site.
    RecipientInvalid,
    /// A compartment would fit, but the carrier already holds all the shared compartments of
    /// that size its quota at this locker allows.
    OverQuota,
    /// The locker takes only some carriers, and not this one.
    CarrierNotAllowed,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LockerFull => "locker_full",
            Self::NoFittingCompartment => "no_fitting_compartment",
            Self::NoAccessibleCompartment => "no_accessible_compartment",
            Self::LockerUnavailable => "locker_unavailable",
            Self::DimensionsExceed => "dimensions_exceed",
            Self::WeightExceeds => "weight_exceeds",
            Self::RecipientInvalid => "recipient_invalid",
            Self::OverQuota => "over_quota",
            Self::CarrierNotAllowed => "carrier_not_allowed",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::LockerFull => "every compartment this carrier may use at the locker is taken",
            Self::NoFittingCompartment => "no free compartment at the locker is large enough",
            Self::NoAccessibleCompartment => {
                "the recipient needs an accessible compartment and none that fits is free at the locker"
            }
            Self::LockerUnavailable => "the locker is deactivated, out of service or offline",
            Self::DimensionsExceed => "the parcel is larger than the locker's largest compartment",
            Self::WeightExceeds => "the parcel is heavier than a compartment it fits may hold",
            Self::RecipientInvalid => "no such resident at the site",
            Self::OverQuota => "the carrier's quota of shared compartments at this locker is used up",
            Self::CarrierNotAllowed => "this locker does not take this carrier's parcels",
        }
    }
}

/// A parcel's or a compartment's outside dimensions in millimetres, 1 to 5,000 each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Dimensions {
    #[schema(minimum = 1, maximum = 5000)]
    pub length_mm: u32,
    #[schema(minimum = 1, maximum = 5000)]
    pub width_mm: u32,
    #[schema(minimum = 1, maximum = 5000)]
    pub height_mm: u32,
}

/// The largest dimension anything here may have, mm.
pub const MAX_MM: u32 = 5000;
/// The heaviest parcel anything here may be, g.
pub const MAX_G: u32 = 1_000_000;

impl Dimensions {
    /// Checks the bounds: every side 1 to [`MAX_MM`].
    pub fn parse(self) -> Result<Self, String> {
        for (name, v) in [
            ("length_mm", self.length_mm),
            ("width_mm", self.width_mm),
            ("height_mm", self.height_mm),
        ] {
            if !(1..=MAX_MM).contains(&v) {
                return Err(format!("{name} must be 1 to {MAX_MM}"));
            }
        }
        Ok(self)
    }

    /// Sides from the smallest to the largest: a parcel fits a box whose sorted sides are each
    /// at least its own (it may be turned any way).
    fn sorted(self) -> [u32; 3] {
        let mut s = [self.length_mm, self.width_mm, self.height_mm];
        s.sort_unstable();
        s
    }

    pub fn fits_in(self, inner: Dimensions) -> bool {
        let (a, b) = (self.sorted(), inner.sorted());
        a.iter().zip(b.iter()).all(|(x, y)| x <= y)
    }
}

/// What one size class holds at a locker: its inside dimensions and the heaviest parcel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SizeClass {
    pub size: Size,
    pub inside: Dimensions,
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_weight_g: u32,
}

/// What a locker's size classes are until an administrator sets them: common parcel-locker
/// compartments (inside, mm: height × width × depth) and weights.
pub const DEFAULT_CLASSES: [SizeClass; 4] = [
    class(Size::S, 90, 380, 640, 10_000),
    class(Size::M, 190, 380, 640, 15_000),
    class(Size::L, 410, 380, 640, 25_000),
    class(Size::XL, 610, 500, 640, 30_000),
];

const fn class(size: Size, height_mm: u32, width_mm: u32, length_mm: u32, max_weight_g: u32) -> SizeClass {
    SizeClass {
        size,
        inside: Dimensions {
            length_mm,
            width_mm,
            height_mm,
        },
        max_weight_g,
    }
}

/// Checks a locker's size classes as an administrator sets them: each size at most once,
/// bounds kept, and a larger size never smaller or weaker than a smaller one (the allocator
/// gives a parcel any compartment of its size or larger).
pub fn check_classes(classes: &[SizeClass]) -> Result<(), String> {
    let mut sorted = classes.to_vec();
    sorted.sort_by_key(|c| c.size);
    for w in sorted.windows(2) {
        if w[0].size == w[1].size {
            return Err(format!("size {} is given twice", w[0].size.as_str()));
        }
        if !w[0].inside.fits_in(w[1].inside) || w[0].max_weight_g > w[1].max_weight_g {
            return Err(format!(
                "size {} must be at least as large and hold at least as much as size {}",
                w[1].size.as_str(),
                w[0].size.as_str()
            ));
        }
    }
    for c in classes {
        c.inside.parse()?;
        if !(1..=MAX_G).contains(&c.max_weight_g) {
            return Err(format!("max_weight_g must be 1 to {MAX_G}"));
        }
    }
    Ok(())
}

/// The smallest size class at a locker that holds a parcel of `dims` and `weight_g`.
pub fn size_for(dims: Dimensions, weight_g: u32, classes: &[SizeClass]) -> Result<Size, Rejection> {
    let mut fitting: Vec<&SizeClass> = classes.iter().filter(|c| dims.fits_in(c.inside)).collect();
    if fitting.is_empty() {
        return Err(Rejection::DimensionsExceed);
    }
    fitting.sort_by_key(|c| c.size);
    fitting
        .iter()
        .find(|c| weight_g <= c.max_weight_g)
        .map(|c| c.size)
        .ok_or(Rejection::WeightExceeds)
}

/// Whether a locker whose compartments are `slots` (those in `busy` held by a door session)
/// can take a parcel of `size` from `carrier_id` now: the compartment it would get, or why not.
/// Reserves nothing.
pub fn availability(
    carrier_id: &str,
    size: Size,
    needs_accessible: bool,
    slots: &[Slot],
    busy: &HashSet<i32>,
) -> Result<i32, Rejection> {
    if slots.iter().all(|s| s.status == CompartmentStatus::OutOfService) {
        return Err(Rejection::LockerUnavailable);
    }
    let free: Vec<Slot> = slots.iter().filter(|s| !busy.contains(&s.number)).cloned().collect();
    let req = Request {
        carrier_id,
        size,
        needs_accessible,
    };
    match allocate(&free, req) {
        Some(n) if needs_accessible && !free.iter().any(|s| s.number == n && s.accessible) => {
            Err(Rejection::NoAccessibleCompartment)
        }
        Some(n) => Ok(n),
        // Anything free to this carrier at all (the smallest size asks for any compartment)?
        None => match allocate(
            &free,
            Request {
                size: Size::S,
                needs_accessible: false,
                ..req
            },
        ) {
            Some(_) => Err(Rejection::NoFittingCompartment),
            None => Err(Rejection::LockerFull),
        },
    }
}

/// The compartments a carrier may be given under its quota: the free shared compartments of
/// every size whose limit it has reached are taken out. Its own section is never limited, and
/// a compartment it already holds (a reservation it deposits into) stays.
pub fn within_quota(slots: &[Slot], limits: &BTreeMap<Size, u32>, in_use: &BTreeMap<Size, u32>) -> Vec<Slot> {
    slots
        .iter()
        .filter(|s| {
            s.section.is_some()
                || s.status != CompartmentStatus::Free
                || limits
                    .get(&s.size)
                    .is_none_or(|max| in_use.get(&s.size).copied().unwrap_or(0) < *max)
        })
        .cloned()
        .collect()
}

/// A carrier's quota at a locker: its limits and what it holds, by size.
#[derive(Debug, Clone, Copy)]
pub struct Quota<'a> {
    pub limits: &'a BTreeMap<Size, u32>,
    pub in_use: &'a BTreeMap<Size, u32>,
}

/// [`availability`] under a quota: `OverQuota` where the quota alone stands in the way.
pub fn availability_within(
    carrier_id: &str,
    size: Size,
    needs_accessible: bool,
    slots: &[Slot],
    busy: &HashSet<i32>,
    quota: Option<Quota<'_>>,
) -> Result<i32, Rejection> {
    let Some(q) = quota else {
        return availability(carrier_id, size, needs_accessible, slots, busy);
    };
    // The locker's own answer first (full is full, quota or not); then what the quota leaves.
    availability(carrier_id, size, needs_accessible, slots, busy)?;
    let allowed = within_quota(slots, q.limits, q.in_use);
    availability(carrier_id, size, needs_accessible, &allowed, busy).map_err(|_| Rejection::OverQuota)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::allocation::Section;

    #[test]
    fn a_quota_takes_out_the_sizes_it_has_used_up() {
        use CompartmentStatus::*;
        let none = HashSet::new();
        let slots = vec![slot(1, Size::S, Free), slot(2, Size::M, Free)];
        let limits: BTreeMap<Size, u32> = [(Size::S, 1)].into();
        let used: BTreeMap<Size, u32> = [(Size::S, 1)].into();
        // S is used up: the parcel goes to M, which is not limited.
        assert_eq!(
            availability_within(
                "ups",
                Size::S,
                false,
                &slots,
                &none,
                Some(Quota {
                    limits: &limits,
                    in_use: &used
                })
            ),
            Ok(2)
        );
        let limits: BTreeMap<Size, u32> = [(Size::S, 1), (Size::M, 0)].into();
        assert_eq!(
            availability_within(
                "ups",
                Size::S,
                false,
                &slots,
                &none,
                Some(Quota {
                    limits: &limits,
                    in_use: &used
                })
            ),
            Err(Rejection::OverQuota)
        );
        // Under its limit, or with no quota, as before.
        let fresh = BTreeMap::new();
        assert_eq!(
            availability_within(
                "ups",
                Size::S,
                false,
                &slots,
                &none,
                Some(Quota {
                    limits: &limits,
                    in_use: &fresh
                })
            ),
            Ok(1)
        );
        assert_eq!(availability_within("ups", Size::S, false, &slots, &none, None), Ok(1));
        // A full locker is full, quota or not.
        let busy: HashSet<i32> = [1, 2].into();
        assert_eq!(
            availability_within(
                "ups",
                Size::S,
                false,
                &slots,
                &busy,
                Some(Quota {
                    limits: &limits,
                    in_use: &used
                })
            ),
            Err(Rejection::LockerFull)
        );
        // The carrier's own section is never limited.
        let mut own = slots.clone();
        own[0].section = Some(Section {
            carrier_id: "ups".into(),
            exclusive: false,
        });
        assert_eq!(
            availability_within(
                "ups",
                Size::S,
                false,
                &own,
                &none,
                Some(Quota {
                    limits: &limits,
                    in_use: &used
                })
            ),
            Ok(1)
        );
    }

    fn dims(l: u32, w: u32, h: u32) -> Dimensions {
        Dimensions {
            length_mm: l,
            width_mm: w,
            height_mm: h,
        }
    }

    #[test]
    fn a_parcel_gets_the_smallest_class_it_fits_turned_any_way() {
        assert_eq!(size_for(dims(300, 200, 80), 2_000, &DEFAULT_CLASSES), Ok(Size::S));
        // Turned on its side it still fits S (80 mm is the smallest side).
        assert_eq!(size_for(dims(80, 300, 200), 2_000, &DEFAULT_CLASSES), Ok(Size::S));
        assert_eq!(size_for(dims(300, 200, 150), 2_000, &DEFAULT_CLASSES), Ok(Size::M));
        // Light enough for S's box but too heavy for it: the next class that holds it.
        assert_eq!(size_for(dims(300, 200, 80), 12_000, &DEFAULT_CLASSES), Ok(Size::M));
        assert_eq!(
            size_for(dims(700, 200, 80), 1_000, &DEFAULT_CLASSES),
            Err(Rejection::DimensionsExceed)
        );
        assert_eq!(
            size_for(dims(300, 200, 80), 31_000, &DEFAULT_CLASSES),
            Err(Rejection::WeightExceeds)
        );
        assert_eq!(size_for(dims(1, 1, 1), 1, &[]), Err(Rejection::DimensionsExceed));
    }

    #[test]
    fn classes_must_grow_with_their_size() {
        assert!(check_classes(&DEFAULT_CLASSES).is_ok());
        let mut shrunk = DEFAULT_CLASSES;
        shrunk[2].inside.height_mm = 100;
        assert!(check_classes(&shrunk).is_err());
        let mut twice = DEFAULT_CLASSES;
        twice[1].size = Size::S;
        assert!(check_classes(&twice).is_err());
        let mut heavy = DEFAULT_CLASSES;
        heavy[0].max_weight_g = 0;
        assert!(check_classes(&heavy).is_err());
        assert!(dims(0, 1, 1).parse().is_err() && dims(1, 1, MAX_MM + 1).parse().is_err());
    }

    fn slot(number: i32, size: Size, status: CompartmentStatus) -> Slot {
        Slot {
            number,
            size,
            accessible: false,
            status,
            section: None,
        }
    }

    #[test]
    fn availability_says_why_not() {
        use CompartmentStatus::*;
        let none = HashSet::new();
        let slots = vec![slot(1, Size::S, Free), slot(2, Size::M, Occupied)];
        assert_eq!(availability("ups", Size::S, false, &slots, &none), Ok(1));
        assert_eq!(
            availability("ups", Size::M, false, &slots, &none),
            Err(Rejection::NoFittingCompartment)
        );
        assert_eq!(
            availability("ups", Size::S, true, &slots, &none),
            Err(Rejection::NoAccessibleCompartment)
        );
        let busy: HashSet<i32> = [1].into();
        assert_eq!(
            availability("ups", Size::S, false, &slots, &busy),
            Err(Rejection::LockerFull)
        );
        // Another carrier's section is not free to this one.
        let mut sectioned = slots.clone();
        sectioned[0].section = Some(Section {
            carrier_id: "dhl".into(),
            exclusive: false,
        });
        assert_eq!(
            availability("ups", Size::S, false, &sectioned, &none),
            Err(Rejection::LockerFull)
        );
        let broken = vec![slot(1, Size::S, OutOfService)];
        assert_eq!(
            availability("ups", Size::S, false, &broken, &none),
            Err(Rejection::LockerUnavailable)
        );
        assert_eq!(
            availability("ups", Size::S, false, &[], &none),
            Err(Rejection::LockerUnavailable)
        );
    }
}
