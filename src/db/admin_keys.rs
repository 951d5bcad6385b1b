//! Admin API keys, stored as SHA-256 hashes, each with the named person holding it and a role.

use diesel::prelude::*;

use super::schema::admin_keys;
use super::{new_id, now, DbConn};
use crate::credentials::{generate_token, hash_token};
use crate::domain::remote_open::{Holder, Role};
use crate::error::AppError;

/// A key as the admin API shows it: never the secret or its hash.
#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = admin_keys)]
pub struct AdminKey {
    pub id: String,
    /// A label for the key.
    pub name: String,
    /// The named person who holds the key.
    pub holder: String,
    /// admin, operator or viewer.
    #[schema(value_type = Role)]
    pub role: String,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: chrono::NaiveDateTime,
    /// The key that created this one (absent for keys made with the command line).
    pub created_by: Option<String>,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<chrono::NaiveDateTime>,
    pub revoked_by: Option<String>,
}

/// Who an authenticated key belongs to.
#[derive(Debug, Clone)]
pub struct KeyIdentity {
    pub id: String,
    pub holder: String,
    pub role: Role,
}

/// Creates a key with full rights (role admin), held by `name`; returns its id and the
/// plaintext, which is never stored.
pub fn create(conn: &mut DbConn, name: &str) -> QueryResult<(String, String)> {
    let holder = Holder::parse(name).unwrap_or_else(|_| Holder::parse("admin").expect("valid"));
    create_with(conn, name, &holder, Role::Admin, None)
}

/// Creates a key for `holder` with `role`, recording which key created it.
pub fn create_with(
    conn: &mut DbConn,
    name: &str,
    holder: &Holder,
    role: Role,
    created_by: Option<&str>,
) -> QueryResult<(String, String)> {
    let id = new_id();
    let token = generate_token("lhk_");
    diesel::insert_into(admin_keys::table)
        .values((
            admin_keys::id.eq(&id),
            admin_keys::name.eq(name),
            admin_keys::key_hash.eq(hash_token(&token)),
            admin_keys::created_at.eq(now()),
            admin_keys::holder.eq(holder.as_str()),
            admin_keys::role.eq(role.as_str()),
            admin_keys::created_by.eq(created_by),
        ))
        .execute(conn)?;
    Ok((id, token))
}

/// The key's identity if the token is a live admin key. Read on every request, so a
/// revocation takes effect on the next one.
pub fn authenticate(conn: &mut DbConn, token: &str) -> QueryResult<Option<KeyIdentity>> {
    let found: Option<(String, String, String)> = admin_keys::table
        .filter(admin_keys::key_hash.eq(hash_token(token)))
        .filter(admin_keys::revoked_at.is_null())
        .select((admin_keys::id, admin_keys::holder, admin_keys::role))
        .get_result(conn)
        .optional()?;
    Ok(found.map(|(id, holder, role)| KeyIdentity {
        id,
        holder,
        // An unknown role in the database grants nothing beyond reading.
        role: Role::parse(&role).unwrap_or(Role::Viewer),
    }))
}

pub fn get(conn: &mut DbConn, id: &str) -> QueryResult<AdminKey> {
    admin_keys::table
        .find(id)
        .select(AdminKey::as_select())
        .get_result(conn)
}

pub fn list(conn: &mut DbConn, page: &super::page::Page) -> QueryResult<super::page::Paged<AdminKey>> {
    let mut q = admin_keys::table
        .order(admin_keys::id.asc())
        .limit(page.limit + 1)
        .select(AdminKey::as_select())
        .into_boxed();
    if let Some(after) = &page.after {
        q = q.filter(admin_keys::id.gt(after.clone()));
    }
    Ok(super::page::Paged::from_rows(q.load(conn)?, page, |k| &k.id))
}

/// Serialises revocations within this process, so two concurrent revocations cannot both
/// see another active admin key and leave none (a PostgreSQL read-committed race).
static REVOKING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Revokes a key at once. The last active key with the admin role cannot be revoked: nobody
/// could create keys any more.
pub fn revoke(conn: &mut DbConn, id: &str, by: &str) -> Result<AdminKey, AppError> {
    let _guard = REVOKING.lock().unwrap_or_else(|e| e.into_inner());
    super::write_transaction(conn, |c| -> Result<AdminKey, AppError> {
        let key = get(c, id)?;
        if key.revoked_at.is_some() {
            return Err(AppError::Conflict {
                code: "already_revoked",
                message: "this key is already revoked".into(),
            });
        }
        if key.role == Role::Admin.as_str() {
            let other_admins: i64 = admin_keys::table
                .filter(admin_keys::role.eq(Role::Admin.as_str()))
                .filter(admin_keys::revoked_at.is_null())
                .filter(admin_keys::id.ne(id))
                .count()
                .get_result(c)?;
            if other_admins == 0 {
                return Err(AppError::Conflict {
                    code: "last_admin",
                    message: "this is the last active admin key; create another admin key before revoking it".into(),
                });
            }
        }
        diesel::update(admin_keys::table.find(id))
            .set((admin_keys::revoked_at.eq(now()), admin_keys::revoked_by.eq(by)))
            .execute(c)?;
        Ok(get(c, id)?)
    })
}
