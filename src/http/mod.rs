//! HTTP routes. Handlers stay thin: parse input, call the database layer or an actor, map the result.

pub mod admin_keys;
pub mod alerts;
pub mod auth;
pub mod carrier_api;
pub mod carriers;
pub mod contract;
pub mod devices;
pub mod edge;
pub mod health;
pub mod lockers;
pub mod lockouts;
pub mod numbers;
pub mod openapi;
pub mod parcels;
pub mod recipients;
pub mod remote_opens;
pub mod sites;
pub mod webhook_docs;

use std::sync::Arc;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::actors::hub::Hub;
use crate::config::Settings;
use crate::credentials::ServerKey;
use crate::db::Db;
use crate::error::AppError;
use crate::ratelimit::RateLimits;

/// Everything a handler may need, cloned cheaply into each worker.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub settings: Arc<Settings>,
    /// The application's clock (tests move it forward).
    pub clock: crate::clock::Clock,
    pub key: ServerKey,
    pub limits: Arc<RateLimits>,
    pub hub: actix::Addr<Hub>,
}

pub fn configure(cfg: &mut web::ServiceConfig, state: &AppState) {
    let max_body = state.settings.max_body_bytes;
    // The state itself is registered on the App (`startup`), which the device WebSocket
    // shares; these extractor settings are the HTTP API's.
    cfg.app_data(
        web::JsonConfig::default()
            .limit(max_body)
            .error_handler(move |e, _| json_error(e, max_body).into()),
    )
    .app_data(web::QueryConfig::default().error_handler(|e, _| query_error(e).into()))
    .app_data(web::PathConfig::default().error_handler(|e, _| path_error(e).into()))
    .app_data(web::PayloadConfig::default().limit(state.settings.max_csv_bytes))
    .service(health::healthz)
    .service(health::readyz)
    .service(health::qr)
    .service(openapi::document)
    .configure(|c| carrier_api::routes(c, max_body))
    .service(
        web::scope("/api/v1")
            .wrap(actix_web::middleware::from_fn(auth::require_admin))
            .configure(sites::routes)
            .configure(lockers::routes)
            .configure(lockouts::routes)
            .configure(carriers::routes)
            .configure(recipients::routes)
            .configure(parcels::routes)
            .configure(remote_opens::routes)
            .configure(admin_keys::routes)
            .configure(alerts::routes),
    );
}

/// The fallback: a known path with another method is a 405 naming the allowed ones (RFC 9110);
/// anything else is a 404.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, AppError> {
    let allowed = req
        .resource_map()
        .match_pattern(req.path())
        .and_then(|pattern| openapi::allowed_methods(&pattern));
    if let Some(allow) = allowed {
        let e = AppError::MethodNotAllowed(format!(
            "{} is not allowed on {}; use {allow}",
            req.method(),
            req.path()
        ));
        let mut res = actix_web::ResponseError::error_response(&e);
        res.headers_mut().insert(
            actix_web::http::header::ALLOW,
            actix_web::http::header::HeaderValue::from_static(allow),
        );
        return Ok(res);
    }
    Err(AppError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

fn json_error(e: JsonPayloadError, limit: usize) -> AppError {
    match e {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            AppError::PayloadTooLarge(limit)
        }
        JsonPayloadError::ContentType => {
            AppError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        JsonPayloadError::Deserialize(de) if de.is_data() => AppError::BadRequest {
            code: "invalid_body",
            message: format!("invalid request body: {de}"),
        },
        JsonPayloadError::Deserialize(de) => AppError::BadRequest {
            code: "malformed_json",
            message: format!("malformed JSON: {de}"),
        },
        other => AppError::BadRequest {
            code: "invalid_body",
            message: other.to_string(),
        },
    }
}

fn query_error(e: QueryPayloadError) -> AppError {
    AppError::BadRequest {
        code: "invalid_query",
        message: format!("invalid query string: {e}"),
    }
}

fn path_error(e: PathError) -> AppError {
    AppError::BadRequest {
        code: "invalid_path",
        message: format!("invalid path: {e}"),
    }
}

/// Deserializes a field that distinguishes "absent" (outer `None`) from "null" (`Some(None)`),
/// so PATCH can clear nullable fields.
pub fn double_option<'de, T, D>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// The query of a list endpoint that takes nothing but a page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// Items per page, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Cursor: the `next` value of the previous page.
    pub after: Option<String>,
}

/// The validated page of a list endpoint's `limit` and `after` query parameters.
pub fn page(limit: Option<i64>, after: Option<String>) -> Result<crate::db::page::Page, AppError> {
    field(crate::db::page::PageQuery { limit, after }.parse())
}

/// Maps a field parse error to a 422 naming the problem.
pub fn field<T>(r: Result<T, String>) -> Result<T, AppError> {
    r.map_err(AppError::invalid)
}

/// A body of only optional fields, read from a JSON object (taken as `web::Json<Map>`): serde
/// would also build such a struct from an array, which the document does not allow.
pub fn object_body<T: serde::de::DeserializeOwned>(
    body: serde_json::Map<String, serde_json::Value>,
) -> Result<T, AppError> {
    serde_json::from_value(serde_json::Value::Object(body)).map_err(|e| AppError::BadRequest {
        code: "invalid_body",
        message: format!("invalid request body: {e}"),
    })
}
