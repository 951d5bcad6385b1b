//! Signed QR tokens (device protocol 1.1, docs/protocol.md §15.3): a token the locker can
//! check with no network, because the server signed what it opens.
//!
//! `lhq2.<base64url(claims JSON)>.<base64url(Ed25519 signature)>`, the signature over
//! `"lockerhub qr v1" ‖ claims bytes`. The server's signing key is derived from its secret key,
//! so every node of one installation signs alike and nothing new has to be stored; its id
//! (`kid`) is a digest of the public key, so a new secret key is a new `kid`.
//!
//! The 1.0 tokens (`lhq_` and 43 random characters) stay valid online: both kinds are found by
//! their hash, and a 1.1 token is also checked by its signature before anything is looked up.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use std::sync::{Arc, Mutex};

use crate::credentials::ServerKey;

/// What every 1.1 token starts with.
pub const PREFIX: &str = "lhq2.";
/// What the signature covers before the claims: a token signature is never valid as anything else.
const CONTEXT: &[u8] = b"lockerhub qr v1";
/// The longest token this server issues or reads; a scanned text beyond it is not ours.
pub const MAX_LEN: usize = crate::domain::hardware::MAX_QR_TOKEN_LEN;

/// What a token says: which locker, compartment and parcel it opens, its own id, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Format version: 1.
    pub v: u8,
    /// The signing key's id.
    pub kid: String,
    /// Locker id.
    pub l: String,
    /// Compartment number.
    pub c: i32,
    /// Parcel id.
    pub p: String,
    /// Token id: what a locker keeps once the token is spent.
    pub j: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// Why a token was not accepted. The kiosk shows them all as one "invalid QR code".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QrError {
    #[error("not a signed QR token")]
    Malformed,
    #[error("signed by a key this locker does not know")]
    UnknownKey,
    #[error("the signature does not verify")]
    BadSignature,
    #[error("for another locker")]
    OtherLocker,
    #[error("expired")]
    Expired,
}

/// A public key a device may check tokens with, as the boot result lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    pub kid: String,
    /// Always `Ed25519`.
    pub alg: String,
    /// The raw 32-byte key, base64url without padding.
    pub public_key: String,
}

impl PublicKey {
    fn verifying_key(&self) -> Option<VerifyingKey> {
        let raw: [u8; 32] = URL_SAFE_NO_PAD.decode(&self.public_key).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&raw).ok()
    }
}

/// The server's signing key for QR tokens.
#[derive(Clone)]
pub struct QrSigner {
    key: SigningKey,
    kid: String,
}

impl std::fmt::Debug for QrSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QrSigner({})", self.kid)
    }
}

impl QrSigner {
    pub fn new(server_key: &ServerKey) -> Self {
        let key = SigningKey::from_bytes(&server_key.derive("lockerhub qr signing key v1"));
        let kid = hex::encode(&Sha256::digest(key.verifying_key().as_bytes())[..6]);
        Self { key, kid }
    }

    /// The signer of `server_key`, derived once per process: deposits sign on the write path,
    /// and deriving the key (a scalar multiplication) each time would double the cost of it.
    /// A handful of server keys at most are ever live in one process (tests run several apps).
    pub fn of(server_key: &ServerKey) -> Arc<QrSigner> {
        static CACHE: Mutex<Vec<([u8; 32], Arc<QrSigner>)>> = Mutex::new(Vec::new());
        let id = server_key.derive("lockerhub qr signer id");
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s)) = cache.iter().find(|(k, _)| *k == id) {
            return s.clone();
        }
        let signer = Arc::new(QrSigner::new(server_key));
        if cache.len() >= 8 {
            cache.remove(0);
        }
        cache.push((id, signer.clone()));
        signer
    }

    /// [`verify`] under this server's own key, as the server checks a token (no key list to
    /// encode and decode).
    pub fn verify(&self, token: &str) -> Result<Claims, QrError> {
        verify_with(token, |kid| (kid == self.kid).then(|| self.key.verifying_key()))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            alg: "Ed25519".into(),
            public_key: URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
        }
    }

    /// A signed token for `claims` (whose `kid` is set to this key's).
    pub fn issue(&self, mut claims: Claims) -> String {
        claims.kid = self.kid.clone();
        let body = serde_json::to_vec(&claims).expect("claims serialize");
        let sig = self.key.sign(&[CONTEXT, &body].concat());
        format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(sig.to_bytes())
        )
    }
}

