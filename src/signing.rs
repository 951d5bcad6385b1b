//! Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed by the base64 part of a `whsec_` secret,
//! sent as space-separated `v1,<base64>` entries so several keys can be valid during rotation.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Most signatures accepted in one header (bounds the work an attacker can cause).
const MAX_SIGNATURES: usize = 8;

fn key_bytes(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).ok()
}

/// The `v1,<base64>` signature of one message under one secret.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = key_bytes(secret).unwrap_or_default();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header value for a message, signed with every given secret.
pub fn signature_header(secrets: &[String], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|s| sign(s, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing or malformed webhook-id header")]
    BadId,
    #[error("missing or malformed webhook-timestamp header")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes from the server's clock")]
    Stale,
    #[error("missing webhook-signature header")]
    MissingSignature,
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies a message: the id is sane, the timestamp is fresh, and at least one `v1`
/// signature in the header matches one of `secrets`. Comparison is constant-time.
pub fn verify(
    secrets: &[String],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let id = id
        .filter(|i| !i.is_empty() && i.len() <= 128 && i.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(VerifyError::BadId)?;
    let ts: i64 = timestamp
        .and_then(|t| t.trim().parse().ok())
        .ok_or(VerifyError::BadTimestamp)?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(VerifyError::Stale);
    }
    let header = signatures
        .filter(|s| !s.trim().is_empty())
        .ok_or(VerifyError::MissingSignature)?;
    let given: Vec<Vec<u8>> = header
        .split_whitespace()
        .take(MAX_SIGNATURES)
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    for secret in secrets {
        let Some(key) = key_bytes(secret) else { continue };
        for sig in &given {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(ts.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            if mac.verify_slice(sig).is_ok() {
                return Ok(());
            }
        }
    }
    Err(VerifyError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks specification's reference tests.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn matches_the_reference_signature() {
        assert_eq!(
            sign(SECRET, ID, TS, BODY),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn verifies_and_rejects() {
        let sig = sign(SECRET, ID, TS, BODY);
        let s = vec![SECRET.to_string()];
        assert_eq!(
            verify(&s, Some(ID), Some(&TS.to_string()), Some(&sig), BODY, TS),
            Ok(())
        );
        // Several signatures: one from an old key, one from the current one.
        let rotated = format!("v1,AAAA {sig}");
        assert_eq!(
            verify(&s, Some(ID), Some(&TS.to_string()), Some(&rotated), BODY, TS + 10),
            Ok(())
        );
        assert_eq!(
            verify(&s, Some(ID), Some(&TS.to_string()), Some(&sig), b"{}", TS),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&s, Some("other"), Some(&TS.to_string()), Some(&sig), BODY, TS),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(&s, Some(ID), Some(&TS.to_string()), Some(&sig), BODY, TS + 301),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(&s, Some(ID), Some(&TS.to_string()), Some(&sig), BODY, TS - 301),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(&s, Some(ID), Some("soon"), Some(&sig), BODY, TS),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(
            verify(&s, None, Some(&TS.to_string()), Some(&sig), BODY, TS),
            Err(VerifyError::BadId)
        );
        assert_eq!(
            verify(&s, Some(ID), Some(&TS.to_string()), None, BODY, TS),
            Err(VerifyError::MissingSignature)
        );
        let other = vec!["whsec_".to_string() + &STANDARD.encode([7u8; 32])];
        assert_eq!(
            verify(&other, Some(ID), Some(&TS.to_string()), Some(&sig), BODY, TS),
            Err(VerifyError::NoMatch)
        );
    }
}
