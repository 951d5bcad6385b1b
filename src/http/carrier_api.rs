//! /carrier/v1: what carrier systems call. Every request carries the carrier's API key and a
//! Standard Webhooks signature; every event is idempotent by its `webhook-id`.

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{bearer, client_ip, reject};
use super::numbers::whole;
use super::AppState;
use crate::actors::messages::{CancelParcel, CheckAvailability, GetLocker, IssueCollectionCode, PreAdviseParcel};
use crate::db::carriers::{self, Carrier};
use crate::db::inbound;
use crate::db::{lockers, now, parcels, recipients, sites, size_classes};
use crate::domain::booking::{self, Dimensions, Rejection};
use crate::domain::inputs::{Email, Phone, TrackingNumber};
use crate::domain::parcel::ParcelState;
use crate::domain::Size;
use crate::error::AppError;
use crate::signing;
use crate::workflows::carrier_events::{Cancelled, CollectionIssued, PreAdvice};

pub fn routes(cfg: &mut web::ServiceConfig, max_body: usize) {
    cfg.service(
        web::scope("/carrier/v1")
            .app_data(web::PayloadConfig::default().limit(max_body))
            .service(post_event)
            .service(precheck)
            .service(get_parcel),
    );
}

/// The raw body, which the signature covers. (An alias, so that the OpenAPI derive does not
/// take it for the documented request body.)
type RawBody = web::Bytes;

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

/// Whom a pre-advised parcel is for: a resident of the site, by phone, email or id (one is
/// enough; phone, then email, is how the resident is looked up).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"phone": "+15550102030"}))]
pub struct RecipientRef {
    #[schema(max_length = 32)]
    pub phone: Option<String>,
    #[schema(max_length = 254)]
    pub email: Option<String>,
    pub recipient_id: Option<String>,
}

/// A pre-advice: the parcel is on its way to a locker (`locker_id`) or to any locker of a site
/// (`site_id`); a compartment of `size` is reserved if one is free.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutForDelivery {
    /// 4 to 64 letters, digits or dashes; unique among this carrier's live parcels.
    #[schema(pattern = "^[ ]*[A-Za-z0-9-]{4,64}[ ]*$", example = "1Z999AA10000000001")]
    pub tracking_number: String,
    pub site_id: Option<String>,
    pub locker_id: Option<String>,
    pub recipient: RecipientRef,
    /// The size class; or give `dimensions` and `weight_g` instead, mapped through the
    /// locker's size classes.
    pub size: Option<Size>,
    #[serde(default, deserialize_with = "whole")]
    pub dimensions: Option<Dimensions>,
    /// With `dimensions`: the parcel's weight.
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 0, maximum = 1000000)]
    pub weight_g: Option<u32>,
}

/// What a carrier says of a parcel's size: its class, or its measures.
#[derive(Debug, Clone, Copy)]
enum ParcelSpec {
    Class(Size),
    Measured(Dimensions, u32),
}

impl ParcelSpec {
    /// A size class, or dimensions with a weight: one of the two.
    fn parse(size: Option<Size>, dimensions: Option<Dimensions>, weight_g: Option<u32>) -> Result<Self, AppError> {
        match (size, dimensions, weight_g) {
            (Some(size), None, None) => Ok(Self::Class(size)),
            (None, Some(d), Some(w)) => {
                let d = d.parse().map_err(AppError::invalid)?;
                if w > booking::MAX_G {
                    return Err(AppError::invalid(format!(
                        "weight_g must be at most {}",
                        booking::MAX_G
                    )));
                }
                Ok(Self::Measured(d, w))
            }
            _ => Err(AppError::invalid("give size, or dimensions with weight_g")),
        }
    }

    /// The size it needs at a locker (read from the database: its size classes).
    fn size_at(self, c: &mut crate::db::DbConn, locker_id: &str) -> Result<Result<Size, Rejection>, AppError> {
        Ok(match self {
            Self::Class(size) => Ok(size),
            Self::Measured(d, w) => booking::size_for(d, w, &size_classes::effective(c, locker_id)?.0),
        })
    }
}

/// One of this carrier's parcels, by tracking number.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParcelRef {
    #[schema(pattern = "^[ ]*[A-Za-z0-9-]{4,64}[ ]*$", example = "1Z999AA10000000001")]
    pub tracking_number: String,
    /// Kept in the parcel's history (at most 200 characters are kept).
    #[serde(default)]
    pub reason: String,
}

