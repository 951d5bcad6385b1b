//! Fault rows: what a locker reported wrong with a compartment, until a person resolves it.

use diesel::prelude::*;

use super::schema::faults;
use super::{now, DbConn};

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = faults)]
pub struct Fault {
    pub id: String,
    pub locker_id: String,
    pub compartment_number: Option<i32>,
    pub kind: String,
    pub detail: String,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: chrono::NaiveDateTime,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resolved_at: Option<chrono::NaiveDateTime>,
}

pub fn faults_of(
    conn: &mut DbConn,
    locker_id: &str,
    page: &super::page::Page,
) -> QueryResult<super::page::Paged<Fault>> {
    let mut q = faults::table
        .filter(faults::locker_id.eq(locker_id.to_string()))
        .order(faults::id.asc())
        .limit(page.limit + 1)
        .select(Fault::as_select())
        .into_boxed();
    if let Some(after) = &page.after {
        q = q.filter(faults::id.gt(after.clone()));
    }
    Ok(super::page::Paged::from_rows(q.load(conn)?, page, |f| &f.id))
}

/// Marks a locker's faults resolved when its compartment returns to service.
pub fn resolve_faults(conn: &mut DbConn, locker_id: &str, number: i32) -> QueryResult<usize> {
    diesel::update(
        faults::table
            .filter(faults::locker_id.eq(locker_id))
            .filter(faults::compartment_number.eq(number))
            .filter(faults::resolved_at.is_null()),
    )
    .set(faults::resolved_at.eq(now()))
    .execute(conn)
}
