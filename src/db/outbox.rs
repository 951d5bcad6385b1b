//! Transactional outboxes and deadlines: written in the same transaction as the state change
//! they announce, delivered later by their actors, so a crash between the two loses nothing.

use chrono::NaiveDateTime;
use diesel::backend::Backend;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Text, Timestamp};
use serde_json::{json, Value};

use super::direct;
use super::schema::{deadlines, notification_outbox, webhook_outbox};
use super::{new_id, now, DbConn};

/// Queues a carrier webhook. The row id is the stable event id receivers deduplicate on.
pub fn enqueue_webhook(
    conn: &mut DbConn,
    carrier_id: &str,
    parcel_id: Option<&str>,
    event_type: &str,
    data: Value,
) -> QueryResult<String> {
    let id = new_id();
    let t = now();
    let payload = json!({
        "type": event_type,
        "timestamp": super::ts_string(t),
        "data": data,
    });
    direct::execute(
        conn,
        diesel::insert_into(webhook_outbox::table).values((
            webhook_outbox::id.eq(&id),
            webhook_outbox::carrier_id.eq(carrier_id),
            webhook_outbox::parcel_id.eq(parcel_id),
            webhook_outbox::event_type.eq(event_type),
            webhook_outbox::payload.eq(payload.to_string()),
            webhook_outbox::next_attempt_at.eq(t),
            webhook_outbox::created_at.eq(t),
        )),
    )?;
    super::wake::webhook_queued(carrier_id);
    Ok(id)
}

/// Queues a recipient notification. The payload may hold a pickup code until it is sent.
pub fn enqueue_notification(
    conn: &mut DbConn,
    parcel_id: &str,
    recipient_id: Option<&str>,
    kind: &str,
    payload: Value,
) -> QueryResult<String> {
    let id = new_id();
    let t = now();
    direct::execute(
        conn,
        diesel::insert_into(notification_outbox::table).values((
            notification_outbox::id.eq(&id),
            notification_outbox::parcel_id.eq(parcel_id),
            notification_outbox::recipient_id.eq(recipient_id),
            notification_outbox::kind.eq(kind),
            notification_outbox::payload.eq(payload.to_string()),
            notification_outbox::next_attempt_at.eq(t),
            notification_outbox::created_at.eq(t),
        )),
    )?;
    super::wake::notification_queued();
    Ok(id)
}

/// Persists a parcel's new deadlines, in one statement (a deposit schedules its dwell expiry
/// and its reminders together); the scheduler rebuilds its timers from these rows at start,
/// and is told of these after the commit (a near one is scheduled at once, not at the next
/// scan).
pub fn schedule_deadlines(conn: &mut DbConn, parcel_id: &str, due: &[(&str, NaiveDateTime)]) -> QueryResult<()> {
    if due.is_empty() {
        return Ok(());
    }
    let rows = NewDeadlines {
        into: deadlines::table.from_clause(),
        parcel_id,
        created_at: now(),
        rows: due.iter().map(|(kind, at)| (new_id(), *kind, *at)).collect(),
    };
    direct::execute(conn, rows)?;
    for (_, at) in due {
        super::wake::deadline_scheduled(*at);
    }
    Ok(())
}

/// `INSERT INTO deadlines (…) VALUES (…), (…)`: one statement for all of a parcel's new
/// deadlines, cached under its text (one per row count). diesel's multi-row insert is never
/// cached, and on SQLite it runs one statement per row.
struct NewDeadlines<'a> {
    into: <deadlines::table as QuerySource>::FromClause,
    parcel_id: &'a str,
    created_at: NaiveDateTime,
    /// Id, kind and due time of each row.
    rows: Vec<(String, &'a str, NaiveDateTime)>,
}

impl QueryId for NewDeadlines<'_> {
    // Keyed by its text, which changes with the number of rows.
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> QueryFragment<DB> for NewDeadlines<'_>
where
    DB: Backend + HasSqlType<Text> + HasSqlType<Timestamp>,
    <deadlines::table as QuerySource>::FromClause: QueryFragment<DB>,
    str: ToSql<Text, DB>,
    String: ToSql<Text, DB>,
    NaiveDateTime: ToSql<Timestamp, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("INSERT INTO ");
        self.into.walk_ast(out.reborrow())?;
        out.push_sql(" (");
        let columns = [
            deadlines::id::NAME,
            deadlines::parcel_id::NAME,
            deadlines::kind::NAME,
            deadlines::due_at::NAME,
            deadlines::created_at::NAME,
        ];
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                out.push_sql(", ");
            }
            out.push_identifier(column)?;
        }
        out.push_sql(") VALUES ");
        for (i, (id, kind, due_at)) in self.rows.iter().enumerate() {
            out.push_sql(if i == 0 { "(" } else { ", (" });
            out.push_bind_param::<Text, String>(id)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, str>(self.parcel_id)?;
            out.push_sql(", ");
            out.push_bind_param::<Text, str>(kind)?;
            out.push_sql(", ");
            out.push_bind_param::<Timestamp, NaiveDateTime>(due_at)?;
            out.push_sql(", ");
            out.push_bind_param::<Timestamp, NaiveDateTime>(&self.created_at)?;
            out.push_sql(")");
        }
        Ok(())
    }
}