/// An inbound event: `{"type": "...", "data": {...}}`. `out_for_delivery` pre-advises a
/// parcel (answered 202 with what it led to); `cancel` and `redirect` cancel one not yet
/// deposited (200, its compartment released); `return_collection` issues a collection code for
/// an expired parcel (200).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case", deny_unknown_fields)]
pub enum CarrierEvent {
    OutForDelivery(OutForDelivery),
    Cancel(ParcelRef),
    Redirect(ParcelRef),
    ReturnCollection(ParcelRef),
}

/// What a 200 answer to an event holds, by the event's type.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EventAnswer {
    Cancelled(Cancelled),
    CollectionIssued(CollectionIssued),
}

/// A carrier's view of one of its parcels: the parcel and its history, oldest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct CarrierParcel {
    pub parcel: parcels::Parcel,
    pub events: Vec<parcels::ParcelEvent>,
}

fn parse_tracking(raw: &str) -> Result<String, AppError> {
    TrackingNumber::parse(raw)
        .map(TrackingNumber::into_inner)
        .map_err(AppError::invalid)
}

/// Receives a carrier event. A replayed `webhook-id` gets the first answer and changes nothing.
#[utoipa::path(
    tag = "carrier",
    path = "/carrier/v1/events",
    request_body(content = CarrierEvent, examples(
        ("out_for_delivery" = (value = json!({"type": "out_for_delivery", "data": {
            "tracking_number": "1Z999AA10000000001", "locker_id": "0193a3c0-5b1e-7c39-9f1a-2d4e5f6a7b8c",
            "recipient": {"phone": "+15550102030"}, "size": "S"}}))),
        ("cancel" = (value = json!({"type": "cancel", "data": {"tracking_number": "1Z999AA10000000001",
            "reason": "customer changed the address"}}))),
        ("redirect" = (value = json!({"type": "redirect", "data": {"tracking_number": "1Z999AA10000000001"}}))),
        ("return_collection" = (value = json!({"type": "return_collection", "data": {"tracking_number": "1Z999AA10000000001"}}))),
    )),
    security(("carrier" = [])),
    responses(
        (status = 202, description = "`out_for_delivery`: the parcel is expected, and reserved if a compartment was free (else `parcel.reservation_failed` follows)", body = crate::workflows::carrier_events::PreAdviceOutcome),
        (status = 200, description = "`cancel`, `redirect`: the parcel is cancelled; `return_collection`: the collection code", body = EventAnswer),
        (status = 404, description = "No such locker, site, or parcel of this carrier in a state the event applies to", body = crate::error::ErrorBody),
        (status = 409, description = "The tracking number is already live, or a driver is depositing the parcel right now, or no accessible compartment fits", body = crate::error::ErrorBody),
        (status = 422, description = "A field breaks a rule (a tracking number, a phone number, a recipient not at the site)", body = crate::error::ErrorBody),
    )
)]
#[post("/events")]
pub async fn post_event(req: HttpRequest, state: web::Data<AppState>, body: RawBody) -> Result<HttpResponse, AppError> {
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
            let (advice, target) = resolve_pre_advice(state, carrier, event_id, o).await?;
            let (locker_id, size) = match target {
                Target::Locker(l, size) => (l, size),
                Target::Site(candidates) => {
                    // Where a pre-check would have said; with no room anywhere, the site's
                    // roomiest locker for the size it needs at the first locker it fits, so
                    // the driver can deposit there if room appears.
                    let fallback = candidates.iter().find_map(|c| c.size.ok());
                    let first_miss = candidates.iter().find_map(|c| c.size.err());
                    match first_available(state, &carrier.id, advice.needs_accessible, candidates).await? {
                        Ok(found) => found,
                        Err(why) => {
                            let Some(size) = fallback else {
                                let why = first_miss.unwrap_or(why);
                                return Err(AppError::Conflict {
                                    code: why.as_str(),
                                    message: why.message().into(),
                                });
                            };
                            let site = advice.site_id.clone();
                            let l = state
                                .db
                                .read(move |c| Ok(inbound::best_locker(c, &site, size)?))
                                .await?
                                .ok_or_else(|| AppError::invalid("this site has no active locker"))?;
                            (l, size)
                        }
                    }
                }
            };
            let locker = state.hub.send(GetLocker { locker_id }).await.map_err(mailbox)?;
            let outcome = locker
                .send(PreAdviseParcel {
                    advice: PreAdvice { size, ..advice },
                })
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
            let body = match parcel.locker_id {
                Some(l) => {
                    let locker = state.hub.send(GetLocker { locker_id: l }).await.map_err(mailbox)?;
                    locker.send(msg).await.map_err(mailbox)??
                }
                None => {
                    state
                        .db
                        .transaction(move |c| {
                            let actor = format!("carrier:{}", msg.carrier_id);
                            crate::workflows::carrier_events::cancel(c, &msg.parcel_id, &actor, &msg.reason)?;
                            let body = json!(Cancelled {
                                parcel_id: msg.parcel_id.clone(),
                                state: "cancelled".into(),
                                released_compartment: None,
                            });
                            inbound::remember(c, &msg.carrier_id, &msg.event_id, 200, &body)?;
                            Ok(body)
                        })
                        .await?
                }
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

/// Where a pre-advice goes: a locker (with the size the parcel needs there), or a site's
/// lockers to choose from.
enum Target {
    Locker(String, Size),
    Site(Vec<Candidate>),
}

/// Validates a pre-advice and resolves its site, locker (or candidates) and recipient. The
/// advice's `size` is the first candidate's until a locker is chosen.
async fn resolve_pre_advice(
    state: &AppState,
    carrier: &Carrier,
    event_id: &str,
    o: OutForDelivery,
) -> Result<(PreAdvice, Target), AppError> {
    let tracking_number = parse_tracking(&o.tracking_number)?;
    let spec = ParcelSpec::parse(o.size, o.dimensions, o.weight_g)?;
    // The application's clock: the reservation's expiry is a deadline compared with it.
    let reserve_until = state.clock.now() + state.clock.hours(i64::from(state.settings.reservation_hours));
    let (carrier_id, event_id) = (carrier.id.clone(), event_id.to_string());
    state
        .db
        .read(move |c| {
            let (site_id, target) = match (&o.locker_id, &o.site_id) {
                (Some(l), _) => {
                    let locker = lockers::get(c, l)
                        .optional()?
                        .ok_or_else(|| AppError::not_found("unknown locker"))?;
                    if !locker.active {
                        return Err(AppError::Conflict {
                            code: "locker_unavailable",
                            message: Rejection::LockerUnavailable.message().into(),
                        });
                    }
                    if o.site_id.as_ref().is_some_and(|s| *s != locker.site_id) {
                        return Err(AppError::invalid("locker_id is not at site_id"));
                    }
                    let size = spec.size_at(c, &locker.id)?.map_err(|why| AppError::Conflict {
                        code: why.as_str(),
                        message: why.message().into(),
                    })?;
                    (locker.site_id, Target::Locker(locker.id, size))
                }
                (None, Some(s)) => {
                    let site = sites::get(c, s)
                        .optional()?
                        .ok_or_else(|| AppError::not_found("unknown site"))?
                        .id;
                    let mut candidates = Vec::new();
                    for l in lockers::at_site(c, &site)? {
                        candidates.push(Candidate {
                            size: spec.size_at(c, &l.id)?,
                            locker_id: l.id,
                            active: l.active,
                        });
                    }
                    (site, Target::Site(candidates))
                }
                (None, None) => return Err(AppError::invalid("give site_id or locker_id")),
            };
            let recipient = find_recipient(c, &site_id, &o.recipient)?
                .ok_or_else(|| AppError::invalid("no such recipient at this site"))?;
            let size = match &target {
                Target::Locker(_, size) => *size,
                Target::Site(cs) => cs.iter().find_map(|c| c.size.ok()).unwrap_or(Size::S),
            };
            let advice = PreAdvice {
                event_id,
                carrier_id,
                tracking_number,
                site_id,
                recipient_id: recipient.id,
                needs_accessible: recipient.needs_accessible,
                size,
                reserve_until,
            };
            Ok((advice, target))
        })
        .await
}

/// A pre-check: could a locker (or any locker of a site) take this parcel now? Give the size
/// class, or the parcel's dimensions and weight (mapped through each locker's size classes).
/// With a recipient, their need for an accessible compartment counts. Reserves nothing.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"locker_id": "0193a3b2-0d4f-7a11-8e2c-6b5a4c3d2e1f",
    "dimensions": {"length_mm": 300, "width_mm": 200, "height_mm": 120}, "weight_g": 2500}))]
