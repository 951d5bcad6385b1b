//! JSON Schema's `integer` includes whole numbers written as floats (`3.0`); serde's integers
//! refuse them. The OpenAPI document is the contract, so integer fields of request bodies take
//! `#[serde(deserialize_with = "whole")]` and accept what the document promises.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Largest integer a float holds exactly (2^53): past it `x.0` may not be the number sent.
const EXACT: f64 = 9_007_199_254_740_992.0;

/// Deserializes `T` with every whole-valued float in the value turned into an integer.
pub fn whole<'de, T, D>(de: D) -> Result<T, D::Error>
where
    T: DeserializeOwned,
    D: Deserializer<'de>,
{
    T::deserialize(integral(Value::deserialize(de)?)).map_err(serde::de::Error::custom)
}

/// [`whole`] for PATCH fields that tell "absent" from "null" (see `double_option`).
pub fn whole_double_option<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: DeserializeOwned,
    D: Deserializer<'de>,
{
    whole::<Option<T>, D>(de).map(Some)
}

fn integral(v: Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() <= EXACT => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        Value::Object(fields) => Value::Object(fields.into_iter().map(|(k, v)| (k, integral(v))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "whole")]
        n: Option<i32>,
        #[serde(default, deserialize_with = "whole")]
        v: Vec<i32>,
    }

    #[test]
    fn whole_floats_are_integers() {
        let t: T = serde_json::from_str(r#"{"n": 3.0, "v": [1, 2.0]}"#).unwrap();
        assert_eq!((t.n, t.v), (Some(3), vec![1, 2]));
        assert!(serde_json::from_str::<T>(r#"{"n": 3.5}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"n": 1e12}"#).is_err());
        assert_eq!(serde_json::from_str::<T>(r#"{"n": null}"#).unwrap().n, None);
    }
}
