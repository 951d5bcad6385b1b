//! /api/v1/lockers: lockers, their compartments, and carriers' sections.

use actix_web::{delete, get, patch, post, put, web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::numbers::whole;
use super::sites::not_found;
use super::{field, AppState};
use crate::actors::messages::{DisconnectLocker, GetLocker, OpenOutcome, ReloadLocker, RemoteOpen};
use crate::db::lockers::{self, Compartment, CompartmentChanges, Locker, LockerChanges, NewCompartment, Section};
use crate::db::page::Paged;
use crate::db::pickups::{self, Fault};
use crate::db::{carriers, sites, DbConn};
use crate::domain::inputs::Text;
use crate::domain::{CompartmentStatus, Size};
use crate::error::AppError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(create)
        .service(list)
        .service(get_one)
        .service(update)
        .service(rotate_credential)
        .service(add_compartments)
        .service(list_compartments)
        .service(update_compartment)
        .service(list_sections)
        .service(put_section)
        .service(delete_section)
        .service(list_faults)
        .service(open_compartment);
}

/// Most compartments one locker bank may have.
pub const MAX_COMPARTMENTS: i32 = 1000;

/// A run of same-size compartments, e.g. `{"size": "S", "count": 10}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LayoutRow {
    pub size: Size,
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 1000)]
    pub count: i32,
    #[serde(default)]
    pub accessible: bool,
}