/// Cancels a parcel's pending deadlines (all kinds when `kinds` is empty).
pub fn cancel_deadlines(conn: &mut DbConn, parcel_id: &str, kinds: &[&str]) -> QueryResult<usize> {
    let pending = deadlines::parcel_id
        .eq(parcel_id)
        .and(deadlines::fired_at.is_null())
        .and(deadlines::cancelled_at.is_null());
    if kinds.is_empty() {
        let all = direct::update(deadlines::table, pending, deadlines::cancelled_at.eq(now()));
        return direct::execute(conn, all);
    }
    // One cached statement per kind (usually one or two) rather than an `IN` list, which
    // diesel compiles afresh on every call.
    let (t, mut n) = (now(), 0);
    for kind in kinds {
        let of_kind = pending.and(deadlines::kind.eq(*kind));
        n += direct::execute(
            conn,
            direct::update(deadlines::table, of_kind, deadlines::cancelled_at.eq(t)),
        )?;
    }
    Ok(n)
}

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = webhook_outbox)]
pub struct Delivery {
    /// The stable event id, sent as `webhook-id`.
    pub id: String,
    pub carrier_id: String,
    pub parcel_id: Option<String>,
    pub event_type: String,
    #[serde(skip)]
    pub payload: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: i32,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: NaiveDateTime,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = super::schema::webhook_attempts)]
pub struct Attempt {
    #[serde(skip)]
    pub id: String,
    #[serde(skip)]
    pub outbox_id: String,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub attempted_at: NaiveDateTime,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

/// Pending deliveries for a carrier that are due now, oldest first, skipping `exclude`.
///
/// A parcel's webhooks go out in the order of its events: a delivery waits while an earlier
/// one of the same parcel (a smaller, time-ordered id) is still pending, that is until it is
/// delivered or dead-lettered. Otherwise a retried `delivered_to_locker` could arrive after
/// the `picked_up` that followed it. Deliveries without a parcel are not ordered.
/// `at` is the application's clock (tests move it past a retry's backoff).
pub fn due_webhooks(
    conn: &mut DbConn,
    carrier_id: &str,
    exclude: &[String],
    limit: i64,
    at: NaiveDateTime,
) -> QueryResult<Vec<Delivery>> {
    let earlier = diesel::alias!(webhook_outbox as earlier);
    let earlier_pending = earlier
        .filter(earlier.field(webhook_outbox::parcel_id).eq(webhook_outbox::parcel_id))
        .filter(earlier.field(webhook_outbox::status).eq("pending"))
        .filter(earlier.field(webhook_outbox::id).lt(webhook_outbox::id));
    webhook_outbox::table
        .filter(webhook_outbox::carrier_id.eq(carrier_id))
        .filter(webhook_outbox::status.eq("pending"))
        .filter(webhook_outbox::next_attempt_at.le(at))
        .filter(webhook_outbox::id.ne_all(exclude))
        .filter(diesel::dsl::not(diesel::dsl::exists(earlier_pending)))
        .order((webhook_outbox::next_attempt_at.asc(), webhook_outbox::id.asc()))
        .limit(limit)
        .select(Delivery::as_select())
        .load(conn)
}

/// When the carrier's earliest pending webhook that is not due yet comes due: its actor sets
/// a timer for it instead of waiting for the next scan.
pub fn next_webhook_due(conn: &mut DbConn, carrier_id: &str, at: NaiveDateTime) -> QueryResult<Option<NaiveDateTime>> {
    webhook_outbox::table
        .filter(webhook_outbox::carrier_id.eq(carrier_id))
        .filter(webhook_outbox::status.eq("pending"))
        .filter(webhook_outbox::next_attempt_at.gt(at))
        .select(diesel::dsl::min(webhook_outbox::next_attempt_at))
        .first(conn)
}

/// How a delivery attempt ended.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    Delivered,
    RetryAt(NaiveDateTime),
    Dead,
}

