//! Every message the actors exchange, so the conversation reads in one place.

use actix::prelude::*;
use serde_json::Value;

use crate::protocol::messages::DeviceRequest;
use crate::protocol::{Fingerprint, FrameError};

/// Hub: the locker actor for an id, started on demand. Answered with its address; that
/// `Message` impl is in `hub.rs`, so this file names no actor.
pub struct GetLocker {
    pub locker_id: String,
}

/// Locker → session: something to write to the device, or close.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub enum ToDevice {
    Text(String),
    /// A newer session of the same locker took over.
    Replaced,
    /// The credential was revoked or the locker deactivated.
    Revoked,
    /// Close if the device has been silent past its timeout by the application's clock (what
    /// the session's own interval checks; sent with `FireDueTimers`).
    CheckSilence,
}

/// Session → locker: the device connected.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach {
    pub session_id: u64,
    pub session: Recipient<ToDevice>,
    /// Hash of the credential the session authenticated with: a session authenticated just
    /// before a rotation (or a deactivation) is closed instead of attached.
    pub credential_hash: String,
}

/// Session → locker: the device disconnected.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach {
    pub session_id: u64,
}

/// Session → locker: a parsed call; the answer is the frame text to send back.
#[derive(Message)]
#[rtype(result = "String")]
pub struct DeviceCall {
    pub session_id: u64,
    pub msg_id: String,
    /// Hash of the action and payload: a retry has the same id and fingerprint; a device that
    /// reuses an id for a different call (after a reboot, say) does not get a stale answer.
    pub fingerprint: Fingerprint,
    pub request: DeviceRequest,
}

/// Session → locker: the device answered one of the server's calls.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeviceAnswer {
    pub msg_id: String,
    pub answer: Result<Value, FrameError>,
}

/// Outcome of a server-initiated open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenOutcome {
    Opened,
    Failed(String),
    /// The device did not answer in time. Never replayed: the door may or may not have opened.
    Unknown,
    Offline,
    NoSuchCompartment,
}

/// HTTP → locker: open a compartment remotely (property manager), for the audited request
/// `open_id` that [`RequestRemoteOpen`] let through (or a second person approved). The
/// outcome is written to that request before the answer.
#[derive(Message)]
#[rtype(result = "OpenOutcome")]
pub struct RemoteOpen {
    pub number: i32,
    pub reason: String,
    pub actor: String,
    pub open_id: String,
    /// The parcel in the compartment when the open was asked for: the door events that
    /// follow update it.
    pub parcel_id: Option<String>,
}

/// HTTP → locker: record a remote open request and decide, one at a time per locker, whether
/// it goes ahead (`opening`), waits for a second person (`pending_approval`) or is refused.
#[derive(Message)]
#[rtype(result = "Result<crate::db::remote_opens::RemoteOpenRecord, crate::error::AppError>")]
pub struct RequestRemoteOpen {
    pub request: crate::db::remote_opens::Request,
}

/// Carrier → locker: a pre-advice to reserve a compartment for. Answered and remembered
/// (for idempotency) in the same transaction.
#[derive(Message)]
#[rtype(result = "Result<crate::workflows::carrier_events::PreAdviceOutcome, crate::error::AppError>")]
pub struct PreAdviseParcel {
    pub advice: crate::workflows::carrier_events::PreAdvice,
}

/// Carrier → locker: could it take a parcel of `size` from this carrier now (a pre-check)?
/// Answered from the actor's memory, where allocation is decided; reserves nothing. `Ok` is
/// the compartment it would get.
#[derive(Message)]
#[rtype(result = "Result<i32, crate::domain::booking::Rejection>")]
pub struct CheckAvailability {
    pub carrier_id: String,
    pub size: crate::domain::Size,
    pub needs_accessible: bool,
}

/// Carrier → locker: cancel or redirect a parcel not yet deposited, releasing its compartment.
#[derive(Message)]
#[rtype(result = "Result<Value, crate::error::AppError>")]
pub struct CancelParcel {
    pub parcel_id: String,
    pub carrier_id: String,
    pub event_id: String,
    pub reason: String,
}

/// Carrier → locker: issue a collection code for an expired parcel.
#[derive(Message)]
#[rtype(result = "Result<Value, crate::error::AppError>")]
pub struct IssueCollectionCode {
    pub parcel_id: String,
    pub carrier_id: String,
    pub event_id: String,
}

/// Hub: a carrier was created or changed; start or reload its delivery actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CarrierChanged {
    pub carrier_id: String,
}

/// Admin → locker: the carriers this locker takes (none: every carrier). Answered with the
/// list as stored.
#[derive(Message)]
#[rtype(result = "Result<Vec<String>, crate::error::AppError>")]
pub struct SetAllowedCarriers {
    pub carriers: Vec<String>,
}

