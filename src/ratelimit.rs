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
