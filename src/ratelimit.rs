//! Keyed governor limiters, one small function per use.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct RateLimits {
    /// Failed credential checks (admin keys, device credentials, carrier keys) per client IP.
    auth_failures: DefaultKeyedRateLimiter<IpAddr>,
}

impl RateLimits {
    pub fn new(auth_failures_per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(auth_failures_per_minute.max(1)).expect("non-zero");
        Self {
            auth_failures: RateLimiter::keyed(Quota::per_minute(per_minute)),
        }
    }

    /// Records a failed authentication from `ip`; `false` once that IP has failed too often.
    pub fn check_auth_failure(&self, ip: IpAddr) -> bool {
        self.auth_failures.check_key(&ip).is_ok()
    }

    /// Drops idle keys so the maps stay bounded.
    pub fn prune(&self) {
        self.auth_failures.retain_recent();
        self.auth_failures.shrink_to_fit();
    }
}

/// A keyed "N failures per window, then a lockout" limiter (used for pickup-code guesses).
pub struct Lockout<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    lockout: Duration,
    locked_until: std::sync::Mutex<std::collections::HashMap<K, std::time::Instant>>,
}

impl<K: std::hash::Hash + Eq + Clone> Lockout<K> {
    /// `attempts` failures are allowed per `window`; one more starts a `lockout`.
    pub fn new(attempts: u32, window: Duration, lockout: Duration) -> Self {
        let attempts = NonZeroU32::new(attempts.max(1)).expect("non-zero");
        let period = window / attempts.get();
        let quota = Quota::with_period(period.max(Duration::from_millis(1)))
            .expect("non-zero period")
            .allow_burst(attempts);
        Self {
            limiter: RateLimiter::keyed(quota),
            lockout,
            locked_until: Default::default(),
        }
    }

    /// Remaining lockout for `key`, if it is locked out now.
    pub fn locked(&self, key: &K) -> Option<Duration> {
        let mut map = self.locked_until.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match map.get(key) {
            Some(until) if *until > now => Some(*until - now),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Records a failure; returns the lockout if this failure started one.
    pub fn fail(&self, key: &K) -> Option<Duration> {
        if self.limiter.check_key(key).is_ok() {
            return None;
        }
        let mut map = self.locked_until.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(key.clone(), std::time::Instant::now() + self.lockout);
        Some(self.lockout)
    }

    pub fn prune(&self) {
        self.limiter.retain_recent();
        let now = std::time::Instant::now();
        self.locked_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_after_attempts() {
        let l = Lockout::new(3, Duration::from_secs(60), Duration::from_millis(200));
        assert_eq!(l.locked(&1), None);
        assert_eq!(l.fail(&1), None);
        assert_eq!(l.fail(&1), None);
        assert_eq!(l.fail(&1), None);
        assert!(l.fail(&1).is_some(), "the fourth failure locks out");
        assert!(l.locked(&1).is_some());
        assert_eq!(l.locked(&2), None, "other keys are unaffected");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(l.locked(&1), None, "lockout ends");
    }
}
