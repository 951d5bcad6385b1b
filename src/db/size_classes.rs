//! Rows of `locker_size_classes`: a locker's size classes as an administrator set them.

use diesel::prelude::*;

use super::schema::locker_size_classes as t;
use super::DbConn;
use crate::domain::booking::{Dimensions, SizeClass, DEFAULT_CLASSES};
use crate::domain::Size;

/// The locker's size classes: as set, or the defaults (`true`) when none are.
pub fn effective(conn: &mut DbConn, locker_id: &str) -> QueryResult<(Vec<SizeClass>, bool)> {
    let rows: Vec<(String, i32, i32, i32, i32)> = t::table
        .filter(t::locker_id.eq(locker_id))
        .select((t::size, t::length_mm, t::width_mm, t::height_mm, t::max_weight_g))
        .load(conn)?;
    if rows.is_empty() {
        return Ok((DEFAULT_CLASSES.to_vec(), true));
    }
    let mut classes: Vec<SizeClass> = rows
        .into_iter()
        .filter_map(|(size, l, w, h, g)| {
            let n = |v: i32| u32::try_from(v).ok();
            Some(SizeClass {
                size: Size::parse(&size)?,
                inside: Dimensions {
                    length_mm: n(l)?,
                    width_mm: n(w)?,
                    height_mm: n(h)?,
                },
                max_weight_g: n(g)?,
            })
        })
        .collect();
    classes.sort_by_key(|c| c.size);
    Ok((classes, false))
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
