//! /api/v1/lockers: lockers, their compartments, and carriers' sections.

use actix_web::{delete, get, patch, post, put, web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::numbers::whole;
use super::sites::not_found;
use super::{field, object_body, AppState};
use crate::actors::locker::LockerActor;
use crate::actors::messages::{self as msg, GetLocker};
use crate::db::faults::Fault;
use crate::db::lockers::{self, Compartment, Locker, LockerChanges, NewCompartment, Section};
use crate::db::page::Paged;
use crate::db::{sites, size_classes, DbConn};
use crate::domain::booking::{check_classes, Dimensions, SizeClass};
use crate::domain::inputs::Text;
use crate::domain::Size;
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
        .service(list_size_classes)
        .service(put_size_classes)
        .service(list_quotas)
        .service(put_quota)
        .service(get_allowed_carriers)
        .service(put_allowed_carriers)
        .service(list_faults);
}

use crate::domain::MAX_COMPARTMENTS;

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
    #[schema(min_items = 1)]
    pub layout: Option<Vec<LayoutRow>>,
    #[schema(min_items = 1)]
    pub compartments: Option<Vec<CompartmentSpec>>,
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
        .read(move |c| Ok(lockers::list(c, q.site_id.as_deref(), &page)?))
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

#[utoipa::path(tag = "lockers", security(("admin" = [])), responses((status = 200, body = Locker), (status = 404, body = crate::error::ErrorBody)))]
#[get("/lockers/{id}")]
pub async fn get_one(_: Admin, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let locker = state
        .db
        .read(move |c| lockers::get(c, &id).map_err(|e| not_found(e, "locker")))
        .await?;
    Ok(HttpResponse::Ok().json(locker))
}

