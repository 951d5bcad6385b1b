//! Liveness and readiness probes.

use actix_web::{get, web, HttpResponse};
use diesel::connection::SimpleConnection;
use serde_json::json;

use super::AppState;
use crate::error::AppError;

/// Answers while the process is up.
#[utoipa::path(tag = "operations", responses((status = 200, description = "Process is up")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Answers 200 when the database is reachable, 503 otherwise.
#[utoipa::path(tag = "operations", responses(
    (status = 200, description = "Database reachable"),
    (status = 503, description = "Database unreachable", body = crate::error::ErrorBody)))]
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    state
        .db
        .run(|c| {
            c.batch_execute("SELECT 1")
                .map_err(|e| AppError::Unavailable(e.to_string()))
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}
