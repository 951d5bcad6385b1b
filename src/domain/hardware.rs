//! What a locker's hardware senses and reports, as the rules see it: doors, occupancy,
//! and how a typed code or scanned token is told apart from noise.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Door {
    Open,
    Closed,
}

/// One compartment as the hardware senses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompartmentSnapshot {
    pub number: i32,
    pub door: Door,
    pub occupied: bool,
}

/// A discrepancy found when reconciling the boot snapshot with the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discrepancy {
    pub compartment: i32,
    pub kind: String,
    pub detail: String,
}

/// What the recipient presents at the kiosk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pickup {
    Code(String),
    QrToken(String),
}

/// A typed code as it is looked up: trimmed, and `None` when it cannot be any code we issue
/// (empty, not digits, absurdly long), so nothing is hashed or queried for it.
pub fn typed_code(raw: &str) -> Option<&str> {
    let code = raw.trim();
    (!code.is_empty() && code.len() <= 32 && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// The longest scanned text that can be one of our QR tokens (a signed 1.1 token is about
/// 300 characters; a 1.0 one 47).
pub const MAX_QR_TOKEN_LEN: usize = 400;

/// A scanned QR token as it is looked up, or `None` when it is too long to be one of ours.
pub fn scanned_token(raw: &str) -> Option<&str> {
    (raw.len() <= MAX_QR_TOKEN_LEN).then(|| raw.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_digits_of_sane_length() {
        assert_eq!(typed_code(" 12345678 "), Some("12345678"));
        assert_eq!(typed_code(""), None);
        assert_eq!(typed_code("12a4"), None);
        assert_eq!(typed_code(&"1".repeat(33)), None);
    }

    #[test]
    fn tokens_have_a_length_limit() {
        assert_eq!(scanned_token(" lhq_abc "), Some("lhq_abc"));
        assert_eq!(scanned_token(&"x".repeat(MAX_QR_TOKEN_LEN + 1)), None);
    }
}
