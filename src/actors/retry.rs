//! How long the actors wait before trying again: shared by the hub, the carrier and the
//! notification actors, so it sits in a leaf module that imports no actor.

use std::time::Duration;

use rand::Rng;

/// Wait before reading the database again after failure number `attempt` (0-based), for
/// actors that must read it to do their work: doubling from 100 ms, at most 30 s.
pub(crate) fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(9)).min(30_000))
}

/// How long from `now` (the application's clock) until `at` (zero if it has passed).
pub(crate) fn until(at: chrono::NaiveDateTime, now: chrono::NaiveDateTime) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}

/// Longest wait between two attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(8 * 3600);

/// Wait before retry number `attempt` (1 = after the first failure): doubling from `base`,
/// capped, with ±20 % jitter so a recovering receiver is not hit by a thundering herd.
pub fn backoff(base: Duration, attempt: i32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << (attempt - 1).clamp(0, 30) as u32)
        .min(MAX_BACKOFF);
    exp.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_secs(5);
        for attempt in 1..=5 {
            let d = backoff(base, attempt).as_secs_f64();
            let nominal = 5.0 * f64::from(1u32 << (attempt - 1));
            assert!(d >= nominal * 0.8 && d <= nominal * 1.2, "attempt {attempt}: {d}");
        }
        assert!(backoff(base, 40) <= MAX_BACKOFF.mul_f64(1.2));
        // The default schedule (15 attempts from 5 s) spans most of a day before dead-lettering.
        let total: f64 = (1..15)
            .map(|a| base.saturating_mul(1 << (a - 1)).min(MAX_BACKOFF).as_secs_f64())
            .sum();
        assert!((15.0 * 3600.0..30.0 * 3600.0).contains(&total), "{total}");
    }
}