/// Every status an admin change through the locker actor can answer besides success.
/// 400: malformed body or path; 401: no or a wrong admin key; 413/415: body too large or not
/// JSON; 429: too many failed authentications; 503: the database or the locker actor is
/// unavailable (retry).
#[utoipa::path(tag = "lockers", request_body = UpdateLocker, security(("admin" = [])),
    params(("id" = String, Path, description = "Locker id")),
    responses((status = 200, body = Locker),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
              (status = 415, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
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
    // Through the actor: a deactivation closes the live session before the answer.
    let locker = through_locker(&state, &id, msg::UpdateLocker { changes }).await?;
    Ok(HttpResponse::Ok().json(locker))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RotatedCredential {
    pub device_credential: String,
}

/// Issues a new device credential; the old one stops working at once and the live session
/// (if any) is closed with 1008.
#[utoipa::path(tag = "lockers", security(("admin" = [])),
    params(("id" = String, Path, description = "Locker id")),
    responses((status = 200, body = RotatedCredential),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
#[post("/lockers/{id}/credential")]
pub async fn rotate_credential(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let device_credential = through_locker(&state, &id, msg::RotateCredential).await?;
    Ok(HttpResponse::Ok().json(RotatedCredential { device_credential }))
}

/// Sends an admin change to the locker's actor (starting it if it is not running) and waits
/// until the actor has committed it and applied it to its memory: the answer means the next
/// allocation sees the change.
async fn through_locker<M, R>(state: &AppState, locker_id: &str, change: M) -> Result<R, AppError>
where
    M: actix::Message<Result = Result<R, AppError>> + Send + 'static,
    R: Send + 'static,
    LockerActor: actix::Handler<M>,
{
    // A locker actor for an id that does not exist would only fail to load, again and again.
    let lid = locker_id.to_string();
    state.db.read(move |c| locker_exists(c, &lid).map(drop)).await?;
    let locker = state
        .hub
        .send(GetLocker {
            locker_id: locker_id.to_string(),
        })
        .await
        .map_err(|e| AppError::Unavailable(format!("hub: {e}")))?;
    locker
        .send(change)
        .await
        .map_err(|e| AppError::Unavailable(format!("locker actor: {e}")))?
}

fn locker_exists(c: &mut DbConn, id: &str) -> Result<Locker, AppError> {
    lockers::get(c, id).map_err(|e| not_found(e, "locker"))
}

#[utoipa::path(tag = "lockers", request_body = AddCompartments, security(("admin" = [])),
    params(("id" = String, Path, description = "Locker id")),
    responses((status = 201, body = [Compartment]),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "`duplicate_compartment`: a number exists or is listed twice", body = crate::error::ErrorBody),
              (status = 413, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
#[post("/lockers/{id}/compartments")]
pub async fn add_compartments(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<AddCompartments>,
) -> Result<HttpResponse, AppError> {
    // Exactly one of the two, and not empty: what the schema says (one property, minItems 1).
    let (layout, specs) = match body.into_inner() {
        AddCompartments {
            layout: Some(layout),
            compartments: None,
        } if !layout.is_empty() => (layout, Vec::new()),
        AddCompartments {
            layout: None,
            compartments: Some(specs),
        } if !specs.is_empty() => (Vec::new(), specs),
        _ => {
            return Err(AppError::invalid(
                "give either a non-empty layout or non-empty compartments, not both",
            ))
        }
    };
    let mut seen = std::collections::HashSet::new();
    for spec in &specs {
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
    let after_highest = specs.is_empty();
    let compartments = if after_highest {
        expand_layout(&layout, 0)?
    } else {
        specs
            .iter()
            .map(|s| NewCompartment {
                number: s.number,
                size: s.size,
                accessible: s.accessible,
            })
            .collect()
    };
    check_total(0, compartments.len())?;
    let change = msg::AddCompartments {
        compartments,
        after_highest,
        max_total: MAX_COMPARTMENTS as usize,
    };
    let created = through_locker(&state, &id, change).await?;
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
        .read(move |c| {
            locker_exists(c, &id)?;
            Ok(lockers::compartments_of(c, &id)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

#[utoipa::path(tag = "lockers", request_body = UpdateCompartment, security(("admin" = [])),
    params(("id" = String, Path, description = "Locker id"), ("number" = i32, Path, description = "Compartment number")),
    responses((status = 200, body = Compartment),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
              (status = 415, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
              (status = 503, body = crate::error::ErrorBody)))]
#[patch("/lockers/{id}/compartments/{number}")]
pub async fn update_compartment(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, i32)>,
    body: web::Json<UpdateCompartment>,
) -> Result<HttpResponse, AppError> {
    let (id, number) = path.into_inner();
    let b = body.into_inner();
    let change = msg::UpdateCompartment {
        number,
        size: b.size,
        accessible: b.accessible,
        in_service: b.in_service,
    };
    let updated = through_locker(&state, &id, change).await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// A locker's size classes, by size: what each size's compartments hold inside. They map a
/// carrier's parcel dimensions and weight to a size (`POST /carrier/v1/precheck`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[allow(non_snake_case)]
pub struct SizeClasses {
    pub S: ClassSpec,
    pub M: ClassSpec,
    pub L: ClassSpec,
    pub XL: ClassSpec,
    /// True while none are set: the classes are the defaults.
    pub default: bool,
}

impl SizeClasses {
    fn of(classes: &[SizeClass; 4], default: bool) -> Self {
        let spec = |c: &SizeClass| ClassSpec {
            inside: c.inside,
            max_weight_g: c.max_weight_g,
        };
        Self {
            S: spec(&classes[0]),
            M: spec(&classes[1]),
            L: spec(&classes[2]),
            XL: spec(&classes[3]),
            default,
        }
    }
}

/// What one size's compartments hold inside.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    pub inside: Dimensions,
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_weight_g: u32,
}

/// Sets a locker's size classes, every size at once (to go back to the defaults, set them).
/// A larger size must be at least as large, and hold at least as much, as a smaller one.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct PutSizeClasses {
    #[serde(deserialize_with = "whole")]
    pub S: ClassSpec,
    #[serde(deserialize_with = "whole")]
    pub M: ClassSpec,
    #[serde(deserialize_with = "whole")]
    pub L: ClassSpec,
    #[serde(deserialize_with = "whole")]
    pub XL: ClassSpec,
}

impl PutSizeClasses {
    fn classes(&self) -> [SizeClass; 4] {
        [
            (Size::S, self.S),
            (Size::M, self.M),
            (Size::L, self.L),
            (Size::XL, self.XL),
        ]
        .map(|(size, c)| SizeClass {
            size,
            inside: c.inside,
            max_weight_g: c.max_weight_g,
        })
    }
}

#[utoipa::path(tag = "lockers", security(("admin" = [])),
    params(("id" = String, Path, description = "Locker id")),
    responses((status = 200, body = SizeClasses)))]
#[get("/lockers/{id}/size-classes")]
pub async fn list_size_classes(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let (classes, default) = state
        .db
        .read(move |c| {
            locker_exists(c, &id)?;
            Ok(size_classes::effective(c, &id)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(SizeClasses::of(&classes, default)))
}

#[utoipa::path(tag = "lockers", request_body = PutSizeClasses, security(("admin" = [])),
    params(("id" = String, Path, description = "Locker id")),
    responses((status = 200, body = SizeClasses),
              (status = 422, description = "A bound broken, or a larger size smaller (or holding less) than a smaller one", body = crate::error::ErrorBody)))]
#[put("/lockers/{id}/size-classes")]
pub async fn put_size_classes(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    // An object, read as one: serde would also take a struct of optional fields from an array.
    body: web::Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<HttpResponse, AppError> {
    let body: PutSizeClasses = object_body(body.into_inner())?;
    let classes = body.classes();
    check_classes(&classes).map_err(AppError::invalid)?;
    let id = id.into_inner();
    let (classes, default) = state
        .db
        .transaction(move |c| {
            locker_exists(c, &id)?;
            size_classes::replace(c, &id, &classes)?;
            Ok(size_classes::effective(c, &id)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(SizeClasses::of(&classes, default)))
}

/// The carriers a locker takes. Empty: every carrier (the default). Otherwise only these may
/// pre-check, pre-advise and deposit there; the others are refused `carrier_not_allowed`
/// (parcels already there stay, and are picked up as usual).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowedCarriers {
    #[schema(max_items = 1000)]
    pub carriers: Vec<String>,
}

#[utoipa::path(tag = "lockers", security(("admin" = [])),
    params(("id" = String, Path, description = "Locker id")),
    responses((status = 200, body = AllowedCarriers)))]
#[get("/lockers/{id}/carriers")]
pub async fn get_allowed_carriers(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let allowed = state
        .db
        .read(move |c| {
            locker_exists(c, &id)?;
            Ok(crate::db::locker_carriers::allowed(c, &id)?)
        })
        .await?;
    let mut carriers: Vec<String> = allowed.unwrap_or_default().into_iter().collect();
    carriers.sort();
    Ok(HttpResponse::Ok().json(AllowedCarriers { carriers }))
}

/// Sets the carriers a locker takes, at once (the next booking follows it).
#[utoipa::path(tag = "lockers", request_body = AllowedCarriers, security(("admin" = [])),
    params(("id" = String, Path, description = "Locker id")),
    responses((status = 200, body = AllowedCarriers),
              (status = 404, description = "No such locker, or a carrier that does not exist", body = crate::error::ErrorBody)))]
#[put("/lockers/{id}/carriers")]
pub async fn put_allowed_carriers(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<AllowedCarriers>,
) -> Result<HttpResponse, AppError> {
    let carriers = body.into_inner().carriers;
    if carriers.len() > 1000 {
        return Err(AppError::invalid("at most 1000 carriers"));
    }
    let carriers = through_locker(&state, &id.into_inner(), msg::SetAllowedCarriers { carriers }).await?;
    Ok(HttpResponse::Ok().json(AllowedCarriers { carriers }))
}

/// A carrier's quota in a locker's shared pool: at most this many compartments of each size
/// held at once by its parcels (reserved, deposited or expired). A size left out (or null) has
/// no limit; no sizes at all removes the quota. Its own section is never counted.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct QuotaLimits {
    #[serde(default, deserialize_with = "whole", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 10000)]
    pub S: Option<u32>,
    #[serde(default, deserialize_with = "whole", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 10000)]
    pub M: Option<u32>,
    #[serde(default, deserialize_with = "whole", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 10000)]
    pub L: Option<u32>,
    #[serde(default, deserialize_with = "whole", skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 10000)]
    pub XL: Option<u32>,
}

impl QuotaLimits {
    fn limits(&self) -> crate::db::quotas::Limits {
        [
            (Size::S, self.S),
            (Size::M, self.M),
            (Size::L, self.L),
            (Size::XL, self.XL),
        ]
        .into_iter()
        .filter_map(|(size, n)| Some((size, n?)))
        .collect()
    }
}

/// One carrier's quota at a locker, and what it holds there now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Quota {
    pub carrier_id: String,
    pub limits: QuotaLimits,
    /// Shared compartments its parcels hold now, by size.
    pub in_use: QuotaLimits,
}

