//! Recipients: the residents of a site who get parcels.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::page::{Page, Paged};
use super::schema::recipients;
use super::{now, DbConn};

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = recipients)]
pub struct Recipient {
    pub id: String,
    pub site_id: String,
    pub name: String,
    pub unit: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub push_target: Option<String>,
    /// Preferred channels, most preferred first, comma-separated.
    pub channels: String,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub vacation_until: Option<NaiveDateTime>,
    pub needs_accessible: bool,
    pub active: bool,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = recipients)]
pub struct NewRecipient {
    pub id: String,
    pub site_id: String,
    pub name: String,
    pub unit: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub push_target: Option<String>,
    pub channels: String,
    pub vacation_until: Option<NaiveDateTime>,
    pub needs_accessible: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = recipients)]
pub struct RecipientChanges {
    pub name: Option<String>,
    pub unit: Option<String>,
    pub phone: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub push_target: Option<Option<String>>,
    pub channels: Option<String>,
    pub vacation_until: Option<Option<NaiveDateTime>>,
    pub needs_accessible: Option<bool>,
    pub active: Option<bool>,
    pub updated_at: Option<NaiveDateTime>,
}

pub fn insert_many(conn: &mut DbConn, rows: &[NewRecipient]) -> QueryResult<usize> {
    // One statement per row: MultiConnection has no batch insert. Callers hold a transaction.
    let mut n = 0;
    for row in rows {
        n += diesel::insert_into(recipients::table).values(row).execute(conn)?;
    }
    Ok(n)
}

pub fn get(conn: &mut DbConn, id: &str) -> QueryResult<Recipient> {
    recipients::table
        .find(id)
        .select(Recipient::as_select())
        .get_result(conn)
}

/// Whether the resident needs an accessible compartment (a narrow read for the write path).
pub fn needs_accessible(conn: &mut DbConn, id: &str) -> QueryResult<bool> {
    recipients::table
        .find(id)
        .select(recipients::needs_accessible)
        .get_result(conn)
}

#[derive(Debug, Default, Clone)]
pub struct RecipientFilter {
    pub site_id: Option<String>,
    /// Case-insensitive substring of the name or unit.
    pub q: Option<String>,
}

pub fn list(conn: &mut DbConn, filter: &RecipientFilter, page: &Page) -> QueryResult<Paged<Recipient>> {
    let mut q = recipients::table
        .select(Recipient::as_select())
        .order(recipients::id.asc())
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(after) = &page.after {
        q = q.filter(recipients::id.gt(after.clone()));
    }
    if let Some(site) = &filter.site_id {
        q = q.filter(recipients::site_id.eq(site.clone()));
    }
    if let Some(text) = &filter.q {
        let pattern = format!("%{}%", escape_like(text));
        q = q.filter(
            lower(recipients::name)
                .like(pattern.to_lowercase())
                .escape('\\')
                .or(lower(recipients::unit).like(pattern.to_lowercase()).escape('\\')),
        );
    }
    Ok(Paged::from_rows(q.load(conn)?, page, |r| &r.id))
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Directory search at a site, as the kiosk shows it: active recipients only, few results.
pub fn directory(conn: &mut DbConn, site_id: &str, query: &str, limit: i64) -> QueryResult<Vec<Recipient>> {
    let filter = RecipientFilter {
        site_id: Some(site_id.to_string()),
        q: Some(query.to_string()),
    };
    let page = Page { limit, after: None };
    Ok(list(conn, &filter, &page)?
        .items
        .into_iter()
        .filter(|r| r.active)
        .collect())
}

/// The active recipient at a site with this phone. A driver often types the local number
/// without the country code, so when there is no exact match, a unique recipient whose number
/// ends with the typed digits matches too.
pub fn by_phone(conn: &mut DbConn, site_id: &str, phone: &str) -> QueryResult<Option<Recipient>> {
    let at_site = || {
        recipients::table
            .filter(recipients::site_id.eq(site_id.to_string()))
            .filter(recipients::active.eq(true))
            .select(Recipient::as_select())
    };
    // `load`, not `first`: a bound `LIMIT` makes SQLite recompile the statement on every call
    // (see `parcels::get`); a phone matches a resident or two at a site.
    if let Some(r) = at_site()
        .filter(recipients::phone.eq(phone))
        .load(conn)?
        .into_iter()
        .next()
    {
        return Ok(Some(r));
    }
    let digits = phone.trim_start_matches('+');
    let mut found = at_site()
        .filter(recipients::phone.like(format!("%{digits}")))
        .limit(2)
        .load(conn)?;
    Ok(if found.len() == 1 { found.pop() } else { None })
}

pub fn update(conn: &mut DbConn, id: &str, mut changes: RecipientChanges) -> QueryResult<Recipient> {
    changes.updated_at = Some(now());
    let n = diesel::update(recipients::table.find(id)).set(&changes).execute(conn)?;
    if n == 0 {
        return Err(diesel::result::Error::NotFound);
    }
    get(conn, id)
}

pub fn by_email(conn: &mut DbConn, site_id: &str, email: &str) -> QueryResult<Option<Recipient>> {
    recipients::table
        .filter(recipients::site_id.eq(site_id))
        .filter(recipients::email.eq(email))
        .filter(recipients::active.eq(true))
        .select(Recipient::as_select())
        .first(conn)
        .optional()
}
