//! What identifies a device call's content, so a retry (same id, same content) can be told from
//! a reused id (same id, other content).

use sha2::{Digest, Sha256};

/// SHA-256 of the action and the payload as parsed JSON (object keys sorted, so key order and
/// whitespace do not matter). Stable across server versions: it is stored, as hex, with the
/// answer it guards. Kept as 32 bytes in memory, half its hex form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(action: &str, payload: &serde_json::Value) -> Self {
        let mut h = Sha256::new();
        h.update(action.as_bytes());
        h.update(b"\n");
        h.update(payload.to_string().as_bytes());
        Self(h.finalize().into())
    }

    /// The stored (hex) form.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Whether a stored (hex) fingerprint is this one.
    pub fn is_hex(&self, stored: &str) -> bool {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(stored, &mut bytes).is_ok() && bytes == self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter_and_values_do() {
        let a = Fingerprint::of("Pickup", &json!({"code": "123456", "x": 1}));
        let b = Fingerprint::of(
            "Pickup",
            &serde_json::from_str(r#"{ "x":1, "code":"123456" }"#).unwrap(),
        );
        assert_eq!(a, b);
        assert_ne!(a, Fingerprint::of("Pickup", &json!({"code": "123457", "x": 1})));
        assert_ne!(a, Fingerprint::of("CollectReturn", &json!({"code": "123456", "x": 1})));
    }

    #[test]
    fn the_stored_form_round_trips() {
        let a = Fingerprint::of("Heartbeat", &json!({}));
        assert_eq!(a.to_hex().len(), 64);
        assert!(a.is_hex(&a.to_hex()));
        assert!(!a.is_hex(&Fingerprint::of("Heartbeat", &json!({"a": 1})).to_hex()));
        assert!(!a.is_hex("not hex"));
    }
}
