//! /api/v1/parcels: search and history for property managers.

use actix_web::{get, post, web, HttpResponse};

use crate::actors::messages::{GetLocker, ResendCode};
use crate::db::notifications;
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::sites::not_found;
use super::{field, AppState};
use crate::db::page::Paged;
use crate::db::parcels::{self, Parcel, ParcelEvent, ParcelFilter};
use crate::domain::inputs::TrackingNumber;
use crate::domain::parcel::ParcelState;
use crate::error::AppError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(search)
        .service(get_one)
        .service(resend_code)
        .service(notifications_log);
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ParcelQuery {
    /// expected, reserved, deposited, picked_up, expired, returned, cancelled or removed.
    #[param(value_type = Option<ParcelState>)]
    pub state: Option<String>,
    pub carrier_id: Option<String>,
    pub recipient_id: Option<String>,
    pub locker_id: Option<String>,
    pub site_id: Option<String>,
    /// 4–64 letters, digits or dashes.
    #[param(
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[A-Za-z0-9-]{4,64}[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub tracking_number: Option<String>,
    pub limit: Option<i64>,
    pub after: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParcelWithEvents {
    #[serde(flatten)]
    pub parcel: Parcel,
    pub events: Vec<ParcelEvent>,
}

#[utoipa::path(tag = "parcels", params(ParcelQuery), security(("admin" = [])),
    responses((status = 200, body = Paged<ParcelWithEvents>), (status = 400, body = crate::error::ErrorBody)))]
#[get("/parcels")]
pub async fn search(
    _: Admin,
    state: web::Data<AppState>,
    q: web::Query<ParcelQuery>,
) -> Result<HttpResponse, AppError> {
    let q = q.into_inner();
    let page = super::page(q.limit, q.after)?;
    let parcel_state = q
        .state
        .as_deref()
        .map(|s| {
            ParcelState::parse(s).ok_or_else(|| {
                let all: Vec<_> = ParcelState::ALL.iter().map(|s| s.as_str()).collect();
                AppError::BadRequest {
                    code: "invalid_query",
                    message: format!("state {s:?} is not one of {}", all.join(", ")),
                }
            })
        })
        .transpose()?;
    let tracking_number = q
        .tracking_number
        .map(|t| field(TrackingNumber::parse(&t)))
        .transpose()?
        .map(TrackingNumber::into_inner);
    let filter = ParcelFilter {
        state: parcel_state,
        carrier_id: q.carrier_id,
        recipient_id: q.recipient_id,
        locker_id: q.locker_id,
        site_id: q.site_id,
        tracking_number,
    };
    let found = state
        .db
        .read(move |c| {
            let page = parcels::search(c, &filter, &page)?;
            let ids: Vec<String> = page.items.iter().map(|p| p.id.clone()).collect();
            let mut events = parcels::events_of_many(c, &ids)?;
            Ok(page.map(|parcel| {
                let (mine, rest): (Vec<_>, Vec<_>) = events.drain(..).partition(|e| e.parcel_id == parcel.id);
                events = rest;
                ParcelWithEvents { parcel, events: mine }
            }))
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

#[utoipa::path(tag = "parcels", security(("admin" = [])),
    responses((status = 200, body = ParcelWithEvents), (status = 404, body = crate::error::ErrorBody)))]
#[get("/parcels/{id}")]
pub async fn get_one(_: Admin, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let found = state
        .db
        .read(move |c| {
            let parcel = parcels::get(c, &id).map_err(|e| not_found(e, "parcel"))?;
            let events = parcels::events(c, &id)?;
            Ok(ParcelWithEvents { parcel, events })
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Resent {
    /// The queued notification carrying the new code.
    pub notification_id: String,
}

/// Issues a new pickup code (the old one stops working at once) and sends it to the recipient.
#[utoipa::path(tag = "parcels", security(("admin" = [])),
    responses((status = 202, body = Resent), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
#[post("/parcels/{id}/resend-code")]
pub async fn resend_code(
    admin: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let pid = id.clone();
    let parcel = state
        .db
        .read(move |c| parcels::get(c, &pid).map_err(|e| not_found(e, "parcel")))
        .await?;
    let locker_id = parcel.locker_id.ok_or_else(|| AppError::Conflict {
        code: "invalid_state",
        message: "the parcel is not in a locker".into(),
    })?;
    let mailbox = |e: actix::MailboxError| AppError::Unavailable(e.to_string());
    let locker = state.hub.send(GetLocker { locker_id }).await.map_err(mailbox)?;
    let notification_id = locker
        .send(ResendCode {
            parcel_id: id,
            actor: admin.actor(),
        })
        .await
        .map_err(mailbox)??;
    Ok(HttpResponse::Accepted().json(Resent { notification_id }))
}

/// Every notification of a parcel: kind, channel, status, attempts, last error, and the log of
/// every delivery attempt with its channel and error. Codes are redacted.
#[utoipa::path(tag = "parcels", security(("admin" = [])),
    params(("id" = String, Path, description = "The parcel's id")),
    responses(
        (status = 200, description = "The parcel's notifications, oldest first, each with every delivery attempt",
            body = [notifications::LogEntry]),
        (status = 401, description = "Missing or wrong admin key", body = crate::error::ErrorBody),
        (status = 404, description = "No such parcel", body = crate::error::ErrorBody),
        (status = 429, description = "Too many failed authentications from this client", body = crate::error::ErrorBody)))]
#[get("/parcels/{id}/notifications")]
pub async fn notifications_log(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let found = state
        .db
        .read(move |c| {
            parcels::get(c, &id).map_err(|e| not_found(e, "parcel"))?;
            Ok(notifications::log_of_parcel(c, &id)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}
