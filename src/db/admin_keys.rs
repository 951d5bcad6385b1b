//! Admin API keys, stored as SHA-256 hashes.

use diesel::prelude::*;

use super::schema::admin_keys;
use super::{new_id, now, DbConn};
use crate::credentials::{generate_token, hash_token};

/// Creates a key and returns its id and the plaintext, which is never stored.
pub fn create(conn: &mut DbConn, name: &str) -> QueryResult<(String, String)> {
    let id = new_id();
    let token = generate_token("lhk_");
    diesel::insert_into(admin_keys::table)
        .values((
            admin_keys::id.eq(&id),
            admin_keys::name.eq(name),
            admin_keys::key_hash.eq(hash_token(&token)),
            admin_keys::created_at.eq(now()),
        ))
        .execute(conn)?;
    Ok((id, token))
}

/// The key's id if the token is a live admin key.
pub fn authenticate(conn: &mut DbConn, token: &str) -> QueryResult<Option<String>> {
    admin_keys::table
        .filter(admin_keys::key_hash.eq(hash_token(token)))
        .filter(admin_keys::revoked_at.is_null())
        .select(admin_keys::id)
        .first(conn)
        .optional()
}