/// One explicitly numbered compartment.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompartmentSpec {
    #[serde(deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 9999)]
    pub number: i32,
    pub size: Size,
    #[serde(default)]
    pub accessible: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLocker {
    pub site_id: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    pub location: String,
    /// Compartments numbered from 1 in the order given.
    #[serde(default)]
    pub layout: Vec<LayoutRow>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedLocker {
    pub locker: Locker,
    /// The device credential. Shown only now; only its hash is stored.
    pub device_credential: String,
    pub compartments: Vec<Compartment>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLocker {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub name: Option<String>,
    #[schema(max_length = 500)]
    pub location: Option<String>,
    /// An inactive locker's device cannot connect.
    pub active: Option<bool>,
}

/// Either a layout (numbered after the highest existing number) or explicit compartments.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1, max_properties = 1)]
pub struct AddCompartments {
    #[serde(default)]
    #[schema(min_items = 1)]
    pub layout: Vec<LayoutRow>,
    #[serde(default)]
    #[schema(min_items = 1)]
    pub compartments: Vec<CompartmentSpec>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCompartment {
    pub size: Option<Size>,
    pub accessible: Option<bool>,
    /// `false` takes it out of service; `true` returns it, clearing its fault.
    pub in_service: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSection {
    /// Compartment numbers that form the carrier's section.
    #[serde(deserialize_with = "whole")]
    #[schema(max_items = 1000)]
    pub compartments: Vec<i32>,
    #[serde(default)]
    pub exclusive: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LockerQuery {
    pub site_id: Option<String>,
    pub limit: Option<i64>,
    pub after: Option<String>,
}

/// Expands layout rows into numbered compartments starting after `start`.
fn expand_layout(rows: &[LayoutRow], start: i32) -> Result<Vec<NewCompartment>, AppError> {
    let mut out = Vec::new();
    let mut number = start;
    for row in rows {
        if !(1..=MAX_COMPARTMENTS).contains(&row.count) {
            return Err(AppError::invalid(format!(
                "layout count must be between 1 and {MAX_COMPARTMENTS}"
            )));
        }
        for _ in 0..row.count {
            number += 1;
            out.push(NewCompartment {
                number,
                size: row.size,
                accessible: row.accessible,
            });
        }
    }
    Ok(out)
}

/// A locker's free-text location: trimmed, at most 500 characters (on create and update alike).
fn location(raw: &str) -> Result<String, AppError> {
    let location = raw.trim().to_string();
    if location.chars().count() > 500 {
        return Err(AppError::invalid("location must be at most 500 characters"));
    }
    Ok(location)
}

fn check_total(existing: i32, adding: usize) -> Result<(), AppError> {
    if existing as usize + adding > MAX_COMPARTMENTS as usize {
        return Err(AppError::invalid(format!(
            "a locker holds at most {MAX_COMPARTMENTS} compartments"
        )));
    }
    Ok(())
}

#[utoipa::path(tag = "lockers", request_body = CreateLocker, security(("admin" = [])),
    responses((status = 201, body = CreatedLocker), (status = 404, description = "No such site", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
#[post("/lockers")]
pub async fn create(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Json<CreateLocker>,
) -> Result<HttpResponse, AppError> {
    let b = body.into_inner();
    let name = field(Text::parse("name", &b.name, 200))?.into_inner();
    let location = location(&b.location)?;
    let layout = expand_layout(&b.layout, 0)?;
    check_total(0, layout.len())?;
    let created = state
        .db
        .transaction(move |c| {
            sites::get(c, &b.site_id).map_err(|e| not_found(e, "site"))?;
            let (locker, device_credential) = lockers::insert(c, &b.site_id, &name, &location, &layout)?;
            let compartments = lockers::compartments_of(c, &locker.id)?;
            Ok(CreatedLocker {
                locker,
                device_credential,
                compartments,
            })
        })
        .await?;
    Ok(HttpResponse::Created().json(created))
}

#[utoipa::path(tag = "lockers", params(LockerQuery), security(("admin" = [])), responses((status = 200, body = Paged<Locker>)))]
#[get("/lockers")]
pub async fn list(_: Admin, state: web::Data<AppState>, q: web::Query<LockerQuery>) -> Result<HttpResponse, AppError> {
    let q = q.into_inner();
    let page = super::page(q.limit, q.after)?;
    let found = state
        .db
        .run(move |c| Ok(lockers::list(c, q.site_id.as_deref(), &page)?))
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

#[utoipa::path(tag = "lockers", security(("admin" = [])), responses((status = 200, body = Locker), (status = 404, body = crate::error::ErrorBody)))]
#[get("/lockers/{id}")]
pub async fn get_one(_: Admin, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let locker = state
        .db
        .run(move |c| lockers::get(c, &id).map_err(|e| not_found(e, "locker")))
        .await?;
    Ok(HttpResponse::Ok().json(locker))
}

#[utoipa::path(tag = "lockers", request_body = UpdateLocker, security(("admin" = [])),
    responses((status = 200, body = Locker), (status = 404, body = crate::error::ErrorBody)))]
#[patch("/lockers/{id}")]
pub async fn update(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<UpdateLocker>,
) -> Result<HttpResponse, AppError> {
    let b = body.into_inner();
    let changes = LockerChanges {
        name: b
            .name
            .map(|n| field(Text::parse("name", &n, 200)))
            .transpose()?
            .map(Text::into_inner),
        location: b.location.map(|l| location(&l)).transpose()?,
        active: b.active,
        updated_at: None,
    };
    let id = id.into_inner();
    let locker = state
        .db
        .run(move |c| lockers::update(c, &id, changes).map_err(|e| not_found(e, "locker")))
        .await?;
    if !locker.active {
        state.hub.do_send(DisconnectLocker {
            locker_id: locker.id.clone(),
        });
    }
    Ok(HttpResponse::Ok().json(locker))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RotatedCredential {
    pub device_credential: String,
}

/// Issues a new device credential; the old one stops working.
#[utoipa::path(tag = "lockers", security(("admin" = [])), responses((status = 200, body = RotatedCredential)))]
#[post("/lockers/{id}/credential")]
pub async fn rotate_credential(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let locker_id = id.clone();
    let device_credential = state
        .db
        .run(move |c| lockers::rotate_credential(c, &id).map_err(|e| not_found(e, "locker")))
        .await?;
    state.hub.do_send(DisconnectLocker { locker_id });
    Ok(HttpResponse::Ok().json(RotatedCredential { device_credential }))
}

fn locker_exists(c: &mut DbConn, id: &str) -> Result<Locker, AppError> {
    lockers::get(c, id).map_err(|e| not_found(e, "locker"))
}

#[utoipa::path(tag = "lockers", request_body = AddCompartments, security(("admin" = [])),
    responses((status = 201, body = [Compartment]), (status = 409, body = crate::error::ErrorBody)))]
#[post("/lockers/{id}/compartments")]
pub async fn add_compartments(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<AddCompartments>,
) -> Result<HttpResponse, AppError> {
    let b = body.into_inner();
    if b.layout.is_empty() == b.compartments.is_empty() {
        return Err(AppError::invalid("give either layout or compartments"));
    }
    let mut seen = std::collections::HashSet::new();
    for spec in &b.compartments {
        if !(1..=9999).contains(&spec.number) {
            return Err(AppError::invalid("compartment numbers must be between 1 and 9999"));
        }
        if !seen.insert(spec.number) {
            return Err(AppError::Conflict {
                code: "duplicate_compartment",
                message: format!("compartment {} is listed twice", spec.number),
            });
        }
    }
    let id = id.into_inner();
    let locker_id = id.clone();
    let created = state
        .db
        .transaction(move |c| {
            locker_exists(c, &id)?;
            let max = lockers::max_compartment_number(c, &id)?;
            let existing = lockers::compartments_of(c, &id)?;
            let new = if b.layout.is_empty() {
                b.compartments
                    .iter()
                    .map(|s| NewCompartment {
                        number: s.number,
                        size: s.size,
                        accessible: s.accessible,
                    })
                    .collect()
            } else {
                expand_layout(&b.layout, max)?
            };
            check_total(existing.len() as i32, new.len())?;
            if let Some(dup) = new.iter().find(|n| existing.iter().any(|e| e.number == n.number)) {
                return Err(AppError::Conflict {
                    code: "duplicate_compartment",
                    message: format!("compartment {} already exists at this locker", dup.number),
                });
            }
            lockers::insert_compartments(c, &id, &new)?;
            let numbers: Vec<i32> = new.iter().map(|n| n.number).collect();
            Ok(lockers::compartments_of(c, &id)?
                .into_iter()
                .filter(|c| numbers.contains(&c.number))
                .collect::<Vec<_>>())
        })
        .await?;
    state.hub.do_send(ReloadLocker { locker_id });
    Ok(HttpResponse::Created().json(created))
}

#[utoipa::path(tag = "lockers", security(("admin" = [])), responses((status = 200, body = [Compartment])))]
#[get("/lockers/{id}/compartments")]
pub async fn list_compartments(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let found = state
        .db
        .run(move |c| {
            locker_exists(c, &id)?;
            Ok(lockers::compartments_of(c, &id)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

#[utoipa::path(tag = "lockers", request_body = UpdateCompartment, security(("admin" = [])),
    responses((status = 200, body = Compartment), (status = 404, body = crate::error::ErrorBody)))]
#[patch("/lockers/{id}/compartments/{number}")]
pub async fn update_compartment(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, i32)>,
    body: web::Json<UpdateCompartment>,
) -> Result<HttpResponse, AppError> {
    let (id, number) = path.into_inner();
    let b = body.into_inner();
    let locker_id = id.clone();
    let updated = state
        .db
        .transaction(move |c| {
            locker_exists(c, &id)?;
            let current = lockers::compartment_by_number(c, &id, number).map_err(|e| not_found(e, "compartment"))?;
            let mut changes = CompartmentChanges {
                size: b.size.map(|s| s.as_str().to_string()),
                accessible: b.accessible,
                ..Default::default()
            };
            match b.in_service {
                Some(false) => {
                    changes.status = Some(CompartmentStatus::OutOfService.as_str().into());
                    if current.fault.is_none() {
                        changes.fault = Some(Some("taken out of service by an administrator".into()));
                    }
                }
                Some(true) => {
                    changes.status = Some(lockers::status_from_parcels(c, &current.id)?.as_str().into());
                    changes.fault = Some(None);
                    pickups::resolve_faults(c, &id, number)?;
                }
                None => {}
            }
            Ok(lockers::update_compartment(c, &id, number, changes)?)
        })
        .await?;
    state.hub.do_send(ReloadLocker { locker_id });
    Ok(HttpResponse::Ok().json(updated))
}

#[utoipa::path(tag = "lockers", security(("admin" = [])), responses((status = 200, body = [Section])))]
#[get("/lockers/{id}/sections")]
pub async fn list_sections(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let found = state
        .db
        .run(move |c| {
            locker_exists(c, &id)?;
            Ok(lockers::sections_of(c, &id)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

/// Makes the listed compartments the carrier's dedicated section. Takes effect on the next allocation.
#[utoipa::path(tag = "lockers", request_body = PutSection, security(("admin" = [])),
    responses((status = 200, body = Section), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "A listed compartment does not exist at this locker", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
#[put("/lockers/{id}/sections/{carrier_id}")]
pub async fn put_section(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<PutSection>,
) -> Result<HttpResponse, AppError> {
    let (id, carrier_id) = path.into_inner();
    let b = body.into_inner();
    let locker_id = id.clone();
    if b.compartments.len() > MAX_COMPARTMENTS as usize {
        return Err(AppError::invalid("too many compartments"));
    }
    let section = state
        .db
        .transaction(move |c| {
            locker_exists(c, &id)?;
            carriers::get(c, &carrier_id).map_err(|e| not_found(e, "carrier"))?;
            let existing: Vec<i32> = lockers::compartments_of(c, &id)?.iter().map(|c| c.number).collect();
            // Which numbers exist is the locker's state, not a rule of the body: a conflict.
            if let Some(missing) = b.compartments.iter().find(|n| !existing.contains(n)) {
                return Err(AppError::Conflict {
                    code: "unknown_compartment",
                    message: format!("compartment {missing} does not exist at this locker"),
                });
            }
            Ok(lockers::put_section(c, &id, &carrier_id, b.exclusive, &b.compartments)?)
        })
        .await?;
    state.hub.do_send(ReloadLocker { locker_id });
    Ok(HttpResponse::Ok().json(section))
}

#[utoipa::path(tag = "lockers", security(("admin" = [])), responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
#[delete("/lockers/{id}/sections/{carrier_id}")]
pub async fn delete_section(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (id, carrier_id) = path.into_inner();
    let locker_id = id.clone();
    state
        .db
        .transaction(move |c| {
            locker_exists(c, &id)?;
            lockers::delete_section(c, &id, &carrier_id).map_err(|e| not_found(e, "section"))
        })
        .await?;
    state.hub.do_send(ReloadLocker { locker_id });
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct FaultQuery {
    pub limit: Option<i64>,
    pub after: Option<String>,
}

/// Hardware faults and reconciliation discrepancies, oldest first.
#[utoipa::path(tag = "lockers", params(FaultQuery), security(("admin" = [])), responses((status = 200, body = Paged<Fault>)))]
#[get("/lockers/{id}/faults")]
pub async fn list_faults(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<FaultQuery>,
) -> Result<HttpResponse, AppError> {
    let q = q.into_inner();
    let page = super::page(q.limit, q.after)?;
    let id = id.into_inner();
    let found = state
        .db
        .run(move |c| {
            locker_exists(c, &id)?;
            Ok(pickups::faults_of(c, &id, &page)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// Why it is opened; recorded with the outcome.
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenResult {
    pub status: String,
}

/// Opens a compartment remotely through the connected device. An open the device does not
/// confirm in time answers 504 `outcome_unknown` and is recorded as a fault; it is never retried.
#[utoipa::path(tag = "lockers", request_body = OpenRequest, security(("admin" = [])),
    responses((status = 200, body = OpenResult), (status = 409, body = crate::error::ErrorBody),
              (status = 504, body = crate::error::ErrorBody)))]
#[post("/lockers/{id}/compartments/{number}/open")]
pub async fn open_compartment(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, i32)>,
    body: web::Json<OpenRequest>,
) -> Result<HttpResponse, AppError> {
    let (id, number) = path.into_inner();
    let reason: String = body.into_inner().reason.chars().take(200).collect();
    let lid = id.clone();
    state.db.run(move |c| locker_exists(c, &lid).map(drop)).await?;
    let locker = state
        .hub
        .send(GetLocker { locker_id: id })
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    let outcome = locker
        .send(RemoteOpen {
            number,
            reason,
            actor: admin.actor(),
        })
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    match outcome {
        OpenOutcome::Opened => Ok(HttpResponse::Ok().json(OpenResult { status: "opened".into() })),
        OpenOutcome::Failed(why) => {
            Err(AppError::Conflict { code: "open_failed", message: format!("the locker could not open it: {why}") })
        }
        OpenOutcome::Offline => {
            Err(AppError::Conflict { code: "locker_offline", message: "the locker is not connected".into() })
        }
        OpenOutcome::NoSuchCompartment => Err(AppError::not_found(format!("compartment {number} not found"))),
        OpenOutcome::Unknown => Err(AppError::OutcomeUnknown(
            "the locker did not confirm in time; the door may or may not have opened, and the command will not be retried"
                .into(),
        )),
    }
}
