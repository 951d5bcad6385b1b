//! Keyed governor limiters, one small function per use.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct RateLimits {
    /// Failed credential checks (admin keys, device credentials, carrier keys) per client IP.
    auth_failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Remote opens, per admin key and per locker.
    remote_opens: RemoteOpenLimits,
}

impl RateLimits {
    pub fn new(auth_failures_per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(auth_failures_per_minute.max(1)).expect("non-zero");
        Self {
            auth_failures: RateLimiter::keyed(Quota::per_minute(per_minute)),
            remote_opens: RemoteOpenLimits::new(RemoteOpenQuota::default()),
        }
    }

    pub fn with_remote_opens(mut self, quota: RemoteOpenQuota) -> Self {
        self.remote_opens = RemoteOpenLimits::new(quota);
        self
    }

    /// Takes one remote open from `admin_key_id`'s allowance, then from `locker_id`'s. On
    /// refusal, says which and how long until the next one is allowed.
    pub fn check_remote_open(&self, admin_key_id: &str, locker_id: &str) -> Result<(), (RemoteOpenLimit, Duration)> {
        self.remote_opens.check(admin_key_id, locker_id)
    }

    /// Records a failed authentication from `ip`; `false` once that IP has failed too often.
    pub fn check_auth_failure(&self, ip: IpAddr) -> bool {
        self.auth_failures.check_key(&ip).is_ok()
    }

    /// Drops idle keys so the maps stay bounded.
    pub fn prune(&self) {
        self.auth_failures.retain_recent();
        self.auth_failures.shrink_to_fit();
        self.remote_opens.per_key.retain_recent();
        self.remote_opens.per_locker.retain_recent();
    }
}

/// The remote-open allowances: a burst, then one more per period.
#[derive(Debug, Clone, Copy)]
pub struct RemoteOpenQuota {
    pub per_key_burst: u32,
    pub per_key_period: Duration,
    pub per_locker_burst: u32,
    pub per_locker_period: Duration,
}

impl Default for RemoteOpenQuota {
    fn default() -> Self {
        Self {
            per_key_burst: 10,
            per_key_period: Duration::from_secs(360),
            per_locker_burst: 5,
            per_locker_period: Duration::from_secs(12),
        }
    }
}

/// Which remote-open allowance ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteOpenLimit {
    AdminKey,
    Locker,
}

struct RemoteOpenLimits {
    per_key: DefaultKeyedRateLimiter<String>,
    per_locker: DefaultKeyedRateLimiter<String>,
}

impl RemoteOpenLimits {
    fn new(q: RemoteOpenQuota) -> Self {
        let quota = |burst: u32, period: Duration| {
            Quota::with_period(period.max(Duration::from_millis(1)))
                .expect("non-zero period")
                .allow_burst(NonZeroU32::new(burst.max(1)).expect("non-zero"))
        };
        Self {
            per_key: RateLimiter::keyed(quota(q.per_key_burst, q.per_key_period)),
            per_locker: RateLimiter::keyed(quota(q.per_locker_burst, q.per_locker_period)),
        }
    }

    fn check(&self, key: &str, locker: &str) -> Result<(), (RemoteOpenLimit, Duration)> {
        use governor::clock::{Clock, DefaultClock};
        let now = DefaultClock::default().now();
        self.per_key
            .check_key(&key.to_string())
            .map_err(|n| (RemoteOpenLimit::AdminKey, n.wait_time_from(now)))?;
        self.per_locker
            .check_key(&locker.to_string())
            .map_err(|n| (RemoteOpenLimit::Locker, n.wait_time_from(now)))
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