pub struct Precheck {
    pub locker_id: Option<String>,
    pub site_id: Option<String>,
    pub size: Option<Size>,
    #[serde(default, deserialize_with = "whole")]
    pub dimensions: Option<Dimensions>,
    /// With `dimensions`: the parcel's weight.
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 0, maximum = 1000000)]
    pub weight_g: Option<u32>,
    pub recipient: Option<RecipientRef>,
}

/// The answer to a pre-check: where the parcel could go, or the stable reason it cannot.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Availability {
    pub available: bool,
    /// The locker that can take it (the first of the site's that can, for a site): pre-advise
    /// with this `locker_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locker_id: Option<String>,
    /// The size class it needs there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// Why not (`available: false`); for a site, the reason of its closest locker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Rejection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Availability {
    fn no(reason: Rejection) -> Self {
        Self {
            available: false,
            locker_id: None,
            size: None,
            reason: Some(reason),
            message: Some(reason.message().into()),
        }
    }
}

/// Answers a pre-check from each candidate locker's actor, where allocation is decided.
#[utoipa::path(
    tag = "carrier",
    path = "/carrier/v1/precheck",
    request_body = Precheck,
    security(("carrier" = [])),
    responses(
        (status = 200, description = "Whether the parcel could go there now, and if not why (a stable `reason`)", body = Availability),
        (status = 404, description = "No such locker or site", body = crate::error::ErrorBody),
        (status = 422, description = "Neither or both of `size` and `dimensions`, `dimensions` without `weight_g`, or neither `locker_id` nor `site_id`", body = crate::error::ErrorBody),
    )
)]
#[post("/precheck")]
pub async fn precheck(req: HttpRequest, state: web::Data<AppState>, body: RawBody) -> Result<HttpResponse, AppError> {
    let (carrier, _) = authenticate(&state, &req, &body).await?;
    let p: Precheck = serde_json::from_slice(&body).map_err(|e| AppError::BadRequest {
        code: if e.is_data() { "invalid_body" } else { "malformed_json" },
        message: format!("invalid pre-check: {e}"),
    })?;
    let spec = ParcelSpec::parse(p.size, p.dimensions, p.weight_g)?;
    let recipient = p.recipient;
    let (locker_id, site_id) = (p.locker_id, p.site_id);
    // Each candidate locker: whether it is active, and the size the parcel needs there.
    let (needs_accessible, lockers) = state
        .db
        .read(move |c| {
            let site = match (&locker_id, &site_id) {
                (Some(l), _) => {
                    let locker = lockers::get(c, l)
                        .optional()?
                        .ok_or_else(|| AppError::not_found("unknown locker"))?;
                    if site_id.as_ref().is_some_and(|s| *s != locker.site_id) {
                        return Err(AppError::invalid("locker_id is not at site_id"));
                    }
                    locker.site_id
                }
                (None, Some(s)) => {
                    sites::get(c, s)
                        .optional()?
                        .ok_or_else(|| AppError::not_found("unknown site"))?
                        .id
                }
                (None, None) => return Err(AppError::invalid("give site_id or locker_id")),
            };
            let needs_accessible = match &recipient {
                None => Ok(false),
                Some(r) => find_recipient(c, &site, r)?
                    .map(|r| r.needs_accessible)
                    .ok_or(Rejection::RecipientInvalid),
            };
            let lockers: Vec<lockers::Locker> = match &locker_id {
                Some(l) => vec![lockers::get(c, l)?],
                None => lockers::at_site(c, &site)?,
            };
            let mut out = Vec::new();
            for l in lockers {
                out.push(Candidate {
                    size: spec.size_at(c, &l.id)?,
                    locker_id: l.id,
                    active: l.active,
                });
            }
            Ok((needs_accessible, out))
        })
        .await?;
    let needs_accessible = match needs_accessible {
        Ok(n) => n,
        Err(r) => return Ok(HttpResponse::Ok().json(Availability::no(r))),
    };
    Ok(HttpResponse::Ok().json(
        match first_available(&state, &carrier.id, needs_accessible, lockers).await? {
            Ok((locker_id, size)) => Availability {
                available: true,
                locker_id: Some(locker_id),
                size: Some(size),
                reason: None,
                message: None,
            },
            Err(reason) => Availability::no(reason),
        },
    ))
}

