//! Rows of `locker_size_classes`: a locker's size classes as an administrator set them.

use diesel::prelude::*;

use super::schema::locker_size_classes as t;
use super::DbConn;
use crate::domain::booking::{Dimensions, SizeClass, DEFAULT_CLASSES};
use crate::domain::Size;

/// The locker's size classes, S to XL: as set (a size not set takes its default), and whether
/// none are set (`true`: all defaults).
pub fn effective(conn: &mut DbConn, locker_id: &str) -> QueryResult<([SizeClass; 4], bool)> {
    let rows: Vec<(String, i32, i32, i32, i32)> = t::table
        .filter(t::locker_id.eq(locker_id))
        .select((t::size, t::length_mm, t::width_mm, t::height_mm, t::max_weight_g))
        .load(conn)?;
    let default = rows.is_empty();
    let mut classes = DEFAULT_CLASSES;
    for (size, l, w, h, g) in rows {
        let n = |v: i32| u32::try_from(v).ok();
        let (Some(size), Some(l), Some(w), Some(h), Some(g)) = (Size::parse(&size), n(l), n(w), n(h), n(g)) else {
            continue;
        };
        if let Some(c) = classes.iter_mut().find(|c| c.size == size) {
            c.inside = Dimensions {
                length_mm: l,
                width_mm: w,
                height_mm: h,
            };
            c.max_weight_g = g;
        }
    }
    Ok((classes, default))
}

/// Replaces the locker's size classes (none: back to the defaults).
pub fn replace(conn: &mut DbConn, locker_id: &str, classes: &[SizeClass]) -> QueryResult<()> {
    diesel::delete(t::table.filter(t::locker_id.eq(locker_id))).execute(conn)?;
    let i = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    for c in classes {
        diesel::insert_into(t::table)
            .values((
                t::locker_id.eq(locker_id),
                t::size.eq(c.size.as_str()),
                t::length_mm.eq(i(c.inside.length_mm)),
                t::width_mm.eq(i(c.inside.width_mm)),
                t::height_mm.eq(i(c.inside.height_mm)),
                t::max_weight_g.eq(i(c.max_weight_g)),
            ))
            .execute(conn)?;
    }
    Ok(())
}