fn limits_of(l: &crate::db::quotas::Limits) -> QuotaLimits {
    QuotaLimits {
        S: l.get(&Size::S).copied(),
        M: l.get(&Size::M).copied(),
        L: l.get(&Size::L).copied(),
        XL: l.get(&Size::XL).copied(),
    }
}

#[utoipa::path(tag = "lockers", security(("admin" = [])),
    params(("id" = String, Path, description = "Locker id")),
    responses((status = 200, body = [Quota])))]
#[get("/lockers/{id}/quotas")]
pub async fn list_quotas(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let found = state
        .db
        .read(move |c| {
            locker_exists(c, &id)?;
            let mut out = Vec::new();
            for (carrier_id, limits) in crate::db::quotas::all(c, &id)? {
                let used = crate::db::quotas::in_use(c, &id, &carrier_id)?;
                out.push(Quota {
                    carrier_id,
                    limits: limits_of(&limits),
                    in_use: limits_of(&used),
                });
            }
            Ok(out)
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

/// Sets a carrier's quota at a locker, at once (the next allocation follows it). Refused with
/// 409 `quota_below_use` where the carrier already holds more than a limit allows
/// (`details.in_use` gives the counts by size); nothing changes then.
#[utoipa::path(tag = "lockers", request_body = QuotaLimits, security(("admin" = [])),
    params(("id" = String, Path, description = "Locker id"), ("carrier_id" = String, Path, description = "Carrier id")),
    responses((status = 200, body = Quota),
              (status = 404, description = "No such locker or carrier", body = crate::error::ErrorBody),
              (status = 409, description = "`quota_below_use`: the carrier holds more than a limit; `details.in_use`", body = crate::error::ErrorBody)))]
#[put("/lockers/{id}/quotas/{carrier_id}")]
pub async fn put_quota(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    // An object, read as one (see `put_size_classes`).
    body: web::Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<HttpResponse, AppError> {
    let (id, carrier_id) = path.into_inner();
    let body: QuotaLimits = object_body(body.into_inner())?;
    let limits = body.limits();
    if limits.values().any(|n| *n > 10_000) {
        return Err(AppError::invalid("a limit is 0 to 10000"));
    }
    let set = msg::SetQuota {
        carrier_id: carrier_id.clone(),
        limits,
    };
    let (limits, used) = through_locker(&state, &id, set).await?;
    Ok(HttpResponse::Ok().json(Quota {
        carrier_id,
        limits: limits_of(&limits),
        in_use: limits_of(&used),
    }))
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
        .read(move |c| {
            locker_exists(c, &id)?;
            Ok(lockers::sections_of(c, &id)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

/// Makes the listed compartments the carrier's dedicated section; compartments that were in it
/// and are not listed return to the shared pool. Takes effect on the next allocation: the answer
/// comes once the locker applies it. A compartment holding a live parcel of another carrier
/// (reserved, deposited or expired) is never put into this carrier's section: the request is
/// refused with 409 `compartments_in_use`, `details.parcels` naming the parcels in the way.
#[utoipa::path(tag = "lockers", request_body = PutSection, security(("admin" = [])),
    params(("id" = String, Path, description = "Locker id"), ("carrier_id" = String, Path, description = "Carrier id")),
    responses((status = 200, body = Section),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 404, description = "No such locker or carrier", body = crate::error::ErrorBody),
              (status = 409, description = "`compartments_in_use`: `details.parcels` lists the parcels in the way; \
               `unknown_compartment`: a listed compartment does not exist at this locker", body = crate::error::ErrorBody),
              (status = 413, body = crate::error::ErrorBody), (status = 415, body = crate::error::ErrorBody),
              (status = 422, description = "More than 1000 compartments are listed",
               body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
#[put("/lockers/{id}/sections/{carrier_id}")]
pub async fn put_section(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    body: web::Json<PutSection>,
) -> Result<HttpResponse, AppError> {
    let (id, carrier_id) = path.into_inner();
    let b = body.into_inner();
    if b.compartments.len() > MAX_COMPARTMENTS as usize {
        return Err(AppError::invalid("too many compartments"));
    }
    let change = msg::PutSection {
        carrier_id,
        compartments: b.compartments,
        exclusive: b.exclusive,
    };
    let section = through_locker(&state, &id, change).await?;
    Ok(HttpResponse::Ok().json(section))
}

/// Dissolves the carrier's section. Never refused for parcels inside: its compartments return
/// to the shared pool, and an occupied one keeps its parcel until it leaves.
#[utoipa::path(tag = "lockers", security(("admin" = [])),
    params(("id" = String, Path, description = "Locker id"), ("carrier_id" = String, Path, description = "Carrier id")),
    responses((status = 204),
              (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody),
              (status = 404, description = "No such locker, or the carrier has no section there",
               body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
#[delete("/lockers/{id}/sections/{carrier_id}")]
pub async fn delete_section(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (id, carrier_id) = path.into_inner();
    through_locker(&state, &id, msg::DeleteSection { carrier_id }).await?;
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
        .read(move |c| {
            locker_exists(c, &id)?;
            Ok(crate::db::faults::faults_of(c, &id, &page)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}