/// A locker a parcel might go to, as the database has it.
struct Candidate {
    locker_id: String,
    active: bool,
    /// The size the parcel needs there, or why it fits none.
    size: Result<Size, Rejection>,
}

/// The first candidate, in order, whose actor (where allocation is decided) could take the
/// parcel now, with the size it needs; else the closest miss (a locker that is there and working
/// beats one that is not). A pre-check answers with it, and a pre-advice for a site goes there.
async fn first_available(
    state: &AppState,
    carrier_id: &str,
    needs_accessible: bool,
    candidates: Vec<Candidate>,
) -> Result<Result<(String, Size), Rejection>, AppError> {
    let mut reasons = Vec::new();
    for c in candidates {
        let size = match (c.active, c.size) {
            (false, _) => {
                reasons.push(Rejection::LockerUnavailable);
                continue;
            }
            (true, Err(r)) => {
                reasons.push(r);
                continue;
            }
            (true, Ok(size)) => size,
        };
        let locker = state
            .hub
            .send(GetLocker {
                locker_id: c.locker_id.clone(),
            })
            .await
            .map_err(|e| AppError::Unavailable(format!("hub: {e}")))?;
        let check = CheckAvailability {
            carrier_id: carrier_id.to_string(),
            size,
            needs_accessible,
        };
        match locker.send(check).await {
            Ok(Ok(_)) => return Ok(Ok((c.locker_id, size))),
            Ok(Err(r)) => reasons.push(r),
            Err(e) => return Err(AppError::Unavailable(format!("locker actor: {e}"))),
        }
    }
    Ok(Err(reasons
        .iter()
        .copied()
        .min_by_key(|r| *r == Rejection::LockerUnavailable)
        .unwrap_or(Rejection::LockerUnavailable)))
}

