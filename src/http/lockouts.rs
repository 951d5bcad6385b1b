//! The record of wrong-code lockouts per locker (docs/security.md §3): what the operator reads
//! when a kiosk reports "too many wrong codes".

use actix_web::{get, web, HttpResponse};
use serde::Deserialize;

use super::auth::Admin;
use super::AppState;
use crate::db::lockouts::{self, Lockout};
use crate::db::page::Paged;
use crate::error::{AppError, ErrorBody};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(list);
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LockoutQuery {
    /// Items per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Cursor: the `next` value of the previous page.
    #[param(format = Uuid)]
    pub after: Option<String>,
}

/// The lockouts a locker's wrong codes started (pickup, collection and courier codes), oldest
/// first. A lockout record never holds the codes that were tried.
#[utoipa::path(tag = "lockers", operation_id = "list_lockouts", params(("id" = String, Path, description = "locker id"), LockoutQuery),
    security(("admin" = [])),
    responses(
        (status = 200, body = Paged<Lockout>),
        (status = 400, description = "a query parameter is not of its type", body = ErrorBody),
        (status = 401, description = "missing or unknown admin key", body = ErrorBody),
        (status = 404, description = "no such locker", body = ErrorBody),
        (status = 422, description = "limit out of 1–200, or after is not a cursor", body = ErrorBody),
        (status = 429, description = "too many failed authentications from this address", body = ErrorBody),
    ))]
#[get("/lockers/{id}/lockouts")]
pub async fn list(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<LockoutQuery>,
) -> Result<HttpResponse, AppError> {
    let q = q.into_inner();
    let page = super::page(q.limit, q.after)?;
    let id = id.into_inner();
    let found = state
        .db
        .read(move |c| {
            crate::db::lockers::get(c, &id).map_err(|e| match e {
                diesel::result::Error::NotFound => AppError::not_found("no such locker"),
                other => other.into(),
            })?;
            Ok(lockouts::list(c, &id, &page)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}
