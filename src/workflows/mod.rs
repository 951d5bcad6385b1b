//! One transaction per operation: load the rows, ask the domain, persist what it decided
//! (rows, events, outbox messages, deadlines). Below the actors and the HTTP handlers, above
//! `db/`; like them it knows nothing of the wire protocol, HTTP or configuration: the callers
//! pass policies in as domain values and map refusals onto their own wire.

pub mod carrier_events;
pub mod deposits;
pub mod effects;
pub mod expiry;
pub mod hardware;
pub mod interrupted;
pub mod journal;
pub mod local_list;
pub mod pickups;
pub mod remote_open;
