//! The wrong-code rule for keypad codes at one locker, as plain data: how many wrong codes are
//! allowed, when a lockout starts, and how long it lasts. The state is persisted by `db::lockouts`
//! (a restart must not hand an attacker a fresh allowance) and applied by the locker's actor.
//!
//! - An allowance of `attempts` wrong codes refills continuously at one per `window / attempts`
//!   (a GCRA token bucket, kept as one timestamp so it can be stored).
//! - A wrong code that finds the allowance empty starts a lockout. The first lasts `base`; each
//!   lockout that follows before the locker has had `max` without a wrong code lasts twice the
//!   previous one, up to `max`. So a persistent guesser is slowed down more and more, while an
//!   honest typo streak costs at most one short lockout.
//! - During a lockout no code is checked.
//!
//! The arithmetic behind the defaults is in docs/security.md §3.

use chrono::{Duration, NaiveDateTime};

/// The limits, from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub attempts: u32,
    pub window: Duration,
    pub base: Duration,
    pub max: Duration,
}

impl Policy {
    /// One cell of the allowance.
    fn period(&self) -> Duration {
        (self.window / self.attempts.max(1) as i32).max(Duration::milliseconds(1))
    }

    /// How long the lockout at `level` (0 for the first) lasts.
    pub fn lockout_for(&self, level: i32) -> Duration {
        let doublings = level.clamp(0, 30) as u32;
        let secs = self.base.num_seconds().max(1).saturating_mul(1i64 << doublings.min(40));
        Duration::seconds(secs).min(self.max.max(self.base))
    }
}

/// What is stored per locker and kind of code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuessState {
    /// GCRA theoretical arrival time: the allowance is full when this is not after now.
    pub allowance_at: NaiveDateTime,
    /// Lockouts in a row (0: none yet).
    pub level: i32,
    pub locked_until: Option<NaiveDateTime>,
    pub last_failure_at: NaiveDateTime,
}

/// A lockout that a wrong code just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// 1 for the first lockout in a row, 2 for the second, …
    pub level: i32,
    pub until: NaiveDateTime,
    pub length: Duration,
}

impl GuessState {
    pub fn fresh(now: NaiveDateTime) -> Self {
        Self {
            allowance_at: now,
            level: 0,
            locked_until: None,
            last_failure_at: now,
        }
    }

    /// The time left if a lockout is running at `now`.
    pub fn locked(&self, now: NaiveDateTime) -> Option<Duration> {
        self.locked_until.filter(|u| *u > now).map(|u| u - now)
    }

    /// Counts one wrong code at `now` (the caller has checked that no lockout is running);
    /// returns the lockout it started, if any.
    pub fn fail(&mut self, policy: &Policy, now: NaiveDateTime) -> Option<Started> {
        // A locker quiet for a whole maximum lockout forgives the escalation; time spent locked
        // out is not quiet, or a capped lockout would forgive itself.
        let quiet_since = self
            .locked_until
            .map_or(self.last_failure_at, |u| u.max(self.last_failure_at));
        if now - quiet_since >= policy.max {
            self.level = 0;
        }
        self.last_failure_at = now;
        let period = policy.period();
        let tat = self.allowance_at.max(now) + period;
        // The bucket holds `attempts` cells: a cell is free while tat stays within that burst.
        if tat - now <= period * policy.attempts.max(1) as i32 {
            self.allowance_at = tat;
            return None;
        }
        let length = policy.lockout_for(self.level);
        self.level = self.level.saturating_add(1);
        let until = now + length;
        self.locked_until = Some(until);
        Some(Started {
            level: self.level,
            until,
            length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            attempts: 5,
            window: Duration::seconds(3600),
            base: Duration::seconds(900),
            max: Duration::seconds(86_400),
        }
    }

    fn t0() -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap().naive_utc()
    }

    #[test]
    fn burst_then_escalating_lockouts() {
        let p = policy();
        let mut s = GuessState::fresh(t0());
        let mut now = t0();
        for _ in 0..5 {
            assert_eq!(s.fail(&p, now), None);
        }
        let first = s.fail(&p, now).expect("sixth wrong code locks out");
        assert_eq!((first.level, first.length), (1, Duration::seconds(900)));
        assert!(s.locked(now + Duration::seconds(899)).is_some());
        now = first.until;
        assert_eq!(s.locked(now), None);
        // 900 s refilled one cell (one per 720 s): one more wrong code, then the second lockout.
        assert_eq!(s.fail(&p, now), None);
        let second = s.fail(&p, now).expect("locks again");
        assert_eq!((second.level, second.length), (2, Duration::seconds(1800)));
        let mut last = second;
        for _ in 0..10 {
            now = last.until;
            while s.fail(&p, now).is_none() {}
            last = Started {
                level: s.level,
                until: s.locked_until.unwrap(),
                length: s.locked_until.unwrap() - now,
            };
        }
        assert_eq!(last.length, Duration::seconds(86_400), "capped at the maximum");
    }

    #[test]
    fn paced_typos_never_lock_out_and_quiet_day_forgives() {
        let p = policy();
        let mut s = GuessState::fresh(t0());
        for i in 0..100 {
            assert_eq!(s.fail(&p, t0() + Duration::seconds(720 * i)), None);
        }
        s.level = 4;
        let later = s.last_failure_at + Duration::seconds(86_400);
        s.fail(&p, later);
        assert_eq!(s.level, 0);
    }
}
