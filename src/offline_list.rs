//! The local code list of a 1.1 locker (docs/protocol.md §15.8): verifiers that let a locker
//! check, with no server and without ever holding a code, a typed pickup code and second
//! factor, a driver's courier code, a collection code, and a pre-advised parcel's tracking
//! number (see [`EntryKind`] for what each kind's verifier is made of).
//!
//! ```text
//! list_key = HMAC-SHA256(derive(server key, "lockerhub offline list v1"), locker_id ‖ 0 ‖ epoch)
//! tag      = HMAC-SHA256(list_key, "tag" ‖ 0 ‖ kind ‖ 0 ‖ factor or code, by kind)[0]
//! verifier = HMAC-SHA256(list_key, Argon2id(code ‖ 0 ‖ factor, salt = list_salt ‖ entry id))
//! ```
//!
//! Keyed per locker (a list copied from one locker opens nothing at another), one slow hash
//! per guess per entry (salted by entry), and the one-byte tag of the typed factor narrows the
//! entries a kiosk checks to one or two, whatever the list's size. Server and simulated device
//! use this same code.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::credentials::ServerKey;

/// Argon2id's cost, sent with the list so the device hashes alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kdf {
    /// Always `argon2id`.
    pub alg: KdfAlg,
    /// Memory, KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KdfAlg {
    Argon2id,
}

impl Kdf {
    /// The OWASP minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
    pub const DEFAULT: Kdf = Kdf {
        alg: KdfAlg::Argon2id,
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };

    /// Whether Argon2 accepts these parameters (and a kiosk could afford them: at most 256 MiB).
    pub fn valid(&self) -> bool {
        Params::new(self.m_kib, self.t, self.p, Some(32)).is_ok() && self.m_kib <= 256 * 1024 && self.t <= 10
    }
}

/// What an entry lets a kiosk do offline, and which typed inputs make its verifier:
///
/// | kind | code | factor | the tag is of |
/// |---|---|---|---|
/// | `pickup` | the pickup code | the recipient's second factor | the factor |
/// | `collection` | the collection code | H(courier code) | the factor |
/// | `courier` | H(courier code) | (empty) | the code |
/// | `deposit` | the tracking number | H(courier code) | the code |
///
/// H is SHA-256 in lower-case hex, as the server stores courier codes: the server never holds a
/// courier code itself, and a list thief who wants a collection code must find the carrier's
/// 60-bit courier code first. A tag of a code (courier, tracking number) tells a thief 8 bits
/// of something that is either 60 bits strong or printed on the parcel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Pickup,
    Collection,
    Courier,
    Deposit,
}

impl EntryKind {
    pub const ALL: [EntryKind; 4] = [Self::Pickup, Self::Collection, Self::Courier, Self::Deposit];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pickup => "pickup",
            Self::Collection => "collection",
            Self::Courier => "courier",
            Self::Deposit => "deposit",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Which of an entry's two inputs its tag is made of.
    pub fn tagged<'a>(self, code: &'a str, factor: &'a str) -> &'a str {
        match self {
            Self::Pickup | Self::Collection => factor,
            Self::Courier | Self::Deposit => code,
        }
    }
}

/// A courier code as the server holds it and a kiosk derives it from the typed code
/// (`H(courier code)` above).
pub fn courier_hash(typed: &str) -> String {
    crate::credentials::hash_token(typed.trim())
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length")
}

/// The key of one locker's list in one epoch. The device receives it at boot.
pub fn list_key(server_key: &ServerKey, locker_id: &str, epoch: i32) -> [u8; 32] {
    let mut m = mac(&server_key.derive("lockerhub offline list v1"));
    m.update(locker_id.as_bytes());
    m.update(&[0]);
    m.update(epoch.to_string().as_bytes());
    m.finalize().into_bytes().into()
}

/// The one-byte tag of a normalised second factor: which entries a typed factor selects.
pub fn tag(list_key: &[u8; 32], kind: &str, factor: &str) -> u8 {
    let mut m = mac(list_key);
    m.update(b"tag\0");
    m.update(kind.as_bytes());
    m.update(&[0]);
    m.update(factor.as_bytes());
    m.finalize().into_bytes()[0]
}

