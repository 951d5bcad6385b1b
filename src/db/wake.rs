//! Who to wake after a unit of database work: the outbox functions note what they queued (and
//! `schedule_deadlines` when a deadline falls due), and [`super::Db`] hands the note to its
//! commit hook once the work is done, so the carrier and notification actors send at once, and
//! the timeout actor schedules a near deadline, instead of at their next scan (which stays, as
//! a safety net for what a crash left behind).
//!
//! The note is thread-local: a unit of work runs start to end on one blocking thread.

use std::cell::RefCell;
use std::collections::BTreeSet;

use chrono::NaiveDateTime;

/// What a unit of work queued.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Wakeups {
    /// Carriers with a webhook newly queued.
    pub carriers: BTreeSet<String>,
    /// Whether a notification was queued.
    pub notifications: bool,
    /// When the deadlines scheduled fall due (the timeout actor schedules the near ones).
    pub deadlines: BTreeSet<NaiveDateTime>,
    /// Whether an operator alert was raised (its webhook is queued with it).
    pub alerts: bool,
}

impl Wakeups {
    pub fn is_empty(&self) -> bool {
        self.carriers.is_empty() && !self.notifications && self.deadlines.is_empty() && !self.alerts
    }
}

thread_local! {
    static QUEUED: RefCell<Wakeups> = RefCell::new(Wakeups::default());
}

pub(super) fn webhook_queued(carrier_id: &str) {
    QUEUED.with(|q| {
        q.borrow_mut().carriers.insert(carrier_id.to_string());
    });
}

pub(super) fn notification_queued() {
    QUEUED.with(|q| q.borrow_mut().notifications = true);
}

pub(super) fn alert_raised() {
    QUEUED.with(|q| q.borrow_mut().alerts = true);
}

pub(super) fn deadline_scheduled(due_at: NaiveDateTime) {
    QUEUED.with(|q| {
        q.borrow_mut().deadlines.insert(due_at);
    });
}

/// Takes (and clears) what this thread queued since the last call.
pub(super) fn take() -> Wakeups {
    QUEUED.with(|q| std::mem::take(&mut *q.borrow_mut()))
}
