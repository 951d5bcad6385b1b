//! Keeping a 1.1 locker's local code list in step (docs/protocol.md §15.8): verifiers made off
//! the write path, one new version per change, and the update a device needs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::credentials::ServerKey;
use crate::db::local_lists::{self, Head, DIFF_VERSIONS};
use crate::db::DbConn;
use crate::error::AppError;
use crate::offline_list::{self, Kdf};

/// The kind of entry this server issues (keypad pickup codes).
pub const KIND: &str = "pickup";

/// The key of a locker's list in its current epoch, as the device gets it at boot (base64url).
pub fn list_key_text(key: &ServerKey, locker_id: &str, head: &Head) -> String {
    URL_SAFE_NO_PAD.encode(offline_list::list_key(key, locker_id, head.epoch))
}

/// An update for a device: the whole list (`base: None`) or the changes since `base`.
#[derive(Debug)]
pub struct ListUpdate {
    pub version: i64,
    pub base: Option<i64>,
    pub salt: String,
    pub upsert: Vec<local_lists::Entry>,
    pub remove: Vec<String>,
}

/// Makes the verifiers of sealed entries: the slow part, for a blocking thread. An entry whose
/// seal does not open (a changed server key) gets none, and is retired at the next sync when
/// its parcel's code no longer matches; it is logged.
pub fn make_verifiers(
    key: &ServerKey,
    locker_id: &str,
    head: &Head,
    kdf: &Kdf,
    sealed: Vec<(String, String)>,
) -> Vec<(String, u8, String)> {
    let list_key = offline_list::list_key(key, locker_id, head.epoch);
    sealed
        .into_iter()
        .filter_map(|(id, seal)| {
            let opened = key.decrypt(&seal).map_err(|e| {
                tracing::warn!(locker = %locker_id, entry = %id, error = %e, "a sealed list entry does not open");
            });
            let opened = opened.ok()?;
            let (code, factor) = opened.split_once('\0')?;
            let tag = offline_list::tag(&list_key, KIND, factor);
            let v = offline_list::verifier(&list_key, kdf, &head.salt, &id, code, factor);
            Some((id, tag, v))
        })
        .collect()
}

/// Stores the verifiers, retires stale entries (one new version if anything changed), and
/// returns the update a device holding `device_version` needs, if any: differential when it is
/// at most [`DIFF_VERSIONS`] behind, else the full list (also for a device that claims a version
/// the server never had).
pub fn settle(
    conn: &mut DbConn,
    locker_id: &str,
    verified: &[(String, u8, String)],
    now: chrono::NaiveDateTime,
    device_version: Option<i64>,
) -> Result<Option<ListUpdate>, AppError> {
    let stale = local_lists::stale(conn, locker_id, now)?;
    let head = local_lists::commit(conn, locker_id, verified, &stale)?;
    let version = head.version;
    if device_version == Some(version) {
        return Ok(None);
    }
    let base = device_version.filter(|dv| *dv >= 0 && *dv < version && version - dv <= DIFF_VERSIONS);
    let upsert = local_lists::upserts(conn, locker_id, base)?;
    let remove = match base {
        Some(dv) => local_lists::removals(conn, locker_id, dv)?,
        None => Vec::new(),
    };
    Ok(Some(ListUpdate {
        version,
        base,
        salt: head.salt,
        upsert,
        remove,
    }))
}
