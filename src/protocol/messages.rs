//! Typed payloads for every action, both directions.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::frame::{ErrorCode, FrameError};
// The payloads that are domain concepts are defined there and carried on the wire as they are.
pub use crate::domain::deposit::{Identify, StartDeposit};
pub use crate::domain::hardware::{CompartmentSnapshot, Discrepancy, Door, Pickup};
use crate::domain::Size;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootNotification {
    pub firmware_version: String,
    pub protocol_version: String,
    pub compartments: Vec<CompartmentSnapshot>,
    /// A 1.1 device's offline state (docs/protocol.md §15.2); a 1.0 device sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<OfflineBoot>,
}

/// What a 1.1 device tells the server of its offline side when it boots.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineBoot {
    pub journal: JournalState,
    /// The device's clock at boot (RFC 3339): the server measures its offset from it.
    pub clock: chrono::DateTime<chrono::Utc>,
    /// The local code list version it holds (reserved: this server sends no list yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_list_version: Option<i64>,
}

/// Where a device's journal stands: the number its next event gets, and how many events it
/// holds that the server has not confirmed (they are `next_seq - pending .. next_seq - 1`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalState {
    pub next_seq: i64,
    pub pending: i64,
}

/// The boot result's offline part, for a 1.1 device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfflineAccepted {
    /// Allowance, in seconds and in the recipient's favour, for every expiry the device checks.
    pub allowed_skew_secs: i64,
    /// The keys a QR token may be signed with (`qr_token::PublicKey`).
    pub qr_keys: Vec<crate::qr_token::PublicKey>,
    pub journal: JournalAccepted,
    /// The local code list: the version the server holds, and the key of its epoch.
    pub local_list: LocalListInfo,
    /// The wrong-code allowance the device applies offline (the server's settings).
    pub guessing: GuessingLimits,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalListInfo {
    pub version: i64,
    pub epoch: i32,
    /// `list_key` (32 bytes, base64url): what the device checks verifiers and tags with.
    pub list_key: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct GuessingLimits {
    pub attempts: u32,
    pub window_secs: i64,
    pub lockout_secs: i64,
    pub lockout_max_secs: i64,
}

impl From<crate::domain::lockout::Policy> for GuessingLimits {
    fn from(p: crate::domain::lockout::Policy) -> Self {
        Self {
            attempts: p.attempts,
            window_secs: p.window.num_seconds(),
            lockout_secs: p.base.num_seconds(),
            lockout_max_secs: p.max.num_seconds(),
        }
    }
}

impl From<GuessingLimits> for crate::domain::lockout::Policy {
    fn from(g: GuessingLimits) -> Self {
        Self {
            attempts: g.attempts,
            window: chrono::Duration::seconds(g.window_secs),
            base: chrono::Duration::seconds(g.lockout_secs),
            max: chrono::Duration::seconds(g.lockout_max_secs),
        }
    }
}

/// `SendLocalList` (server → 1.1 device): the local code list, whole or since `base_version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendLocalList {
    pub version: i64,
    /// `full` or `differential`.
    pub update: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<i64>,
    pub list_salt: String,
    pub kdf: crate::offline_list::Kdf,
    pub upsert: Vec<ListEntry>,
    /// Only in a differential update.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// One entry of the local code list: a verifier, never a code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListEntry {
    pub entry: String,
    /// `pickup`, `collection`, `courier` or `deposit` (docs/protocol.md §15.8).
    pub kind: String,
    /// The compartment it opens; none for a courier entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compartment: Option<i32>,
    pub tag: u8,
    pub verifier: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalAccepted {
    /// The last sequence number the server has applied; the device replays from the next.
    pub applied_through: i64,
    /// `at_boot`, or `after_replay`: the discrepancies of this boot's snapshot are decided
    /// once the journal is replayed through the last event the device holds, and come in
    /// that `ReplayJournal` result.
    pub reconcile: String,
}

/// `DoorAlarm` (1.1): the door's truth apart from commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorAlarm {
    pub compartment: i32,
    pub kind: AlarmKind,
    /// When the device saw it (kept in the fault's detail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmKind {
    /// The door opened with no open command: the device did not unlock it.
    Forced,
    /// The device unlocked the door and it did not open in the hardware's time.
    Blocked,
}