/// Whether `token` looks like a 1.1 token (it may still be forged).
pub fn is_signed_token(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// Checks a token's signature under one of `keys` and returns its claims, without judging
/// locker or expiry (see [`check`]).
pub fn verify(token: &str, keys: &[PublicKey]) -> Result<Claims, QrError> {
    verify_with(token, |kid| {
        keys.iter().find(|k| k.kid == kid).and_then(PublicKey::verifying_key)
    })
}

/// [`verify`], with the verifying key of a `kid` found by `key_of`.
fn verify_with(token: &str, key_of: impl FnOnce(&str) -> Option<VerifyingKey>) -> Result<Claims, QrError> {
    if token.len() > MAX_LEN {
        return Err(QrError::Malformed);
    }
    let rest = token.strip_prefix(PREFIX).ok_or(QrError::Malformed)?;
    let (body_b64, sig_b64) = rest.split_once('.').ok_or(QrError::Malformed)?;
    let body = URL_SAFE_NO_PAD.decode(body_b64).map_err(|_| QrError::Malformed)?;
    let sig: [u8; 64] = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or(QrError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&body).map_err(|_| QrError::Malformed)?;
    if claims.v != 1 {
        return Err(QrError::Malformed);
    }
    let key = key_of(&claims.kid).ok_or(QrError::UnknownKey)?;
    key.verify(&[CONTEXT, &body].concat(), &Signature::from_bytes(&sig))
        .map_err(|_| QrError::BadSignature)?;
    Ok(claims)
}

/// Everything a locker checks before it opens a door for a token: the signature, its own
/// locker id, and the expiry with `skew_secs` allowed in the recipient's favour. (Whether the
/// compartment holds a parcel, and whether the token is spent, the locker knows.)
pub fn check(
    token: &str,
    keys: &[PublicKey],
    locker_id: &str,
    now_unix: i64,
    skew_secs: i64,
) -> Result<Claims, QrError> {
    let claims = verify(token, keys)?;
    if claims.l != locker_id {
        return Err(QrError::OtherLocker);
    }
    if claims.exp + skew_secs < now_unix {
        return Err(QrError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            v: 1,
            kid: String::new(),
            l: "0193a3c0-0000-7000-8000-000000000001".into(),
            c: 7,
            p: "0193a3c0-0000-7000-8000-000000000002".into(),
            j: "Zk3n9Qp2Xw4r".into(),
            exp: 1_800_000_000,
        }
    }

    #[test]
    fn a_token_verifies_under_its_key_and_says_what_it_opens() {
        let s = QrSigner::new(&ServerKey::generate());
        let t = s.issue(claims());
        assert!(t.starts_with(PREFIX) && t.len() <= MAX_LEN, "{} chars", t.len());
        let got = check(&t, &[s.public_key()], &claims().l, 1_700_000_000, 300).unwrap();
        assert_eq!(got.c, 7);
        assert_eq!(got.kid, s.kid());
    }

    #[test]
    fn forged_altered_foreign_and_expired_tokens_are_refused() {
        let s = QrSigner::new(&ServerKey::generate());
        let other = QrSigner::new(&ServerKey::generate());
        let keys = [s.public_key()];
        let t = s.issue(claims());
        // Another compartment in the claims, the old signature kept.
        let (_, rest) = t.split_at(PREFIX.len());
        let (_, sig) = rest.split_once('.').unwrap();
        let altered = Claims {
            c: 8,
            kid: s.kid().into(),
            ..claims()
        };
        let forged = format!(
            "{PREFIX}{}.{sig}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&altered).unwrap())
        );
        assert_eq!(verify(&forged, &keys), Err(QrError::BadSignature));
        // Signed by another server, claiming this server's kid.
        let mut c2 = claims();
        c2.kid = s.kid().into();
        let body = serde_json::to_vec(&c2).unwrap();
        let sig = other.key.sign(&[CONTEXT, &body].concat());
        let theirs = format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(sig.to_bytes())
        );
        assert_eq!(verify(&theirs, &keys), Err(QrError::BadSignature));
        assert_eq!(verify(&other.issue(claims()), &keys), Err(QrError::UnknownKey));
        assert_eq!(s.verify(&other.issue(claims())), Err(QrError::UnknownKey));
        assert_eq!(s.verify(&forged), Err(QrError::BadSignature));
        assert_eq!(s.verify(&t).map(|c| c.c), Ok(7));
        assert_eq!(verify("lhq_abc", &keys), Err(QrError::Malformed));
        assert_eq!(verify("lhq2.!!!.???", &keys), Err(QrError::Malformed));
        assert_eq!(
            check(&t, &keys, "another-locker", 1_700_000_000, 300),
            Err(QrError::OtherLocker)
        );
        // Expired, with the skew allowance on the recipient's side.
        assert!(check(&t, &keys, &claims().l, 1_800_000_299, 300).is_ok());
        assert_eq!(check(&t, &keys, &claims().l, 1_800_000_301, 300), Err(QrError::Expired));
    }

    #[test]
    fn the_same_server_key_signs_alike() {
        let k = ServerKey::generate();
        assert_eq!(QrSigner::new(&k).public_key(), QrSigner::new(&k).public_key());
        assert_eq!(QrSigner::of(&k).public_key(), QrSigner::new(&k).public_key());
        let other = ServerKey::generate();
        assert_ne!(QrSigner::of(&other).kid(), QrSigner::of(&k).kid());
    }

    /// What issuing a token adds to a deposit (it runs in the writer's transaction). A
    /// measurement, not a test: `cargo test --release --lib qr_token -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; run on its own in release"]
    fn measure_issuing_a_token() {
        let key = ServerKey::generate();
        let runs = 2_000u32;
        let start = std::time::Instant::now();
        for i in 0..runs {
            let _ = QrSigner::of(&key).issue(Claims {
                j: format!("{i:016}"),
                ..claims()
            });
        }
        let cached = start.elapsed() / runs;
        let start = std::time::Instant::now();
        for i in 0..runs / 10 {
            let _ = QrSigner::new(&key).issue(Claims {
                j: format!("{i:016}"),
                ..claims()
            });
        }
        let derived = start.elapsed() / (runs / 10);
        println!("issuing a signed QR token: {cached:?} with the cached signer, {derived:?} deriving it each time");
    }
}
