//! Rows of `locker_carriers`: which carriers a locker takes (none: every carrier).

use std::collections::HashSet;

use diesel::prelude::*;

use super::schema::locker_carriers as lc;
use super::DbConn;

/// The carriers allowed at this locker, or `None` when every carrier is.
pub fn allowed(conn: &mut DbConn, locker_id: &str) -> QueryResult<Option<HashSet<String>>> {
    let ids: HashSet<String> = lc::table
        .filter(lc::locker_id.eq(locker_id))
        .select(lc::carrier_id)
        .load::<String>(conn)?
        .into_iter()
        .collect();
    Ok((!ids.is_empty()).then_some(ids))
}

/// Replaces the carriers allowed at this locker (none: every carrier).
pub fn set(conn: &mut DbConn, locker_id: &str, carriers: &[String]) -> QueryResult<()> {
    diesel::delete(lc::table.filter(lc::locker_id.eq(locker_id))).execute(conn)?;
    for c in carriers {
        diesel::insert_into(lc::table)
            .values((lc::locker_id.eq(locker_id), lc::carrier_id.eq(c)))
            .execute(conn)?;
    }
    Ok(())
}
