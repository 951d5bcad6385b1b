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
        .read(|c| {
            c.batch_execute("SELECT 1")
                .map_err(|e| AppError::Unavailable(e.to_string()))
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

/// The pickup QR for a token from a notification, as SVG. The token is not looked up: the
/// image only encodes what the link already holds.
#[utoipa::path(tag = "operations", responses((status = 200, description = "SVG image"), (status = 404, body = crate::error::ErrorBody)))]
#[get("/qr/{token}")]
pub async fn qr(token: web::Path<String>) -> Result<HttpResponse, AppError> {
    let token = token.into_inner();
    // A 1.0 token (`lhq_`, at most 64 characters) or a signed 1.1 one (`lhq2.`, base64url
    // parts joined by dots): docs/protocol.md §7.10 and §15.3.
    let body_ok = |rest: &str, dots: bool| {
        rest.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (dots && b == b'.'))
    };
    let well_formed = match (token.strip_prefix("lhq_"), token.strip_prefix(crate::qr_token::PREFIX)) {
        (Some(rest), _) => token.len() <= 64 && body_ok(rest, false),
        (_, Some(rest)) => token.len() <= crate::qr_token::MAX_LEN && body_ok(rest, true),
        _ => false,
    };
    if !well_formed {
        return Err(AppError::not_found("no such QR code"));
    }
    let code = qrcode::QrCode::new(token.as_bytes()).map_err(|e| AppError::internal(e.to_string()))?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(240, 240)
        .build();
    Ok(HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header(("cache-control", "private, no-store"))
        .body(svg))
}
