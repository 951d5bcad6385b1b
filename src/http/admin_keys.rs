//! /api/v1/admin-keys: who holds which admin key, with which role; revocation at once.

use actix_web::{get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::sites::not_found;
use super::{field, AppState, PageParams};
use crate::db::admin_keys::{self, AdminKey};
use crate::db::page::Paged;
use crate::domain::remote_open::{Holder, Role};
use crate::error::{AppError, ErrorBody};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(create).service(list).service(get_one).service(revoke);
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminKey {
    /// The named person who will hold the key (1–100 characters).
    #[schema(min_length = 1, max_length = 100)]
    pub holder: String,
    pub role: Role,
    /// A label for the key (up to 100 characters; default: the holder).
    #[serde(default)]
    #[schema(max_length = 100)]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedAdminKey {
    pub key: AdminKey,
    /// The secret, shown only now: send it as `Authorization: Bearer <secret>`.
    pub secret: String,
}

/// Creates an admin key for a named holder with a role. Only an `admin` key may.
#[utoipa::path(tag = "admin_keys", request_body = CreateAdminKey, security(("admin" = [])),
    responses(
        (status = 201, body = CreatedAdminKey),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 403, description = "Not an admin-role key (`admin_role_required`, `read_only_key`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Holder or name empty or too long", body = ErrorBody)))]
#[post("/admin-keys")]
pub async fn create(
    admin: Admin,
    state: web::Data<AppState>,
    body: web::Json<CreateAdminKey>,
) -> Result<HttpResponse, AppError> {
    admin.require_key_manager()?;
    let body = body.into_inner();
    let holder = field(Holder::parse(&body.holder))?;
    let name = match body.name.as_deref().map(str::trim) {
        None | Some("") => holder.as_str().to_string(),
        Some(n) if n.chars().count() > 100 || n.chars().any(char::is_control) => {
            return Err(AppError::invalid(
                "name must be at most 100 characters, without control characters",
            ))
        }
        Some(n) => n.to_string(),
    };
    let by = admin.key_id.clone();
    let (key, secret) = state
        .db
        .transaction(move |c| {
            let (id, secret) = admin_keys::create_with(c, &name, &holder, body.role, Some(&by))?;
            Ok((admin_keys::get(c, &id)?, secret))
        })
        .await?;
    tracing::info!(admin_key = %key.id, holder = %key.holder, role = %key.role, created_by = %admin.key_id, "admin key created");
    Ok(HttpResponse::Created().json(CreatedAdminKey { key, secret }))
}

/// Every admin key, revoked ones included, oldest first. Only an `admin` key may list them.
#[utoipa::path(tag = "admin_keys", params(PageParams), security(("admin" = [])),
    responses(
        (status = 200, body = Paged<AdminKey>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 403, description = "Not an admin-role key (`admin_role_required`)", body = ErrorBody),
        (status = 422, description = "`limit` outside 1–200 or a bad `after` cursor", body = ErrorBody)))]
#[get("/admin-keys")]
pub async fn list(
    admin: Admin,
    state: web::Data<AppState>,
    q: web::Query<PageParams>,
) -> Result<HttpResponse, AppError> {
    admin.require_key_manager()?;
    let q = q.into_inner();
    let page = super::page(q.limit, q.after)?;
    let found = state.db.read(move |c| Ok(admin_keys::list(c, &page)?)).await?;
    Ok(HttpResponse::Ok().json(found))
}

#[utoipa::path(tag = "admin_keys", params(("id" = String, Path, description = "Admin key id")), security(("admin" = [])),
    responses(
        (status = 200, body = AdminKey),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 403, description = "Not an admin-role key (`admin_role_required`)", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody)))]
#[get("/admin-keys/{id}")]
pub async fn get_one(
    admin: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    admin.require_key_manager()?;
    let id = id.into_inner();
    let key = state
        .db
        .read(move |c| admin_keys::get(c, &id).map_err(|e| not_found(e, "admin key")))
        .await?;
    Ok(HttpResponse::Ok().json(key))
}

/// Revokes a key. It stops working on its next request. The last active `admin`-role key
/// cannot be revoked (409 `last_admin`).
#[utoipa::path(tag = "admin_keys", params(("id" = String, Path, description = "Admin key id")), security(("admin" = [])),
    responses(
        (status = 200, body = AdminKey),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 403, description = "Not an admin-role key (`admin_role_required`, `read_only_key`)", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 409, description = "`last_admin` or `already_revoked`", body = ErrorBody)))]
#[post("/admin-keys/{id}/revoke")]
pub async fn revoke(admin: Admin, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    admin.require_key_manager()?;
    let id = id.into_inner();
    let by = admin.key_id.clone();
    let key = state
        .db
        .run(move |c| {
            admin_keys::revoke(c, &id, &by).map_err(|e| match e {
                AppError::NotFound(_) => AppError::not_found("admin key not found"),
                other => other,
            })
        })
        .await?;
    tracing::info!(admin_key = %key.id, holder = %key.holder, revoked_by = %admin.key_id, "admin key revoked");
    Ok(HttpResponse::Ok().json(key))
}
