//! The actor system: a supervised hub, one actor per locker bank, one per device session.

pub mod carrier;
pub mod hub;
pub mod locker;
pub mod messages;
pub mod notifier;
pub mod outbox_slots;
pub mod session;
pub mod timeouts;
