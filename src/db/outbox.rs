//! Transactional outboxes and deadlines: written in the same transaction as the state change
//! they announce, delivered later by their actors, so a crash between the two loses nothing.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::{json, Value};

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
    diesel::insert_into(webhook_outbox::table)
        .values((
            webhook_outbox::id.eq(&id),
            webhook_outbox::carrier_id.eq(carrier_id),
            webhook_outbox::parcel_id.eq(parcel_id),
            webhook_outbox::event_type.eq(event_type),
            webhook_outbox::payload.eq(payload.to_string()),
            webhook_outbox::next_attempt_at.eq(t),
            webhook_outbox::created_at.eq(t),
        ))
        .execute(conn)?;
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
    diesel::insert_into(notification_outbox::table)
        .values((
            notification_outbox::id.eq(&id),
            notification_outbox::parcel_id.eq(parcel_id),
            notification_outbox::recipient_id.eq(recipient_id),
            notification_outbox::kind.eq(kind),
            notification_outbox::payload.eq(payload.to_string()),
            notification_outbox::next_attempt_at.eq(t),
            notification_outbox::created_at.eq(t),
        ))
        .execute(conn)?;
    Ok(id)
}

/// Persists a deadline; the scheduler rebuilds its timers from these rows at start.
pub fn schedule_deadline(conn: &mut DbConn, parcel_id: &str, kind: &str, due_at: NaiveDateTime) -> QueryResult<()> {
    diesel::insert_into(deadlines::table)
        .values((
            deadlines::id.eq(new_id()),
            deadlines::parcel_id.eq(parcel_id),
            deadlines::kind.eq(kind),
            deadlines::due_at.eq(due_at),
            deadlines::created_at.eq(now()),
        ))
        .execute(conn)
        .map(drop)
}

/// Cancels a parcel's pending deadlines (all kinds when `kinds` is empty).
pub fn cancel_deadlines(conn: &mut DbConn, parcel_id: &str, kinds: &[&str]) -> QueryResult<usize> {
    let pending = deadlines::table
        .filter(deadlines::parcel_id.eq(parcel_id))
        .filter(deadlines::fired_at.is_null())
        .filter(deadlines::cancelled_at.is_null());
    if kinds.is_empty() {
        diesel::update(pending)
            .set(deadlines::cancelled_at.eq(now()))
            .execute(conn)
    } else {
        diesel::update(pending.filter(deadlines::kind.eq_any(kinds)))
            .set(deadlines::cancelled_at.eq(now()))
            .execute(conn)
    }
}
