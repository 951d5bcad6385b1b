//! Operator alerts (docs/protocol.md §15.9): forced and blocked doors, and what an offline
//! locker's journal needed a person for. Read and acknowledged here until the console shows them.

use actix_web::{get, post, web, HttpResponse};
use serde::Deserialize;

use super::auth::Admin;
use super::AppState;
use crate::db::alerts::{self, Alert};
use crate::db::page::Paged;
use crate::error::{AppError, ErrorBody};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(list).service(acknowledge);
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// Only alerts nobody has acknowledged yet (default true).
    pub open: Option<bool>,
    /// Items per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Cursor: the `next` value of the previous page.
    #[param(format = Uuid)]
    pub after: Option<String>,
}

/// Operator alerts, oldest first: by default those not acknowledged yet.
#[utoipa::path(tag = "operations", operation_id = "list_alerts", params(AlertQuery),
    security(("admin" = [])),
    responses(
        (status = 200, body = Paged<Alert>),
        (status = 400, description = "a query parameter is not of its type", body = ErrorBody),
        (status = 401, description = "missing or unknown admin key", body = ErrorBody),
        (status = 422, description = "limit out of 1–200, or after is not a cursor", body = ErrorBody),
        (status = 429, description = "too many failed authentications from this address", body = ErrorBody),
    ))]
#[get("/alerts")]
pub async fn list(_: Admin, state: web::Data<AppState>, q: web::Query<AlertQuery>) -> Result<HttpResponse, AppError> {
    let q = q.into_inner();
    let page = super::page(q.limit, q.after)?;
    let open = q.open.unwrap_or(true);
    let found = state.db.read(move |c| Ok(alerts::list(c, open, &page)?)).await?;
    Ok(HttpResponse::Ok().json(found))
}

/// Acknowledges an alert: someone has seen to it. Acknowledging it again changes nothing.
#[utoipa::path(tag = "operations", operation_id = "acknowledge_alert",
    params(("id" = String, Path, description = "alert id")),
    security(("admin" = [])),
    responses(
        (status = 200, body = Alert),
        (status = 401, description = "missing or unknown admin key", body = ErrorBody),
        (status = 404, description = "no such alert", body = ErrorBody),
        (status = 429, description = "too many failed authentications from this address", body = ErrorBody),
    ))]
#[post("/alerts/{id}/acknowledge")]
pub async fn acknowledge(
    admin: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let by = admin.actor();
    let found = state
        .db
        .run(move |c| alerts::acknowledge(c, &id, &by)?.ok_or_else(|| AppError::not_found("no such alert")))
        .await?;
    Ok(HttpResponse::Ok().json(found))
}
