//! Writes what the domain decided into the operation's transaction: outbox rows (which wake
//! their actors after the commit, see `db::wake`) and deadline rows.

use crate::db::{outbox, DbConn};
use crate::domain::effects::{CancelDeadlines, Effects};
use crate::error::OpError;

/// Returns the ids of the notifications it queued, in order.
pub fn persist(conn: &mut DbConn, e: &Effects) -> Result<Vec<String>, OpError> {
    let mut notices = Vec::with_capacity(e.notices.len());
    for w in &e.webhooks {
        outbox::enqueue_webhook(conn, &w.carrier_id, Some(&e.parcel_id), w.event, w.data.clone())?;
    }
    for n in &e.notices {
        notices.push(outbox::enqueue_notification(
            conn,
            &e.parcel_id,
            n.recipient_id.as_deref(),
            n.kind,
            n.data.clone(),
        )?);
    }
    match &e.cancel {
        CancelDeadlines::None => {}
        CancelDeadlines::All => {
            outbox::cancel_deadlines(conn, &e.parcel_id, &[])?;
        }
        CancelDeadlines::Kinds(kinds) => {
            outbox::cancel_deadlines(conn, &e.parcel_id, kinds)?;
        }
    }
    outbox::schedule_deadlines(conn, &e.parcel_id, &e.deadlines)?;
    Ok(notices)
}
