//! /api/v1/carriers (admin side).

use actix_web::{get, patch, post, web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::numbers::{whole, whole_double_option};
use super::sites::{not_found, parse_dwell};
use super::{double_option, field, AppState};
use crate::actors::messages::{CarrierChanged, KickCarriers};
use crate::db::carriers::{self, Carrier, CarrierChanges, IssuedSecrets, NewCarrier};
use crate::db::outbox::{self, Attempt, Delivery};
use crate::db::page::{PageQuery, Paged};
use crate::domain::inputs::{CarrierCode, HttpUrl, Text};
use crate::error::AppError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(create)
        .service(list)
        .service(get_one)
        .service(update)
        .service(deliveries)
        .service(redeliver_one)
        .service(redeliver_dead)
        .service(rotate_secret);
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCarrier {
    /// Short unique code, e.g. `ups`: 2–32 letters, digits or dashes (stored lower-case).
    #[schema(
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[A-Za-z0-9-]{2,32}[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub code: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub name: String,
    /// An http(s) URL.
    #[schema(
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[Hh][Tt][Tt][Pp][Ss]?://[a-z][a-z0-9]*(\\.[a-z][a-z0-9]*)*(:[0-9]{1,4})?(/[A-Za-z0-9._~-]*)*[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub webhook_url: Option<String>,
    /// Dwell window in hours (1–720).
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 720)]
    pub dwell_hours: Option<i32>,
    /// Webhook deliveries per second (1–1000, default 10).
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 1000)]
    pub webhook_rate_per_sec: Option<i32>,
    /// Webhook deliveries in flight at once (1–64, default 4).
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 64)]
    pub webhook_concurrency: Option<i32>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCarrier {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub name: Option<String>,
    /// An http(s) URL; `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[Hh][Tt][Tt][Pp][Ss]?://[a-z][a-z0-9]*(\\.[a-z][a-z0-9]*)*(:[0-9]{1,4})?(/[A-Za-z0-9._~-]*)*[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$")]
    pub webhook_url: Option<Option<String>>,
    /// 1–720 hours; `null` returns to the site's or the server's.
    #[serde(default, deserialize_with = "whole_double_option")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 720)]
    pub dwell_hours: Option<Option<i32>>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 1000)]
    pub webhook_rate_per_sec: Option<i32>,
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 64)]
    pub webhook_concurrency: Option<i32>,
    pub active: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedCarrier {
    pub carrier: Carrier,
    /// Shown only now: the API key, the webhook signing secret and the kiosk courier code.
    pub secrets: IssuedSecrets,
}

fn in_range(name: &str, v: Option<i32>, lo: i32, hi: i32) -> Result<Option<i32>, AppError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) => Err(AppError::invalid(format!("{name} must be between {lo} and {hi}"))),
        other => Ok(other),
    }
}

fn parse_url(u: Option<String>) -> Result<Option<String>, AppError> {
    u.map(|u| field(HttpUrl::parse(&u)).map(HttpUrl::into_inner))
        .transpose()
}

#[utoipa::path(tag = "carriers", request_body = CreateCarrier, security(("admin" = [])),
    responses((status = 201, body = CreatedCarrier), (status = 409, body = crate::error::ErrorBody)))]
#[post("/carriers")]
pub async fn create(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Json<CreateCarrier>,
) -> Result<HttpResponse, AppError> {
    let b = body.into_inner();
    let new = NewCarrier {
        code: field(CarrierCode::parse(&b.code))?.into_inner(),
        name: field(Text::parse("name", &b.name, 200))?.into_inner(),
        webhook_url: parse_url(b.webhook_url)?,
        dwell_hours: parse_dwell(b.dwell_hours)?,
        webhook_rate_per_sec: in_range("webhook_rate_per_sec", b.webhook_rate_per_sec, 1, 1000)?.unwrap_or(10),
        webhook_concurrency: in_range("webhook_concurrency", b.webhook_concurrency, 1, 64)?.unwrap_or(4),
    };
    let key = state.key.clone();
    let (carrier, secrets) = state
        .db
        .run(move |c| {
            carriers::insert(c, &key, new).map_err(|e| match AppError::from(e) {
                AppError::Conflict { .. } => AppError::conflict("a carrier with this code already exists"),
                other => other,
            })
        })
        .await?;
    state.hub.do_send(CarrierChanged {
        carrier_id: carrier.id.clone(),
    });
    Ok(HttpResponse::Created().json(CreatedCarrier { carrier, secrets }))
}

#[utoipa::path(tag = "carriers", params(PageQuery), security(("admin" = [])), responses((status = 200, body = Paged<Carrier>)))]
#[get("/carriers")]
pub async fn list(_: Admin, state: web::Data<AppState>, q: web::Query<PageQuery>) -> Result<HttpResponse, AppError> {
    let page = field(q.parse())?;
    let found = state.db.read(move |c| Ok(carriers::list(c, &page)?)).await?;
    Ok(HttpResponse::Ok().json(found))
}

#[utoipa::path(tag = "carriers", security(("admin" = [])), responses((status = 200, body = Carrier), (status = 404, body = crate::error::ErrorBody)))]
#[get("/carriers/{id}")]
pub async fn get_one(_: Admin, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let found = state
        .db
        .read(move |c| carriers::get(c, &id).map_err(|e| not_found(e, "carrier")))
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

#[utoipa::path(tag = "carriers", request_body = UpdateCarrier, security(("admin" = [])),
    responses((status = 200, body = Carrier), (status = 404, body = crate::error::ErrorBody)))]
