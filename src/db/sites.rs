//! Sites: the buildings lockers stand in.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::page::{Page, Paged};
use super::schema::sites;
use super::{now, DbConn};

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = sites)]
pub struct Site {
    pub id: String,
    pub name: String,
    pub address: String,
    /// IANA time zone; dates shown to recipients use it.
    pub time_zone: String,
    /// Dwell window override in hours; null uses the server default.
    pub dwell_hours: Option<i32>,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = sites)]
pub struct NewSite {
    pub id: String,
    pub name: String,
    pub address: String,
    pub time_zone: String,
    pub dwell_hours: Option<i32>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = sites)]
pub struct SiteChanges {
    pub name: Option<String>,
    pub address: Option<String>,
    pub time_zone: Option<String>,
    pub dwell_hours: Option<Option<i32>>,
    pub updated_at: Option<NaiveDateTime>,
}

pub fn insert(conn: &mut DbConn, new: &NewSite) -> QueryResult<Site> {
    diesel::insert_into(sites::table).values(new).execute(conn)?;
    get(conn, &new.id)
}

pub fn get(conn: &mut DbConn, id: &str) -> QueryResult<Site> {
    sites::table.find(id).select(Site::as_select()).get_result(conn)
}

/// The site's own dwell window, if it sets one (a narrow read for the write path).
pub fn dwell_hours(conn: &mut DbConn, id: &str) -> QueryResult<Option<i32>> {
    sites::table.find(id).select(sites::dwell_hours).get_result(conn)
}

pub fn list(conn: &mut DbConn, page: &Page) -> QueryResult<Paged<Site>> {
    let mut q = sites::table
        .select(Site::as_select())
        .order(sites::id.asc())
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(after) = &page.after {
        q = q.filter(sites::id.gt(after.clone()));
    }
    Ok(Paged::from_rows(q.load(conn)?, page, |s| &s.id))
}

pub fn update(conn: &mut DbConn, id: &str, mut changes: SiteChanges) -> QueryResult<Site> {
    changes.updated_at = Some(now());
    let n = diesel::update(sites::table.find(id)).set(&changes).execute(conn)?;
    if n == 0 {
        return Err(diesel::result::Error::NotFound);
    }
    get(conn, id)
}
