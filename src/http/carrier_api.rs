//! /carrier/v1: what carrier systems call. Every request carries the carrier's API key and a
//! Standard Webhooks signature; every event is idempotent by its `webhook-id`.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{bearer, client_ip, reject};
use super::AppState;
use crate::actors::messages::{CancelParcel, GetLocker, IssueCollectionCode, PreAdviseParcel};
use crate::db::carriers::{self, Carrier};
use crate::db::inbound;
use crate::db::{lockers, now, parcels, recipients, sites};
use crate::domain::inputs::{Email, Phone, TrackingNumber};
use crate::domain::parcel::ParcelState;
use crate::domain::Size;
use crate::error::AppError;
use crate::signing;
use crate::workflows::carrier_events::PreAdvice;

pub fn routes(cfg: &mut web::ServiceConfig, max_body: usize) {
    cfg.service(
        web::scope("/carrier/v1")
            .app_data(web::PayloadConfig::default().limit(max_body))
            .service(post_event)
            .service(get_parcel),
    );
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The carrier behind the API key, once the signature over `body` checks out.
async fn authenticate(state: &AppState, req: &HttpRequest, body: &[u8]) -> Result<(Carrier, String), AppError> {
    let ip = client_ip(req);
    let Some(api_key) = bearer(req) else {
        return Err(reject(
            state,
            ip,
            "missing API key: send Authorization: Bearer <carrier API key>",
        ));
    };
    let Some(carrier) = state.db.read(move |c| Ok(carriers::by_api_key(c, &api_key)?)).await? else {
        return Err(reject(state, ip, "invalid API key"));
    };
    let secrets = carrier.signing_secrets(&state.key, now());
    let id = header(req, "webhook-id");
    let verified = signing::verify(
        &secrets,
        id,
        header(req, "webhook-timestamp"),
        header(req, "webhook-signature"),
        body,
        chrono::Utc::now().timestamp(),
    );
    if let Err(e) = verified {
        return Err(reject(state, ip, &format!("signature check failed: {e}")));
    }
    let id = id.unwrap_or_default().to_string();
    super::edge::authenticated(req);
    Ok((carrier, id))
}

/// Where a pre-advised parcel goes and whom it is for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientRef {
    pub phone: Option<String>,
    pub email: Option<String>,
    pub recipient_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutForDelivery {
    pub tracking_number: String,
    pub site_id: Option<String>,
    pub locker_id: Option<String>,
    pub recipient: RecipientRef,
    pub size: Size,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParcelRef {
    pub tracking_number: String,
    #[serde(default)]
    pub reason: String,
}

/// An inbound event: `{"type": "...", "data": {...}}`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case", deny_unknown_fields)]
pub enum CarrierEvent {
    OutForDelivery(OutForDelivery),
    Cancel(ParcelRef),
    Redirect(ParcelRef),
    ReturnCollection(ParcelRef),
}

fn parse_tracking(raw: &str) -> Result<String, AppError> {
    TrackingNumber::parse(raw)
        .map(TrackingNumber::into_inner)
        .map_err(AppError::invalid)
}

/// Receives a carrier event. A replayed `webhook-id` gets the first answer and changes nothing.
#[post("/events")]
pub async fn post_event(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let (carrier, event_id) = authenticate(&state, &req, &body).await?;
    let (cid, eid) = (carrier.id.clone(), event_id.clone());
    if let Some((status, stored)) = state.db.read(move |c| Ok(inbound::answered(c, &cid, &eid)?)).await? {
        let status = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::OK);
        return Ok(HttpResponse::build(status)
            .insert_header(("idempotent-replayed", "true"))
            .json(stored));
    }
    let result = handle_event(&state, &carrier, &event_id, &body).await;
    match result {
        Ok((status, body)) => Ok(HttpResponse::build(status).json(body)),
        Err(e) if e.status_is_client_error() => {
            // Refusals are answered the same way on a replay.
            let status = actix_web::ResponseError::status_code(&e).as_u16();
            let stored = json!({"error": e.code(), "message": e.public_message()});
            let (cid, eid) = (carrier.id.clone(), event_id.clone());
            let _ = state
                .db
                .run(move |c| Ok(inbound::remember(c, &cid, &eid, status, &stored)?))
                .await;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

async fn handle_event(
    state: &AppState,
    carrier: &Carrier,
    event_id: &str,
    body: &[u8],
) -> Result<(actix_web::http::StatusCode, Value), AppError> {
    use actix_web::http::StatusCode;
    let event: CarrierEvent = serde_json::from_slice(body).map_err(|e| {
        let code = if e.is_data() { "invalid_body" } else { "malformed_json" };
        AppError::BadRequest {
            code,
            message: format!("invalid event: {e}"),
        }
    })?;
    let mailbox = |e: actix::MailboxError| AppError::Unavailable(format!("locker actor: {e}"));
    match event {
        CarrierEvent::OutForDelivery(o) => {
            let advice = resolve_pre_advice(state, carrier, event_id, o).await?;
            let (site, size) = (advice.0.site_id.clone(), advice.0.size);
            let locker_id = match advice.1 {
                Some(l) => l,
                None => state
                    .db
                    .read(move |c| Ok(inbound::best_locker(c, &site, size)?))
                    .await?
                    .ok_or_else(|| AppError::invalid("this site has no active locker"))?,
            };
            let locker = state.hub.send(GetLocker { locker_id }).await.map_err(mailbox)?;
            let outcome = locker
                .send(PreAdviseParcel { advice: advice.0 })
                .await
                .map_err(mailbox)??;
            Ok((StatusCode::ACCEPTED, json!(outcome)))
        }
        CarrierEvent::Cancel(p) | CarrierEvent::Redirect(p) => {
            let tracking = parse_tracking(&p.tracking_number)?;
            let cid = carrier.id.clone();
            let parcel = state
                .db
                .read(move |c| {
                    Ok(inbound::find_for_carrier(
                        c,
                        &cid,
                        &tracking,
                        &[ParcelState::Expected, ParcelState::Reserved],
                    )?)
                })
                .await?
                .ok_or_else(|| AppError::not_found("no cancellable parcel with this tracking number"))?;
            let reason: String = p.reason.chars().take(200).collect();
            let msg = CancelParcel {
                parcel_id: parcel.id.clone(),
                carrier_id: carrier.id.clone(),
                event_id: event_id.to_string(),
                reason: if reason.is_empty() {
                    "cancelled by the carrier".into()
                } else {
                    reason
                },
            };
            let body =
                match parcel.locker_id {
                    Some(l) => {
                        let locker = state.hub.send(GetLocker { locker_id: l }).await.map_err(mailbox)?;
                        locker.send(msg).await.map_err(mailbox)??
                    }
                    None => state
                        .db
                        .transaction(move |c| {
                            let actor = format!("carrier:{}", msg.carrier_id);
                            crate::workflows::carrier_events::cancel(c, &msg.parcel_id, &actor, &msg.reason)?;
                            let body =
                                json!({"parcel_id": msg.parcel_id, "state": "cancelled", "released_compartment": null});
                            inbound::remember(c, &msg.carrier_id, &msg.event_id, 200, &body)?;
                            Ok(body)
                        })
                        .await?,
                };
            Ok((StatusCode::OK, body))
        }
        CarrierEvent::ReturnCollection(p) => {
            let tracking = parse_tracking(&p.tracking_number)?;
            let cid = carrier.id.clone();
            let parcel = state
                .db
                .read(move |c| Ok(inbound::find_for_carrier(c, &cid, &tracking, &[ParcelState::Expired])?))
                .await?
                .ok_or_else(|| AppError::not_found("no expired parcel with this tracking number"))?;
            let locker_id = parcel
                .locker_id
                .ok_or_else(|| AppError::internal("expired parcel without locker"))?;
            let locker = state.hub.send(GetLocker { locker_id }).await.map_err(mailbox)?;
            let msg = IssueCollectionCode {
                parcel_id: parcel.id,
                carrier_id: carrier.id.clone(),
                event_id: event_id.to_string(),
            };
            Ok((StatusCode::OK, locker.send(msg).await.map_err(mailbox)??))
        }
    }
}

/// Validates a pre-advice and resolves its site, locker and recipient.
async fn resolve_pre_advice(
    state: &AppState,
    carrier: &Carrier,
    event_id: &str,
    o: OutForDelivery,
) -> Result<(PreAdvice, Option<String>), AppError> {
    let tracking_number = parse_tracking(&o.tracking_number)?;
    let phone = o
        .recipient
        .phone
        .as_deref()
        .map(Phone::parse)
        .transpose()
        .map_err(AppError::invalid)?;
    let email = o
        .recipient
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(AppError::invalid)?;
    if phone.is_none() && email.is_none() && o.recipient.recipient_id.is_none() {
        return Err(AppError::invalid("recipient needs a phone, an email or a recipient_id"));
    }
    // The application's clock: the reservation's expiry is a deadline compared with it.
    let reserve_until = state.clock.now() + state.clock.hours(i64::from(state.settings.reservation_hours));
    let (carrier_id, event_id) = (carrier.id.clone(), event_id.to_string());
    state
        .db
        .read(move |c| {
            let (site_id, locker_id) = match (&o.locker_id, &o.site_id) {
                (Some(l), _) => {
                    let locker = lockers::get(c, l).optional()?.filter(|l| l.active);
                    let locker = locker.ok_or_else(|| AppError::not_found("unknown locker"))?;
                    if o.site_id.as_ref().is_some_and(|s| *s != locker.site_id) {
                        return Err(AppError::invalid("locker_id is not at site_id"));
                    }
                    (locker.site_id, Some(locker.id))
                }
                (None, Some(s)) => (
                    sites::get(c, s)
                        .optional()?
                        .ok_or_else(|| AppError::not_found("unknown site"))?
                        .id,
                    None,
                ),
                (None, None) => return Err(AppError::invalid("give site_id or locker_id")),
            };
            let recipient = match (&o.recipient.recipient_id, &phone, &email) {
                (Some(id), _, _) => recipients::get(c, id)
                    .optional()?
                    .filter(|r| r.site_id == site_id && r.active),
                (None, Some(p), _) => recipients::by_phone(c, &site_id, p.as_str())?,
                (None, None, Some(e)) => recipients::by_email(c, &site_id, &e.clone().into_inner())?,
                _ => None,
            }
            .ok_or_else(|| AppError::invalid("no such recipient at this site"))?;
            let advice = PreAdvice {
                event_id,
                carrier_id,
                tracking_number,
                site_id,
                recipient_id: recipient.id,
                needs_accessible: recipient.needs_accessible,
                size: o.size,
                reserve_until,
            };
            Ok((advice, locker_id))
        })
        .await
}

/// A carrier's view of one of its own parcels. Another carrier's tracking number is a 404.
#[get("/parcels/{tracking_number}")]
pub async fn get_parcel(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let (carrier, _) = authenticate(&state, &req, &body).await?;
    let tracking = parse_tracking(&path.into_inner())?;
    let found = state
        .db
        .read(move |c| {
            let p = inbound::find_for_carrier(c, &carrier.id, &tracking, &[])?
                .ok_or_else(|| AppError::not_found("no parcel with this tracking number"))?;
            let events = parcels::events(c, &p.id)?;
            Ok(json!({"parcel": p, "events": events}))
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

use diesel::OptionalExtension;
