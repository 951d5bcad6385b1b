//! Timestamps are stored as naive UTC and shown to clients as RFC 3339 with `Z`.

use chrono::{NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::Serializer;

pub fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&Utc.from_utc_datetime(t).to_rfc3339_opts(SecondsFormat::Millis, true))
}

pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serialize(t, s),
            None => s.serialize_none(),
        }
    }
}
