//! The notification outbox: what the notifier reads and how it records each outcome.

use chrono::NaiveDateTime;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AsChangeset, QueryFragment};
use diesel::sqlite::Sqlite;
use serde_json::Value;

use super::direct;
use super::schema::{
    carriers, lockers, notification_attempts as a, notification_outbox as n, parcels, recipients, sites,
};
use super::{now, DbConn};

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = n)]
pub struct Notification {
    pub id: String,
    pub parcel_id: String,
    pub recipient_id: Option<String>,
    /// `deposited`, `reminder`, `expiring_soon`, `returned` or `removed`.
    pub kind: String,
    /// The channel used (or being tried): `email`, `sms`, `push`, or `log`.
    pub channel: Option<String>,
    /// What was (or will be) sent. Pickup codes are redacted once it is sent.
    #[schema(value_type = Object)]
    #[serde(serialize_with = "as_json")]
    pub payload: String,
    /// `pending`, `sent` or `dead`.
    pub status: String,
    pub attempts: i32,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: NaiveDateTime,
    pub last_error: Option<String>,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sent_at: Option<NaiveDateTime>,
}

fn as_json<S: serde::Serializer>(s: &str, ser: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    let mut v: Value = serde_json::from_str(s).unwrap_or(Value::Null);
    redact(&mut v);
    v.serialize(ser)
}

/// Replaces secrets in a payload: the code and QR token fields, and every place their values
/// appear (such as the rendered message). What remains is safe to keep and show.
pub fn redact(v: &mut Value) {
    let secrets = secrets_of(v);
    scrub(v, &secrets);
}

fn secrets_of(v: &Value) -> Vec<String> {
    ["pickup_code", "qr_token"]
        .iter()
        .filter_map(|k| v.get(*k).and_then(Value::as_str))
        .filter(|s| !s.is_empty() && *s != "[redacted]")
        .map(str::to_string)
        .collect()
}

