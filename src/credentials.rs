//! Secrets: generating them, and storing them only in forms that cannot be read back.
//!
//! - API keys and device credentials carry 256 bits of randomness, so a plain SHA-256 is a
//!   sufficient hash and keeps authentication cheap during a 50,000-locker reconnect storm.
//! - Pickup and collection codes are short, so they are hashed with HMAC under the server key
//!   and a per-locker salt: a stolen database alone does not let anyone brute-force them.
//! - Webhook signing secrets must be usable to sign, so they are encrypted (ChaCha20-Poly1305)
//!   under the server key rather than hashed.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

/// A random bearer token with a recognisable prefix (`lhk_` admin, `lhd_` device, `lhc_` carrier).
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A Standard Webhooks secret: `whsec_` and base64 of 32 random bytes.
pub fn generate_webhook_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// A numeric code of `len` digits, uniformly random.
pub fn generate_numeric_code(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len).map(|_| char::from(b'0' + rng.gen_range(0..10u8))).collect()
}

/// Hex SHA-256 of a high-entropy token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The server's own secret: pepper for code hashes and key for secrets at rest.
#[derive(Clone)]
pub struct ServerKey([u8; 32]);

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

impl ServerKey {
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let bytes = hex::decode(s.trim()).map_err(|_| "secret_key must be 64 hex characters".to_string())?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "secret_key must be 64 hex characters".to_string())?;
        Ok(Self(arr))
    }

    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Keyed hash of a short code, salted per locker; equal codes at one locker hash equally,
    /// which is what lets the database enforce uniqueness among live parcels.
    pub fn code_hash(&self, salt: &str, code: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(salt.as_bytes());
        mac.update(b"\0");
        mac.update(code.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A 32-byte key for one purpose, derived from this one (HMAC-SHA256 over the label), so
    /// each use of the server key has its own and none can be turned into another.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn encrypt(&self, plaintext: &str) -> String {
        let cipher = ChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("ChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn decrypt(&self, stored: &str) -> Result<String, String> {
        let raw = URL_SAFE_NO_PAD
            .decode(stored)
            .map_err(|_| "stored secret is not base64".to_string())?;
        if raw.len() < 12 {
            return Err("stored secret is truncated".into());
        }
        let (nonce, ct) = raw.split_at(12);
        let cipher = ChaCha20Poly1305::new((&self.0).into());
        let pt = cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| "stored secret does not decrypt under this server key".to_string())?;
        String::from_utf8(pt).map_err(|_| "stored secret is not UTF-8".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_and_distinct() {
        let a = generate_token("lhk_");
        assert!(a.starts_with("lhk_") && a.len() > 40);
        assert_ne!(a, generate_token("lhk_"));
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&generate_token("lhk_")));
    }

    #[test]
    fn numeric_codes() {
        let c = generate_numeric_code(8);
        assert_eq!(c.len(), 8);
        assert!(c.chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn code_hash_depends_on_key_salt_and_code() {
        let k = ServerKey::generate();
        let h = k.code_hash("salt", "12345678");
        assert_eq!(h, k.code_hash("salt", "12345678"));
        assert_ne!(h, k.code_hash("salt2", "12345678"));
        assert_ne!(h, k.code_hash("salt", "12345679"));
        assert_ne!(h, ServerKey::generate().code_hash("salt", "12345678"));
    }

    #[test]
    fn secrets_round_trip_and_resist_tampering() {
        let k = ServerKey::generate();
        let enc = k.encrypt("whsec_abc");
        assert_eq!(k.decrypt(&enc).unwrap(), "whsec_abc");
        assert!(ServerKey::generate().decrypt(&enc).is_err());
        assert!(k.decrypt("AAAA").is_err());
        assert_eq!(ServerKey::from_hex(&k.to_hex()).unwrap().to_hex(), k.to_hex());
        assert!(ServerKey::from_hex("abc").is_err());
    }
}
