//! What an operation decided, as plain values: the messages to queue and the deadlines to set
//! or cancel. The domain returns them; `workflows::effects::persist` writes them into the
//! operation's transaction (the outbox rows and deadline rows), so the same decision can be
//! persisted one operation per commit today and many per commit in a batched write path.

use chrono::NaiveDateTime;
use serde_json::Value;

/// A signed webhook for a carrier.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub carrier_id: String,
    pub event: &'static str,
    pub data: Value,
}

/// A message to a parcel's recipient (rendered and sent by the notification actor).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub recipient_id: Option<String>,
    pub kind: &'static str,
    pub data: Value,
}

/// Which of a parcel's pending deadlines an operation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelDeadlines {
    None,
    All,
    Kinds(Vec<&'static str>),
}

/// The effects of one operation on one parcel.
#[derive(Debug, Clone, PartialEq)]
pub struct Effects {
    pub parcel_id: String,
    pub webhooks: Vec<Webhook>,
    pub notices: Vec<Notice>,
    /// Applied before `deadlines`, so an operation can replace a kind it also schedules.
    pub cancel: CancelDeadlines,
    pub deadlines: Vec<(&'static str, NaiveDateTime)>,
}

impl Effects {
    pub fn for_parcel(parcel_id: impl Into<String>) -> Self {
        Self {
            parcel_id: parcel_id.into(),
            webhooks: Vec::new(),
            notices: Vec::new(),
            cancel: CancelDeadlines::None,
            deadlines: Vec::new(),
        }
    }
}

/// RFC 3339 UTC text of a stored timestamp, as clients and webhooks see it.
pub fn rfc3339(t: NaiveDateTime) -> String {
    use chrono::TimeZone;
    chrono::Utc
        .from_utc_datetime(&t)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