fn scrub(v: &mut Value, secrets: &[String]) {
    match v {
        Value::String(s) => {
            for secret in secrets {
                if s.contains(secret.as_str()) {
                    *s = s.replace(secret.as_str(), "[redacted]");
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| scrub(x, secrets)),
        Value::Object(o) => {
            for k in ["pickup_code", "qr_token"] {
                if o.contains_key(k) {
                    o.insert(k.into(), Value::String("[redacted]".into()));
                }
            }
            o.values_mut().for_each(|x| scrub(x, secrets));
        }
        _ => {}
    }
}

/// `at` is the application's clock (tests move it past a retry's backoff).
pub fn due(conn: &mut DbConn, exclude: &[String], limit: i64, at: NaiveDateTime) -> QueryResult<Vec<Notification>> {
    n::table
        .filter(n::status.eq("pending"))
        .filter(n::next_attempt_at.le(at))
        .filter(n::id.ne_all(exclude))
        .order((n::next_attempt_at.asc(), n::id.asc()))
        .limit(limit)
        .select(Notification::as_select())
        .load(conn)
}

/// When the earliest pending notification that is not due yet comes due (a retry): the
/// notification actor sets a timer for it instead of waiting for the next scan.
pub fn next_due(conn: &mut DbConn, at: NaiveDateTime) -> QueryResult<Option<NaiveDateTime>> {
    n::table
        .filter(n::status.eq("pending"))
        .filter(n::next_attempt_at.gt(at))
        .select(diesel::dsl::min(n::next_attempt_at))
        .first(conn)
}

/// Everything a message needs besides its payload.
#[derive(Debug, Clone)]
pub struct Context {
    pub recipient: Option<super::recipients::Recipient>,
    pub site_id: String,
    pub site_name: String,
    pub site_address: String,
    pub time_zone: String,
    pub locker_name: String,
    pub carrier_name: String,
    pub tracking_number: String,
    pub deadline: Option<NaiveDateTime>,
}

pub fn context(conn: &mut DbConn, parcel_id: &str, recipient_id: Option<&str>) -> QueryResult<Context> {
    let (site_id, locker_id, carrier_id, tracking_number, deadline): (
        String,
        Option<String>,
        String,
        String,
        Option<NaiveDateTime>,
    ) = parcels::table
        .find(parcel_id)
        .select((
            parcels::site_id,
            parcels::locker_id,
            parcels::carrier_id,
            parcels::tracking_number,
            parcels::pickup_deadline,
        ))
        .get_result(conn)?;
    let (site_name, site_address, time_zone): (String, String, String) = sites::table
        .find(&site_id)
        .select((sites::name, sites::address, sites::time_zone))
        .get_result(conn)?;
    let locker_name = match locker_id {
        Some(l) => lockers::table.find(l).select(lockers::name).get_result(conn)?,
        None => String::new(),
    };
    let carrier_name = carriers::table
        .find(carrier_id)
        .select(carriers::name)
        .get_result(conn)?;
    let recipient = match recipient_id {
        Some(r) => Some(
            recipients::table
                .find(r)
                .select(super::recipients::Recipient::as_select())
                .get_result(conn)?,
        ),
        None => None,
    };
    Ok(Context {
        recipient,
        site_id,
        site_name,
        site_address,
        time_zone,
        locker_name,
        carrier_name,
        tracking_number,
        deadline,
    })
}

/// Changes one queued notification's columns, with a statement prepared once.
fn update_row<V>(conn: &mut DbConn, id: &str, changes: V) -> QueryResult<()>
where
    V: AsChangeset<Target = n::table>,
    V::Changeset: QueryFragment<Sqlite> + QueryFragment<Pg>,
{
    direct::execute(conn, direct::update(n::table, n::id.eq(id), changes)).map(drop)
}

/// Sent: secrets are redacted from the stored payload, which keeps the rendered message.
pub fn mark_sent(conn: &mut DbConn, id: &str, channel: &str, mut record: Value) -> QueryResult<()> {
    redact(&mut record);
    update_row(
        conn,
        id,
        (
            n::status.eq("sent"),
            n::channel.eq(channel),
            n::attempts.eq(n::attempts + 1),
            n::sent_at.eq(now()),
            n::last_error.eq(None::<String>),
            n::payload.eq(record.to_string()),
        ),
    )
}

pub fn mark_retry(conn: &mut DbConn, id: &str, channel: &str, at: NaiveDateTime, error: &str) -> QueryResult<()> {
    update_row(
        conn,
        id,
        (
            n::channel.eq(channel),
            n::attempts.eq(n::attempts + 1),
            n::next_attempt_at.eq(at),
            n::last_error.eq(error),
        ),
    )
}

/// Moves to another channel, starting its attempts afresh.
pub fn switch_channel(conn: &mut DbConn, id: &str, channel: &str, error: &str) -> QueryResult<()> {
    update_row(
        conn,
        id,
        (
            n::channel.eq(channel),
            n::attempts.eq(0),
            n::next_attempt_at.eq(now()),
            n::last_error.eq(error),
        ),
    )
}

/// Gives up. The payload is redacted: nothing will send it now.
pub fn mark_dead(conn: &mut DbConn, id: &str, error: &str) -> QueryResult<()> {
    let payload: String = n::table.find(id).select(n::payload).get_result(conn)?;
    let mut v: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
    redact(&mut v);
    update_row(
        conn,
        id,
        (
            n::status.eq("dead"),
            n::attempts.eq(n::attempts + 1),
            n::last_error.eq(error),
            n::payload.eq(v.to_string()),
        ),
    )
}

/// Pending messages of a kind for a parcel are superseded (a new code was issued).
pub fn supersede(conn: &mut DbConn, parcel_id: &str, kind: &str) -> QueryResult<usize> {
    let ids: Vec<String> = n::table
        .filter(n::parcel_id.eq(parcel_id))
        .filter(n::kind.eq(kind))
        .filter(n::status.eq("pending"))
        .select(n::id)
        .load(conn)?;
    for id in &ids {
        mark_dead(conn, id, "superseded by a newer code")?;
    }
    Ok(ids.len())
}

/// One delivery attempt, as the notification log shows it.
#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = a)]
pub struct Attempt {
    #[serde(skip)]
    pub notification_id: String,
    /// The channel tried: `email`, `sms` or `push`; null when none could be (no recipient, no
    /// contact details, a broken template).
    pub channel: Option<String>,
    /// `sent`; `transient_failure` (retried on the same channel); or `permanent_failure` (the
    /// next channel in the recipient's preferences is tried, or the notification is dead).
    pub outcome: String,
    /// What the transport answered, for a failure.
    pub error: Option<String>,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub attempted_at: NaiveDateTime,
}

/// How an attempt ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Sent,
    TransientFailure,
    PermanentFailure,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::TransientFailure => "transient_failure",
            Self::PermanentFailure => "permanent_failure",
        }
    }
}