/// The resident a carrier names, at `site`: by id, else phone, else email.
fn find_recipient(
    c: &mut crate::db::DbConn,
    site: &str,
    r: &RecipientRef,
) -> Result<Option<crate::db::recipients::Recipient>, AppError> {
    let phone = r
        .phone
        .as_deref()
        .map(Phone::parse)
        .transpose()
        .map_err(AppError::invalid)?;
    let email = r
        .email
        .as_deref()
        .map(Email::parse)
        .transpose()
        .map_err(AppError::invalid)?;
    Ok(match (&r.recipient_id, &phone, &email) {
        (Some(id), _, _) => recipients::get(c, id)
            .optional()?
            .filter(|x| x.site_id == site && x.active),
        (None, Some(p), _) => recipients::by_phone(c, site, p.as_str())?,
        (None, None, Some(e)) => recipients::by_email(c, site, &e.clone().into_inner())?,
        _ => return Err(AppError::invalid("recipient needs a phone, an email or a recipient_id")),
    })
}

/// A carrier's view of one of its own parcels. Another carrier's tracking number is a 404.
/// The request is signed like an event, over an empty body.
#[utoipa::path(
    tag = "carrier",
    path = "/carrier/v1/parcels/{tracking_number}",
    params(("tracking_number" = String, Path, pattern = "^[A-Za-z0-9-]{4,64}$")),
    security(("carrier" = [])),
    responses(
        (status = 200, description = "The parcel and its history", body = CarrierParcel),
    )
)]
#[get("/parcels/{tracking_number}")]
pub async fn get_parcel(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: RawBody,
) -> Result<HttpResponse, AppError> {
    let (carrier, _) = authenticate(&state, &req, &body).await?;
    // No parcel has a tracking number that does not parse.
    let tracking =
        parse_tracking(&path.into_inner()).map_err(|_| AppError::not_found("no parcel with this tracking number"))?;
    let found = state
        .db
        .read(move |c| {
            let p = inbound::find_for_carrier(c, &carrier.id, &tracking, &[])?
                .ok_or_else(|| AppError::not_found("no parcel with this tracking number"))?;
            let events = parcels::events(c, &p.id)?;
            Ok(CarrierParcel { parcel: p, events })
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

use diesel::OptionalExtension;
