//! Carriers: each has a hashed API key, an encrypted webhook signing secret and a hashed
//! courier code that its drivers scan at the kiosk.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::page::{Page, Paged};
use super::schema::carriers;
use super::{new_id, now, DbConn};
use crate::credentials::{generate_token, generate_webhook_secret, hash_token, ServerKey};

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = carriers)]
pub struct Carrier {
    pub id: String,
    /// Short code such as `ups`.
    pub code: String,
    pub name: String,
    #[serde(skip)]
    pub api_key_hash: String,
    #[serde(skip)]
    pub courier_code_hash: Option<String>,
    pub webhook_url: Option<String>,
    #[serde(skip)]
    pub webhook_secret_enc: String,
    pub dwell_hours: Option<i32>,
    pub webhook_rate_per_sec: i32,
    pub webhook_concurrency: i32,
    pub active: bool,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
    #[serde(skip)]
    pub previous_webhook_secret_enc: Option<String>,
    /// While set and in the future, the previous webhook secret is still accepted and used.
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub previous_secret_expires_at: Option<NaiveDateTime>,
}

impl Carrier {
    /// The webhook secrets valid now: the current one, and the previous one during a rotation.
    pub fn signing_secrets(&self, key: &ServerKey, now: NaiveDateTime) -> Vec<String> {
        let mut out = Vec::new();
        match key.decrypt(&self.webhook_secret_enc) {
            Ok(s) => out.push(s),
            Err(e) => tracing::error!(carrier = %self.id, error = %e, "cannot decrypt webhook secret"),
        }
        if let (Some(prev), Some(until)) = (&self.previous_webhook_secret_enc, self.previous_secret_expires_at) {
            if until > now {
                if let Ok(s) = key.decrypt(prev) {
                    out.push(s);
                }
            }
        }
        out
    }
}

/// Secrets issued at creation; only their hashes (or ciphertext) are kept.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedSecrets {
    pub api_key: String,
    pub webhook_secret: String,
    pub courier_code: String,
}

#[derive(Debug)]
pub struct NewCarrier {
    pub code: String,
    pub name: String,
    pub webhook_url: Option<String>,
    pub dwell_hours: Option<i32>,
    pub webhook_rate_per_sec: i32,
    pub webhook_concurrency: i32,
}

#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = carriers)]
pub struct CarrierChanges {
    pub name: Option<String>,
    pub webhook_url: Option<Option<String>>,
    pub dwell_hours: Option<Option<i32>>,
    pub webhook_rate_per_sec: Option<i32>,
    pub webhook_concurrency: Option<i32>,
    pub active: Option<bool>,
    pub updated_at: Option<NaiveDateTime>,
}

/// A courier code: 12 characters from an alphabet without look-alikes, easy to print as a barcode.
fn generate_courier_code() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..12)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn insert(conn: &mut DbConn, key: &ServerKey, new: NewCarrier) -> QueryResult<(Carrier, IssuedSecrets)> {
    let id = new_id();
    let secrets = IssuedSecrets {
        api_key: generate_token("lhc_"),
        webhook_secret: generate_webhook_secret(),
        courier_code: generate_courier_code(),
    };
    let t = now();
    diesel::insert_into(carriers::table)
        .values((
            carriers::id.eq(&id),
            carriers::code.eq(&new.code),
            carriers::name.eq(&new.name),
            carriers::api_key_hash.eq(hash_token(&secrets.api_key)),
            carriers::courier_code_hash.eq(hash_token(&secrets.courier_code)),
            carriers::webhook_url.eq(&new.webhook_url),
            carriers::webhook_secret_enc.eq(key.encrypt(&secrets.webhook_secret)),
            carriers::dwell_hours.eq(new.dwell_hours),
            carriers::webhook_rate_per_sec.eq(new.webhook_rate_per_sec),
            carriers::webhook_concurrency.eq(new.webhook_concurrency),
            carriers::created_at.eq(t),
            carriers::updated_at.eq(t),
        ))
        .execute(conn)?;
    Ok((get(conn, &id)?, secrets))
}

pub fn get(conn: &mut DbConn, id: &str) -> QueryResult<Carrier> {
    carriers::table.find(id).select(Carrier::as_select()).get_result(conn)
}

/// What a deposit needs to know of its carrier. A narrow read: deposits run on the write
/// path, where decoding a whole row (secrets, URLs, limits) costs more than the query.
#[derive(Debug, Clone, Queryable)]
pub struct CarrierBrief {
    pub id: String,
    pub name: String,
    pub active: bool,
    pub dwell_hours: Option<i32>,
}

pub fn brief(conn: &mut DbConn, id: &str) -> QueryResult<CarrierBrief> {
    carriers::table
        .find(id)
        .select((carriers::id, carriers::name, carriers::active, carriers::dwell_hours))
        .get_result(conn)
}

pub fn list(conn: &mut DbConn, page: &Page) -> QueryResult<Paged<Carrier>> {
    let mut q = carriers::table
        .select(Carrier::as_select())
        .order(carriers::id.asc())
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(after) = &page.after {
        q = q.filter(carriers::id.gt(after.clone()));
    }
    Ok(Paged::from_rows(q.load(conn)?, page, |c| &c.id))
}

/// Active carriers, for the kiosk's carrier picker.
pub fn active(conn: &mut DbConn) -> QueryResult<Vec<Carrier>> {
    carriers::table
        .filter(carriers::active.eq(true))
        .order(carriers::name.asc())
        .select(Carrier::as_select())
        .load(conn)
}

pub fn update(conn: &mut DbConn, id: &str, mut changes: CarrierChanges) -> QueryResult<Carrier> {
    changes.updated_at = Some(now());
    let n = diesel::update(carriers::table.find(id)).set(&changes).execute(conn)?;
    if n == 0 {
        return Err(diesel::result::Error::NotFound);
    }
    get(conn, id)
}

/// The carrier's courier code hash (what a 1.1 locker's list entries are bound to), if it has one.
pub fn courier_hash(conn: &mut DbConn, id: &str) -> QueryResult<Option<String>> {
    carriers::table
        .find(id)
        .select(carriers::courier_code_hash)
        .get_result::<Option<String>>(conn)
        .optional()
        .map(Option::flatten)
}

pub fn by_courier_code(conn: &mut DbConn, code: &str) -> QueryResult<Option<Carrier>> {
    carriers::table
        .filter(carriers::courier_code_hash.eq(hash_token(code.trim())))
        .filter(carriers::active.eq(true))
        .select(Carrier::as_select())
        .get_result(conn)
        .optional()
}

pub fn by_api_key(conn: &mut DbConn, api_key: &str) -> QueryResult<Option<Carrier>> {
    carriers::table
        .filter(carriers::api_key_hash.eq(hash_token(api_key)))
        .filter(carriers::active.eq(true))
        .select(Carrier::as_select())
        .get_result(conn)
        .optional()
}

/// Issues a new webhook secret. The previous one stays valid for `overlap`, so the carrier
/// can switch without dropping events.
pub fn rotate_webhook_secret(
    conn: &mut DbConn,
    key: &ServerKey,
    id: &str,
    overlap: chrono::Duration,
) -> QueryResult<(String, NaiveDateTime)> {
    let current = get(conn, id)?;
    let secret = generate_webhook_secret();
    let until = now() + overlap;
    diesel::update(carriers::table.find(id))
        .set((
            carriers::previous_webhook_secret_enc.eq(Some(current.webhook_secret_enc)),
            carriers::previous_secret_expires_at.eq(Some(until)),
            carriers::webhook_secret_enc.eq(key.encrypt(&secret)),
            carriers::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok((secret, until))
}