/// Appends an attempt to the notification's log; written with the outcome it led to.
pub fn record_attempt(
    conn: &mut DbConn,
    id: &str,
    channel: Option<&str>,
    outcome: AttemptOutcome,
    error: Option<&str>,
) -> QueryResult<()> {
    // A gateway may echo the message, code included, in its error: the log keeps no secrets.
    let payload: String = n::table.find(id).select(n::payload).get_result(conn)?;
    let secrets = secrets_of(&serde_json::from_str(&payload).unwrap_or(Value::Null));
    let error = error.map(|e| {
        let mut v = Value::String(e.to_string());
        scrub(&mut v, &secrets);
        v.as_str().unwrap_or_default().to_string()
    });
    diesel::insert_into(a::table)
        .values((
            a::id.eq(super::new_id()),
            a::notification_id.eq(id),
            a::channel.eq(channel.filter(|c| !c.is_empty())),
            a::outcome.eq(outcome.as_str()),
            a::error.eq(error),
            a::attempted_at.eq(now()),
        ))
        .execute(conn)
        .map(drop)
}

/// A notification with every attempt to deliver it, oldest first.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LogEntry {
    #[serde(flatten)]
    pub notification: Notification,
    /// Every delivery attempt, on every channel, oldest first: an email that bounced before the
    /// SMS fallback succeeded shows here with its error, although `channel` and `last_error`
    /// describe only the latest attempt.
    pub attempt_log: Vec<Attempt>,
}

pub fn of_parcel(conn: &mut DbConn, parcel_id: &str) -> QueryResult<Vec<Notification>> {
    n::table
        .filter(n::parcel_id.eq(parcel_id))
        .order(n::id.asc())
        .select(Notification::as_select())
        .load(conn)
}

/// The notification log of a parcel: its notifications, each with its attempts.
pub fn log_of_parcel(conn: &mut DbConn, parcel_id: &str) -> QueryResult<Vec<LogEntry>> {
    let list = of_parcel(conn, parcel_id)?;
    let ids: Vec<&str> = list.iter().map(|x| x.id.as_str()).collect();
    let mut attempts: Vec<Attempt> = a::table
        .filter(a::notification_id.eq_any(&ids))
        .order((a::attempted_at.asc(), a::id.asc()))
        .select(Attempt::as_select())
        .load(conn)?;
    Ok(list
        .into_iter()
        .map(|notification| {
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut attempts)
                .into_iter()
                .partition(|x| x.notification_id == notification.id);
            attempts = rest;
            LogEntry {
                notification,
                attempt_log: mine,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_reaches_rendered_text() {
        let mut v = serde_json::json!({"pickup_code": "12345678", "qr_token": "lhq_abc",
            "rendered": {"text": "code 12345678, QR http://x/qr/lhq_abc"}});
        redact(&mut v);
        let s = v.to_string();
        assert!(!s.contains("12345678") && !s.contains("lhq_abc"), "{s}");
        assert_eq!(v["rendered"]["text"], "code [redacted], QR http://x/qr/[redacted]");
    }
}