/// Logs an attempt and moves the delivery on, in one transaction.
pub fn record_attempt(
    conn: &mut DbConn,
    outbox_id: &str,
    status_code: Option<u16>,
    error: Option<&str>,
    duration_ms: u64,
    outcome: &AttemptOutcome,
) -> QueryResult<()> {
    use super::schema::webhook_attempts as a;
    super::write_transaction(conn, |conn| {
        let t = now();
        diesel::insert_into(a::table)
            .values((
                a::id.eq(new_id()),
                a::outbox_id.eq(outbox_id),
                a::attempted_at.eq(t),
                a::status_code.eq(status_code.map(i32::from)),
                a::error.eq(error),
                a::duration_ms.eq(duration_ms.min(i32::MAX as u64) as i32),
            ))
            .execute(conn)?;
        let row = webhook_outbox::id.eq(outbox_id);
        let common = (
            webhook_outbox::attempts.eq(webhook_outbox::attempts + 1),
            webhook_outbox::last_status_code.eq(status_code.map(i32::from)),
            webhook_outbox::last_error.eq(error),
        );
        match outcome {
            AttemptOutcome::Delivered => direct::execute(
                conn,
                direct::update(
                    webhook_outbox::table,
                    row,
                    (
                        common,
                        webhook_outbox::status.eq("delivered"),
                        webhook_outbox::delivered_at.eq(t),
                    ),
                ),
            )?,
            AttemptOutcome::RetryAt(at) => direct::execute(
                conn,
                direct::update(
                    webhook_outbox::table,
                    row,
                    (common, webhook_outbox::next_attempt_at.eq(*at)),
                ),
            )?,
            AttemptOutcome::Dead => direct::execute(
                conn,
                direct::update(webhook_outbox::table, row, (common, webhook_outbox::status.eq("dead"))),
            )?,
        };
        Ok(())
    })
}

/// A carrier's deliveries, newest first, with their attempts.
pub fn deliveries(
    conn: &mut DbConn,
    carrier_id: &str,
    status: Option<&str>,
    page: &super::page::Page,
) -> QueryResult<super::page::Paged<(Delivery, Vec<Attempt>)>> {
    use super::schema::webhook_attempts as a;
    let mut q = webhook_outbox::table
        .filter(webhook_outbox::carrier_id.eq(carrier_id.to_string()))
        .order(webhook_outbox::id.desc())
        .limit(page.limit + 1)
        .select(Delivery::as_select())
        .into_boxed();
    if let Some(after) = &page.after {
        q = q.filter(webhook_outbox::id.lt(after.clone()));
    }
    if let Some(s) = status {
        q = q.filter(webhook_outbox::status.eq(s.to_string()));
    }
    let rows = q.load(conn)?;
    let ids: Vec<String> = rows.iter().map(|d| d.id.clone()).collect();
    let attempts: Vec<Attempt> = a::table
        .filter(a::outbox_id.eq_any(&ids))
        .order(a::id.asc())
        .select(Attempt::as_select())
        .load(conn)?;
    let with: Vec<(Delivery, Vec<Attempt>)> = rows
        .into_iter()
        .map(|d| {
            let mine = attempts.iter().filter(|a| a.outbox_id == d.id).cloned().collect();
            (d, mine)
        })
        .collect();
    Ok(super::page::Paged::from_rows(with, page, |(d, _)| &d.id))
}

/// Queues deliveries again now: one by id, or all of a carrier's dead ones.
pub fn redeliver(conn: &mut DbConn, carrier_id: &str, id: Option<&str>) -> QueryResult<usize> {
    let base = webhook_outbox::table
        .filter(webhook_outbox::carrier_id.eq(carrier_id.to_string()))
        .into_boxed();
    let target = match id {
        Some(id) => base.filter(webhook_outbox::id.eq(id.to_string())),
        None => base.filter(webhook_outbox::status.eq("dead")),
    };
    let ids: Vec<String> = target.select(webhook_outbox::id).load(conn)?;
    let queued = diesel::update(webhook_outbox::table.filter(webhook_outbox::id.eq_any(&ids)))
        .set((
            webhook_outbox::status.eq("pending"),
            webhook_outbox::attempts.eq(0),
            webhook_outbox::next_attempt_at.eq(now()),
            webhook_outbox::delivered_at.eq(None::<NaiveDateTime>),
        ))
        .execute(conn)?;
    if queued > 0 {
        super::wake::webhook_queued(carrier_id);
    }
    Ok(queued)
}