/// `ReplayJournal` (1.1): journaled events, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayJournal {
    pub events: Vec<crate::domain::journal::JournalEvent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootConfig {
    pub pickup_code_length: usize,
    pub deposit_timeout_secs: u64,
    /// Silence after which a kiosk interaction bound by a courier code ends (1.0.1).
    #[serde(default)]
    pub kiosk_interaction_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootResponse {
    /// `Accepted` or `Rejected`.
    pub status: String,
    pub server_time: String,
    pub heartbeat_interval: u64,
    pub config: BootConfig,
    pub discrepancies: Vec<Discrepancy>,
    /// For a 1.1 device only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<OfflineAccepted>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CarrierInfo {
    pub id: String,
    pub code: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipientEntry {
    pub id: String,
    pub name: String,
    pub unit: String,
}

/// "Open compartment N" for a deposit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DepositOpen {
    pub deposit_id: String,
    pub compartment: i32,
    pub size: Size,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DepositRef {
    pub deposit_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DoorChange {
    Opened,
    Closed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoorEvent {
    pub compartment: i32,
    pub door: DoorChange,
    /// What the sensor reads once the door has closed. Optional on the wire, as the protocol
    /// document has always shown it: meaningless for `opened`, and required for `closed` only
    /// when a deposit, pickup or collection is in progress on the compartment (the locker
    /// actor decides that, since only it knows the door sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupied: Option<bool>,
}

/// What a door event completed, if anything.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DoorEventResponse {
    /// `none`, `deposited`, `deposit_cancelled`, `picked_up`, `pickup_abandoned`, `returned`,
    /// `collection_abandoned`, or `fault` (a door opened with nothing in progress).
    pub outcome: String,
}

/// A `Pickup` call: the code or token, and for a keypad code the recipient's second factor
/// (protocol 1.0.1; a 1.0 device never sends it).
#[derive(Debug, Clone)]
pub struct PickupRequest {
    pub by: Pickup,
    pub second_factor: Option<String>,
}

/// The wire form of `Pickup`: exactly one of `code` or `qr_token`; `second_factor` only with `code`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PickupPayload {
    code: Option<String>,
    qr_token: Option<String>,
    second_factor: Option<String>,
}

impl PickupRequest {
    fn parse(v: Value) -> Result<Self, FrameError> {
        let p: PickupPayload = payload("Pickup", v)?;
        let bad = |m: &str| FrameError::new(ErrorCode::ProtocolError, format!("invalid Pickup payload: {m}"));
        match (p.code, p.qr_token, p.second_factor) {
            (Some(code), None, second_factor) => Ok(Self {
                by: Pickup::Code(code),
                second_factor,
            }),
            (None, Some(token), None) => Ok(Self {
                by: Pickup::QrToken(token),
                second_factor: None,
            }),
            (None, Some(_), Some(_)) => Err(bad("second_factor goes with code only")),
            _ => Err(bad("give exactly one of code or qr_token")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PickupOpen {
    pub compartment: i32,
    pub parcel_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultNotification {
    pub compartment: i32,
    /// `jammed`, `door_not_closed`, `sensor_mismatch`, or another hardware-defined kind.
    pub kind: String,
    #[serde(default)]
    pub detail: String,
}

/// Server → device: open a compartment (remote open by an administrator).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenCompartment {
    pub compartment: i32,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenCompartmentResult {
    /// `Opened` or `Failed`.
    pub status: String,
}

/// Every call a device can make, parsed from its action name and payload.
#[derive(Debug, Clone)]
pub enum DeviceRequest {
    BootNotification(BootNotification),
    Heartbeat,
    ListCarriers,
    IdentifyCourier {
        courier_code: String,
    },
    /// The kiosk interaction is over: deposits are no longer bound to a courier's carrier.
    EndInteraction,
    SearchDirectory {
        query: String,
    },
    StartDeposit(StartDeposit),
    DoesNotFit(DepositRef),
    CancelDeposit(DepositRef),
    DoorEvent(DoorEvent),
    Pickup(PickupRequest),
    /// A carrier's driver collects an expired parcel for return, with a collection code.
    CollectReturn {
        collection_code: String,
    },
    FaultNotification(FaultNotification),
    /// A 1.1 device replays what it journaled offline.
    ReplayJournal(ReplayJournal),
    /// A 1.1 device reports a forced or blocked door.
    DoorAlarm(DoorAlarm),
}

#[derive(Deserialize)]
struct CollectionCode {
    collection_code: String,
}

#[derive(Deserialize)]
struct CourierCode {
    courier_code: String,
}

#[derive(Deserialize)]
struct Query {
    query: String,
}

fn payload<T: serde::de::DeserializeOwned>(action: &str, v: Value) -> Result<T, FrameError> {
    serde_json::from_value(v)
        .map_err(|e| FrameError::new(ErrorCode::ProtocolError, format!("invalid {action} payload: {e}")))
}

impl DeviceRequest {
    pub fn parse(action: &str, v: Value) -> Result<Self, FrameError> {
        Ok(match action {
            "BootNotification" => Self::BootNotification(payload(action, v)?),
            "Heartbeat" => Self::Heartbeat,
            "ListCarriers" => Self::ListCarriers,
            "EndInteraction" => Self::EndInteraction,
            "IdentifyCourier" => Self::IdentifyCourier {
                courier_code: payload::<CourierCode>(action, v)?.courier_code,
            },
            "SearchDirectory" => Self::SearchDirectory {
                query: payload::<Query>(action, v)?.query,
            },
            "StartDeposit" => Self::StartDeposit(payload(action, v)?),
            "DoesNotFit" => Self::DoesNotFit(payload(action, v)?),
            "CancelDeposit" => Self::CancelDeposit(payload(action, v)?),
            "DoorEvent" => Self::DoorEvent(payload(action, v)?),
            "Pickup" => Self::Pickup(PickupRequest::parse(v)?),
            "FaultNotification" => Self::FaultNotification(payload(action, v)?),
            "CollectReturn" => Self::CollectReturn {
                collection_code: payload::<CollectionCode>(action, v)?.collection_code,
            },
            "DoorAlarm" => Self::DoorAlarm(payload(action, v)?),
            "ReplayJournal" => {
                let r: ReplayJournal = payload(action, v)?;
                if r.events.is_empty() || r.events.len() > crate::domain::journal::MAX_EVENTS_PER_CALL {
                    return Err(FrameError::new(
                        ErrorCode::ProtocolError,
                        format!(
                            "invalid ReplayJournal payload: 1 to {} events per call",
                            crate::domain::journal::MAX_EVENTS_PER_CALL
                        ),
                    ));
                }
                Self::ReplayJournal(r)
            }
            other => {
                return Err(FrameError::new(
                    ErrorCode::NotImplemented,
                    format!("unknown action {other:?}"),
                ));
            }
        })
    }

    pub fn action(&self) -> &'static str {
        match self {
            Self::BootNotification(_) => "BootNotification",
            Self::Heartbeat => "Heartbeat",
            Self::ListCarriers => "ListCarriers",
            Self::IdentifyCourier { .. } => "IdentifyCourier",
            Self::EndInteraction => "EndInteraction",
            Self::SearchDirectory { .. } => "SearchDirectory",
            Self::StartDeposit(_) => "StartDeposit",
            Self::DoesNotFit(_) => "DoesNotFit",
            Self::CancelDeposit(_) => "CancelDeposit",
            Self::DoorEvent(_) => "DoorEvent",
            Self::Pickup(_) => "Pickup",
            Self::FaultNotification(_) => "FaultNotification",
            Self::CollectReturn { .. } => "CollectReturn",
            Self::ReplayJournal(_) => "ReplayJournal",
            Self::DoorAlarm(_) => "DoorAlarm",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_typed_payloads() {
        let r = DeviceRequest::parse(
            "StartDeposit",
            json!({"carrier_id": "c", "identify": {"phone": "555"}, "size": "M"}),
        )
        .unwrap();
        assert!(matches!(
            r,
            DeviceRequest::StartDeposit(StartDeposit { size: Size::M, .. })
        ));
        assert!(matches!(
            DeviceRequest::parse("Pickup", json!({"code": "12345678"})),
            Ok(DeviceRequest::Pickup(_))
        ));
        let e = DeviceRequest::parse("StartDeposit", json!({"size": 5})).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtocolError);
        let e = DeviceRequest::parse("SelfDestruct", json!({})).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotImplemented);
    }
}
