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

/// A keyed "N per hour" allowance (kiosk directory and phone lookups per locker). Held in
/// memory: losing it at a restart only gives back at most one hour's allowance.
pub struct HourlyLimit {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl HourlyLimit {
    pub fn new(per_hour: u32) -> Self {
        let n = NonZeroU32::new(per_hour.max(1)).expect("non-zero");
        let quota = Quota::with_period(Duration::from_secs(3600) / n.get())
            .expect("non-zero period")
            .allow_burst(n);
        Self {
            limiter: RateLimiter::keyed(quota),
        }
    }

    /// Takes one from `key`'s allowance; the wait until the next one when none is left.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.limiter.check_key(&key.to_string()).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()))
        })
    }

    pub fn prune(&self) {
        self.limiter.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hourly_allowance_per_key() {
        let l = HourlyLimit::new(2);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        let wait = l.check("a").expect_err("third in the hour is refused");
        assert!(wait > Duration::from_secs(1700), "{wait:?}");
        assert!(l.check("b").is_ok(), "other keys are unaffected");
    }
}