/// The verifier of `code` with the normalised `factor` for entry `entry`: the slow part.
pub fn verifier(list_key: &[u8; 32], kdf: &Kdf, list_salt: &str, entry: &str, code: &str, factor: &str) -> String {
    let params = Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32)).unwrap_or_else(|_| {
        Params::new(Kdf::DEFAULT.m_kib, Kdf::DEFAULT.t, Kdf::DEFAULT.p, Some(32)).expect("default parameters are valid")
    });
    let mut out = [0u8; 32];
    let salt = format!("{list_salt}{entry}");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(format!("{code}\0{factor}").as_bytes(), salt.as_bytes(), &mut out)
        .expect("Argon2 takes any password and a salt of 8 bytes or more");
    let mut m = mac(list_key);
    m.update(&out);
    URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
}

/// Whether `code` and `factor` open the entry whose verifier is `expected` (constant-time).
pub fn check(
    list_key: &[u8; 32],
    kdf: &Kdf,
    list_salt: &str,
    entry: &str,
    code: &str,
    factor: &str,
    expected: &str,
) -> bool {
    let got = verifier(list_key, kdf, list_salt, entry, code, factor);
    subtle::ConstantTimeEq::ct_eq(got.as_bytes(), expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: Kdf = Kdf {
        alg: KdfAlg::Argon2id,
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn a_verifier_opens_for_its_code_and_factor_only() {
        let k = ServerKey::generate();
        let key = list_key(&k, "L1", 1);
        let v = verifier(&key, &CHEAP, "salt-0123456789", "e-1", "48213906", "2030");
        assert!(check(&key, &CHEAP, "salt-0123456789", "e-1", "48213906", "2030", &v));
        assert!(!check(&key, &CHEAP, "salt-0123456789", "e-1", "48213907", "2030", &v));
        assert!(!check(&key, &CHEAP, "salt-0123456789", "e-1", "48213906", "2031", &v));
        // Another entry, another locker, another epoch: nothing opens.
        assert!(!check(&key, &CHEAP, "salt-0123456789", "e-2", "48213906", "2030", &v));
        let other = list_key(&k, "L2", 1);
        assert!(!check(&other, &CHEAP, "salt-0123456789", "e-1", "48213906", "2030", &v));
        assert_ne!(list_key(&k, "L1", 2), key);
    }

    #[test]
    fn tags_are_keyed_and_follow_the_factor() {
        let k = ServerKey::generate();
        let key = list_key(&k, "L1", 1);
        assert_eq!(tag(&key, "pickup", "2030"), tag(&key, "pickup", "2030"));
        // 256 factors do not all share one tag.
        let tags: std::collections::HashSet<u8> = (0..256).map(|f| tag(&key, "pickup", &f.to_string())).collect();
        assert!(tags.len() > 100, "{}", tags.len());
    }

    #[test]
    fn parameters_are_checked() {
        assert!(Kdf::DEFAULT.valid());
        assert!(CHEAP.valid());
        assert!(!Kdf { m_kib: 1, ..CHEAP }.valid());
        assert!(!Kdf { t: 0, ..CHEAP }.valid());
        assert!(!Kdf {
            m_kib: 1 << 20,
            ..CHEAP
        }
        .valid());
    }

    /// The cost of one check at the default parameters, for docs/security.md §9.5. A
    /// measurement, not a test: `cargo test --release --lib offline_list -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; run on its own in release"]
    fn measure_one_check_at_the_default_cost() {
        let key = list_key(&ServerKey::generate(), "L1", 1);
        let runs = 20;
        let start = std::time::Instant::now();
        for i in 0..runs {
            let _ = verifier(
                &key,
                &Kdf::DEFAULT,
                "salt-0123456789",
                &format!("e-{i}"),
                "48213906",
                "2030",
            );
        }
        let each = start.elapsed() / runs;
        println!("Argon2id m=19 MiB t=2 p=1: {each:?} per check ({runs} runs)");
    }
}