#[patch("/carriers/{id}")]
pub async fn update(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<UpdateCarrier>,
) -> Result<HttpResponse, AppError> {
    let b = body.into_inner();
    let changes = CarrierChanges {
        name: b
            .name
            .map(|n| field(Text::parse("name", &n, 200)))
            .transpose()?
            .map(Text::into_inner),
        webhook_url: b.webhook_url.map(parse_url).transpose()?,
        dwell_hours: b.dwell_hours.map(parse_dwell).transpose()?,
        webhook_rate_per_sec: in_range("webhook_rate_per_sec", b.webhook_rate_per_sec, 1, 1000)?,
        webhook_concurrency: in_range("webhook_concurrency", b.webhook_concurrency, 1, 64)?,
        active: b.active,
        updated_at: None,
    };
    let id = id.into_inner();
    let found = state
        .db
        .run(move |c| carriers::update(c, &id, changes).map_err(|e| not_found(e, "carrier")))
        .await?;
    // Its delivery actor takes the new settings, and every 1.1 locker's list the new state
    // (a deactivated carrier's courier code stops identifying its drivers offline).
    state.hub.do_send(CarrierChanged {
        carrier_id: found.id.clone(),
    });
    Ok(HttpResponse::Ok().json(found))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `dead`.
    #[param(pattern = "^(pending|delivered|dead)$")]
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub after: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryLog {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub attempts_log: Vec<Attempt>,
}

fn carrier_exists(c: &mut crate::db::DbConn, id: &str) -> Result<(), AppError> {
    carriers::get(c, id).map(drop).map_err(|e| not_found(e, "carrier"))
}

/// The carrier's webhook deliveries, newest first: status, attempts, status codes, last error.
#[utoipa::path(tag = "carriers", params(DeliveryQuery), security(("admin" = [])), responses((status = 200, body = Paged<DeliveryLog>)))]
#[get("/carriers/{id}/deliveries")]
pub async fn deliveries(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<DeliveryQuery>,
) -> Result<HttpResponse, AppError> {
    let q = q.into_inner();
    if let Some(s) = &q.status {
        if !matches!(s.as_str(), "pending" | "delivered" | "dead") {
            return Err(AppError::BadRequest {
                code: "invalid_query",
                message: "status must be pending, delivered or dead".into(),
            });
        }
    }
    let page = super::page(q.limit, q.after)?;
    let id = id.into_inner();
    let found = state
        .db
        .read(move |c| {
            carrier_exists(c, &id)?;
            Ok(outbox::deliveries(c, &id, q.status.as_deref(), &page)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(found.map(|(delivery, attempts_log)| DeliveryLog { delivery, attempts_log })))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Requeued {
    pub requeued: usize,
}

/// Sends one delivery again (whatever its status), as a new series of attempts.
#[utoipa::path(tag = "carriers", security(("admin" = [])), responses((status = 200, body = Requeued), (status = 404, body = crate::error::ErrorBody)))]
#[post("/carriers/{id}/deliveries/{delivery_id}/redeliver")]
pub async fn redeliver_one(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (id, delivery) = path.into_inner();
    let cid = id.clone();
    let n = state
        .db
        .run(move |c| {
            carrier_exists(c, &cid)?;
            Ok(outbox::redeliver(c, &cid, Some(&delivery))?)
        })
        .await?;
    if n == 0 {
        return Err(AppError::not_found("delivery not found"));
    }
    state.hub.do_send(KickCarriers { carrier_id: Some(id) });
    Ok(HttpResponse::Ok().json(Requeued { requeued: n }))
}

/// Sends every dead-lettered delivery of the carrier again.
#[utoipa::path(tag = "carriers", security(("admin" = [])), responses((status = 200, body = Requeued)))]
#[post("/carriers/{id}/redeliver")]
pub async fn redeliver_dead(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let cid = id.clone();
    let n = state
        .db
        .run(move |c| {
            carrier_exists(c, &cid)?;
            Ok(outbox::redeliver(c, &cid, None)?)
        })
        .await?;
    state.hub.do_send(KickCarriers { carrier_id: Some(id) });
    Ok(HttpResponse::Ok().json(Requeued { requeued: n }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RotatedSecret {
    /// The new secret. Shown only now.
    pub webhook_secret: String,
    /// Until then the previous secret is still accepted inbound and used outbound.
    pub previous_valid_until: String,
}

/// Issues a new webhook signing secret; the old one stays valid for the overlap window.
#[utoipa::path(tag = "carriers", security(("admin" = [])), responses((status = 200, body = RotatedSecret)))]
#[post("/carriers/{id}/webhook-secret")]
pub async fn rotate_secret(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let key = state.key.clone();
    let overlap = chrono::Duration::hours(i64::from(state.settings.secret_rotation_overlap_hours));
    let cid = id.clone();
    let (secret, until) = state
        .db
        .transaction(move |c| {
            carriers::rotate_webhook_secret(c, &key, &cid, overlap).map_err(|e| not_found(e, "carrier"))
        })
        .await?;
    state.hub.do_send(CarrierChanged { carrier_id: id });
    Ok(HttpResponse::Ok().json(RotatedSecret {
        webhook_secret: secret,
        previous_valid_until: crate::db::ts_string(until),
    }))
}
