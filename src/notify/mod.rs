//! Recipient notifications: templates and channel transports. The NotificationActor
//! (actors/notifier.rs) drives them from the outbox.

pub mod channels;
pub mod templates;
