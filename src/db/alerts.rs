//! Operator alerts: what needs a person, until someone acknowledges it.

use diesel::prelude::*;

use super::page::{Page, Paged};
use super::schema::alerts;
use super::{new_id, now, DbConn};

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = alerts)]
pub struct Alert {
    pub id: String,
    pub locker_id: String,
    pub compartment: Option<i32>,
    /// `door_forced`, `door_blocked`, `offline_conflict`, `journal_rejected` or `journal_lost`.
    pub kind: String,
    pub detail: String,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: chrono::NaiveDateTime,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub acknowledged_at: Option<chrono::NaiveDateTime>,
    /// Who acknowledged it: `admin:<key id>`.
    pub acknowledged_by: Option<String>,
}

/// Raises an alert, in the caller's transaction. The operator's webhook for it is queued with
/// it (the row is its own outbox entry), and the operator actor is woken after the commit.
pub fn raise(
    conn: &mut DbConn,
    locker_id: &str,
    compartment: Option<i32>,
    kind: &str,
    detail: &str,
) -> QueryResult<()> {
    let t = now();
    diesel::insert_into(alerts::table)
        .values((
            alerts::id.eq(new_id()),
            alerts::locker_id.eq(locker_id),
            alerts::compartment.eq(compartment),
            alerts::kind.eq(kind),
            alerts::detail.eq(detail),
            alerts::created_at.eq(t),
            alerts::next_attempt_at.eq(t),
        ))
        .execute(conn)?;
    super::wake::alert_raised();
    Ok(())
}

/// Alerts whose webhook is due by `at`, oldest first, with the attempts made so far.
pub fn due(conn: &mut DbConn, at: chrono::NaiveDateTime, limit: i64) -> QueryResult<Vec<(Alert, i32)>> {
    alerts::table
        .filter(alerts::delivery.eq("pending"))
        .filter(alerts::next_attempt_at.le(at))
        .order(alerts::id.asc())
        .limit(limit)
        .select((Alert::as_select(), alerts::attempts))
        .load(conn)
}

/// The webhook for an alert was delivered.
pub fn delivered(conn: &mut DbConn, id: &str, at: chrono::NaiveDateTime) -> QueryResult<()> {
    diesel::update(alerts::table.find(id))
        .set((
            alerts::delivery.eq("delivered"),
            alerts::attempts.eq(alerts::attempts + 1),
            alerts::delivered_at.eq(at),
            alerts::last_error.eq(None::<String>),
        ))
        .execute(conn)
        .map(drop)
}

/// An attempt failed: try again at `next`, or give up (`dead`) when `next` is `None`.
pub fn attempt_failed(
    conn: &mut DbConn,
    id: &str,
    error: &str,
    next: Option<chrono::NaiveDateTime>,
) -> QueryResult<()> {
    let error: String = error.chars().take(500).collect();
    diesel::update(alerts::table.find(id))
        .set((
            alerts::delivery.eq(if next.is_some() { "pending" } else { "dead" }),
            alerts::attempts.eq(alerts::attempts + 1),
            alerts::next_attempt_at.eq(next.unwrap_or_else(now)),
            alerts::last_error.eq(error),
        ))
        .execute(conn)
        .map(drop)
}

/// Alerts oldest first; with `open`, only those not acknowledged.
pub fn list(conn: &mut DbConn, open: bool, page: &Page) -> QueryResult<Paged<Alert>> {
    let mut q = alerts::table
        .order(alerts::id.asc())
        .limit(page.limit + 1)
        .select(Alert::as_select())
        .into_boxed();
    if open {
        q = q.filter(alerts::acknowledged_at.is_null());
    }
    if let Some(after) = &page.after {
        q = q.filter(alerts::id.gt(after.clone()));
    }
    Ok(Paged::from_rows(q.load(conn)?, page, |a| &a.id))
}

/// Acknowledges an alert (once: a second acknowledgement keeps the first). `None` if unknown.
pub fn acknowledge(conn: &mut DbConn, id: &str, by: &str) -> QueryResult<Option<Alert>> {
    diesel::update(alerts::table.find(id).filter(alerts::acknowledged_at.is_null()))
        .set((alerts::acknowledged_at.eq(now()), alerts::acknowledged_by.eq(by)))
        .execute(conn)?;
    alerts::table
        .find(id)
        .select(Alert::as_select())
        .get_result(conn)
        .optional()
}
