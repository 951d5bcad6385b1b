//! The clock deadlines are measured with. Production hours are real hours; tests shorten the
//! hour so dwell windows, reminders and reservation expiries run in milliseconds, through
//! exactly the same code.

use std::time::Duration;

use chrono::NaiveDateTime;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    hour: Duration,
}

impl Clock {
    pub fn new(hour: Duration) -> Self {
        Self {
            hour: hour.max(Duration::from_millis(1)),
        }
    }

    pub fn now(&self) -> NaiveDateTime {
        crate::db::now()
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
}
