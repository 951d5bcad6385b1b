//! The clock the server reads the time from. Production hours are real hours; tests shorten the
//! hour so dwell windows, reminders and reservation expiries run in milliseconds, through
//! exactly the same code, and tests can move the clock forward instead of sleeping.
//!
//! One clock belongs to one running application (`AppState::clock`, `LockerDeps::clock`): tests
//! run many applications in one process, so the offset is never global.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;

#[derive(Debug, Clone)]
pub struct Clock {
    hour: Duration,
    /// Milliseconds added to the wall clock: zero in production, moved forward by tests.
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn new(hour: Duration) -> Self {
        Self {
            hour: hour.max(Duration::from_millis(1)),
            offset_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The current time as the naive UTC timestamp both backends store.
    pub fn now(&self) -> NaiveDateTime {
        chrono::Utc::now().naive_utc() + chrono::Duration::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every copy of it) forward. For tests: time never goes back.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 4);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// `n` of this clock's hours.
    pub fn hours(&self, n: i64) -> chrono::Duration {
        chrono::Duration::from_std(self.hour).unwrap_or(chrono::Duration::hours(1)) * n as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_scale() {
        assert_eq!(
            Clock::new(Duration::from_secs(3600)).hours(72),
            chrono::Duration::hours(72)
        );
        assert_eq!(
            Clock::new(Duration::from_millis(10)).hours(24),
            chrono::Duration::milliseconds(240)
        );
    }

    #[test]
    fn advancing_moves_every_copy() {
        let c = Clock::new(Duration::from_secs(3600));
        let copy = c.clone();
        let before = copy.now();
        c.advance(Duration::from_secs(600));
        let moved = copy.now() - before;
        assert!(moved >= chrono::Duration::seconds(600), "{moved}");
        assert!(moved < chrono::Duration::seconds(660), "{moved}");
    }
}
