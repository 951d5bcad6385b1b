//! Keeping a 1.1 locker's local code list in step (docs/protocol.md §15.8): verifiers made off
//! the write path, one new version per change, and the update a device needs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::credentials::ServerKey;
use crate::db::local_lists::{self, Head, DIFF_VERSIONS};
use crate::db::DbConn;
use crate::error::AppError;
use crate::offline_list::{self, EntryKind, Kdf};

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

/// How long a courier entry lives before it is made again (with the carrier's code as it is
/// then): a carrier deactivated while a locker is offline stops opening it within this.
pub const COURIER_ENTRY_DAYS: i64 = 30;

/// A new entry for `code` and `factor`, sealed under the server key until its verifier is made.
pub fn seal(key: &ServerKey, code: &str, factor: &str) -> String {
    key.encrypt(&format!("{code}\0{factor}"))
}

/// Makes the verifiers of sealed entries: the slow part, for a blocking thread. An entry whose
/// seal does not open (a changed server key) gets none, and is retired at the next sync when
/// its parcel's code no longer matches; it is logged.
pub fn make_verifiers(
    key: &ServerKey,
    locker_id: &str,
    head: &Head,
    kdf: &Kdf,
    sealed: Vec<(String, EntryKind, String)>,
) -> Vec<(String, u8, String)> {
    let list_key = offline_list::list_key(key, locker_id, head.epoch);
    sealed
        .into_iter()
        .filter_map(|(id, kind, seal)| {
            let opened = key.decrypt(&seal).map_err(|e| {
                tracing::warn!(locker = %locker_id, entry = %id, error = %e, "a sealed list entry does not open");
            });
            let opened = opened.ok()?;
            let (code, factor) = opened.split_once('\0')?;
            let tag = offline_list::tag(&list_key, kind.as_str(), kind.tagged(code, factor));
            let v = offline_list::verifier(&list_key, kdf, &head.salt, &id, code, factor);
            Some((id, tag, v))
        })
        .collect()
}

/// An entry for one parcel's compartment at a 1.1 locker (nothing at a 1.0 one), sealed in the
/// transaction that issues its code; its verifier is made by the next sync, off the write path.
pub struct ParcelEntry<'a> {
    pub kind: EntryKind,
    pub parcel_id: &'a str,
    pub compartment: i32,
    /// See `local_lists::NewEntry`.
    pub binding: &'a str,
    pub code: &'a str,
    pub factor: &'a str,
    pub expires_at: chrono::NaiveDateTime,
}

pub fn add_parcel_entry(
    conn: &mut DbConn,
    ctx: &crate::db::lockers::LockerCtx,
    key: &ServerKey,
    p: &ParcelEntry<'_>,
) -> Result<(), AppError> {
    if !ctx.offline_list {
        return Ok(());
    }
    let id = format!("e-{}", crate::db::new_id());
    local_lists::add(
        conn,
        &local_lists::NewEntry {
            id: &id,
            kind: p.kind,
            locker_id: &ctx.locker_id,
            parcel_id: Some(p.parcel_id),
            carrier_id: None,
            compartment: Some(p.compartment),
            binding: p.binding,
            sealed: &seal(key, p.code, p.factor),
            expires_at: p.expires_at,
        },
    )?;
    Ok(())
}

/// Adds a sealed courier entry for every active carrier whose courier code the list does not
/// carry (so that its drivers can identify themselves offline, for collections and pre-advised
/// deposits). Returns whether it added any: their verifiers are made by the next sync.
pub fn add_couriers(
    conn: &mut DbConn,
    key: &ServerKey,
    locker_id: &str,
    now: chrono::NaiveDateTime,
) -> Result<bool, AppError> {
    if local_lists::couriers_missing(conn, locker_id)?.is_empty() {
        return Ok(false);
    }
    // Checked again under the list's lock: another sync of this locker may have added them.
    local_lists::lock(conn, locker_id)?;
    let missing = local_lists::couriers_missing(conn, locker_id)?;
    for (carrier_id, hash) in &missing {
        let id = format!("e-{}", crate::db::new_id());
        local_lists::add(
            conn,
            &local_lists::NewEntry {
                id: &id,
                kind: EntryKind::Courier,
                locker_id,
                parcel_id: None,
                carrier_id: Some(carrier_id),
                compartment: None,
                binding: hash,
                sealed: &seal(key, hash, ""),
                expires_at: now + chrono::Duration::days(COURIER_ENTRY_DAYS),
            },
        )?;
    }
    Ok(!missing.is_empty())
}

/// Stores the verifiers, retires stale entries (one new version if anything changed), adds the
/// courier entries the list lacks (sealed: `more` says a sync should follow to make their
/// verifiers), and returns the update a device holding `device_version` needs, if any:
/// differential when it is at most [`DIFF_VERSIONS`] behind, else the full list (also for a
/// device that claims a version the server never had).
pub fn settle(
    conn: &mut DbConn,
    key: &ServerKey,
    locker_id: &str,
    verified: &[(String, u8, String)],
    now: chrono::NaiveDateTime,
    device_version: Option<i64>,
) -> Result<Settled, AppError> {
    let stale = local_lists::stale(conn, locker_id, now)?;
    let head = local_lists::commit(conn, locker_id, verified, &stale)?;
    let more = add_couriers(conn, key, locker_id, now)?;
    let version = head.version;
    if device_version == Some(version) {
        return Ok(Settled { update: None, more });
    }
    let base = device_version.filter(|dv| *dv >= 0 && *dv < version && version - dv <= DIFF_VERSIONS);
    let upsert = local_lists::upserts(conn, locker_id, base)?;
    let remove = match base {
        Some(dv) => local_lists::removals(conn, locker_id, dv)?,
        None => Vec::new(),
    };
    let update = ListUpdate {
        version,
        base,
        salt: head.salt,
        upsert,
        remove,
    };
    Ok(Settled {
        update: Some(update),
        more,
    })
}

/// What a sync settled: the device's update, and whether another sync should follow.
#[derive(Debug)]
pub struct Settled {
    pub update: Option<ListUpdate>,
    pub more: bool,
}