/// Admin → locker: a carrier's quota in this locker's shared pool (no limits: none). Refused
/// (409 `quota_below_use`) where the carrier already holds more than a limit allows.
/// Answered with the limits set and what the carrier holds now.
#[derive(Message)]
#[rtype(result = "Result<(crate::db::quotas::Limits, crate::db::quotas::Limits), crate::error::AppError>")]
pub struct SetQuota {
    pub carrier_id: String,
    pub limits: crate::db::quotas::Limits,
}

/// Locker: bring a 1.1 device's local code list up to date now (a carrier was added or
/// changed: its courier entry comes or goes everywhere).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SyncLocalList;

/// Hub: deliveries were queued; look at the outbox now (one carrier, or all).
#[derive(Message)]
#[rtype(result = "()")]
pub struct KickCarriers {
    pub carrier_id: Option<String>,
}

/// An outbox actor (carrier or notification): look at the outbox now (something was just
/// queued, or the carrier changed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Kick;

/// Hub: a unit of database work queued these webhooks, notifications and deadlines; wake their
/// actors.
#[derive(Message)]
#[rtype(result = "()")]
pub struct OutboxQueued(pub crate::db::wake::Wakeups);

/// Hub, then timeout actor: fire every deadline due by the application's clock, and answer
/// with how many there were once they have fired (for tests that move the clock; the timers do
/// this in production).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct FireDueDeadlines;

/// Hub → carrier actor: the carrier's settings changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReloadCarrier;

/// Hub → timeout actor: a commit scheduled deadlines falling due at these times. The ones within
/// the actor's horizon are scheduled now rather than at the next scan.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeadlinesQueued {
    pub due_at: std::collections::BTreeSet<chrono::NaiveDateTime>,
}

/// Hub, then timeout actor: how many deadlines have a timer waiting for them (for tests, which
/// show that a commit's message, not the scan, scheduled one).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct ScheduledDeadlines;

/// Hub, then every loaded locker actor: fire the device-side timers due by the application's
/// clock (door sessions, server calls awaiting the device, a silent session), and answer with
/// how many there were once they have fired. Real timers do this in production; tests move
/// the clock and send this instead of waiting.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct FireDueTimers;

/// Hub: the locker actors it has started, without starting any (for checks that compare an
/// actor's memory with the database, such as the test harness's).
/// (Its answer names the locker actor, so `hub.rs` declares it.)
pub struct LoadedLockers;

/// Locker: each compartment's number and status as this actor holds them in memory.
#[derive(Message)]
#[rtype(result = "Vec<(i32, crate::domain::CompartmentStatus)>")]
pub struct MemorySlots;

/// Hub: stop all locker and carrier actors.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Admin → locker: issue a new pickup code for a parcel (the old one stops working) and
/// queue its notification.
#[derive(Message)]
#[rtype(result = "Result<String, crate::error::AppError>")]
pub struct ResendCode {
    pub parcel_id: String,
    pub actor: String,
}

/// Timeouts → locker: a pre-advice reservation's deadline came.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ExpireReservation {
    pub due: crate::db::deadlines::Due,
}

// Admin → locker: changes to what the locker actor holds in memory. Each is committed and
// applied by the actor before the HTTP answer, so the next allocation sees it.

/// Admin → locker: add compartments.
#[derive(Message)]
#[rtype(result = "Result<Vec<crate::db::lockers::Compartment>, crate::error::AppError>")]
pub struct AddCompartments {
    pub compartments: Vec<crate::db::lockers::NewCompartment>,
    /// The numbers count from the highest existing number (1 is the next one), as for a layout.
    pub after_highest: bool,
    /// The most compartments the locker may have afterwards.
    pub max_total: usize,
}

/// Admin → locker: change a compartment's size or accessibility, or its service status.
#[derive(Message)]
#[rtype(result = "Result<crate::db::lockers::Compartment, crate::error::AppError>")]
pub struct UpdateCompartment {
    pub number: i32,
    pub size: Option<crate::domain::Size>,
    pub accessible: Option<bool>,
    /// `false` takes it out of service; `true` returns it, clearing its fault.
    pub in_service: Option<bool>,
}

/// Admin → locker: make these compartments the carrier's section (see domain::partition).
#[derive(Message)]
#[rtype(result = "Result<crate::db::lockers::Section, crate::error::AppError>")]
pub struct PutSection {
    pub carrier_id: String,
    pub compartments: Vec<i32>,
    pub exclusive: bool,
}

/// Admin → locker: dissolve the carrier's section; its compartments return to the shared pool.
#[derive(Message)]
#[rtype(result = "Result<(), crate::error::AppError>")]
pub struct DeleteSection {
    pub carrier_id: String,
}

/// Admin → locker: rename, move or (de)activate the locker. Deactivating closes its session.
#[derive(Message)]
#[rtype(result = "Result<crate::db::lockers::Locker, crate::error::AppError>")]
pub struct UpdateLocker {
    pub changes: crate::db::lockers::LockerChanges,
}

/// Admin → locker: issue a new device credential (answered once); the live session closes.
#[derive(Message)]
#[rtype(result = "Result<String, crate::error::AppError>")]
pub struct RotateCredential;
