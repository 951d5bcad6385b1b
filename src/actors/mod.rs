//! The actor system: a supervised hub, one actor per locker bank, one per device session.

pub mod carrier;
pub mod hub;
pub mod locker;
pub mod messages;
pub mod notifier;
pub mod outbox_slots;
pub mod session;
pub mod timeouts;

/// Wait before reading the database again after failure number `attempt` (0-based), for
/// actors that must read it to do their work: doubling from 100 ms, at most 30 s.
pub(crate) fn retry_delay(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(100u64.saturating_mul(1 << attempt.min(9)).min(30_000))
}
