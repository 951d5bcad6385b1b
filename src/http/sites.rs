//! /api/v1/sites

use actix_web::{get, patch, post, web, HttpResponse};
use serde::Deserialize;

use super::auth::Admin;
use super::numbers::{whole, whole_double_option};
use super::{field, AppState};
use crate::db::page::{PageQuery, Paged};
use crate::db::sites::{self, NewSite, Site, SiteChanges};
use crate::db::{new_id, now};
use crate::domain::inputs::{Text, TimeZone};
use crate::error::AppError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(create).service(list).service(get_one).service(update);
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub name: String,
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub address: String,
    /// IANA time zone, e.g. `America/New_York`.
    pub time_zone: String,
    /// Dwell window in hours (1–720); defaults to the server setting.
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 720)]
    pub dwell_hours: Option<i32>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSite {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub name: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub address: Option<String>,
    /// IANA time zone, e.g. `America/New_York`.
    pub time_zone: Option<String>,
    /// 1–720 hours; `null` returns to the server setting.
    #[serde(default, deserialize_with = "whole_double_option")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 720)]
    pub dwell_hours: Option<Option<i32>>,
}

pub fn parse_dwell(h: Option<i32>) -> Result<Option<i32>, AppError> {
    match h {
        Some(h) if !(1..=720).contains(&h) => Err(AppError::invalid("dwell_hours must be between 1 and 720")),
        other => Ok(other),
    }
}

#[utoipa::path(tag = "sites", request_body = CreateSite, security(("admin" = [])),
    responses((status = 201, body = Site), (status = 422, body = crate::error::ErrorBody)))]
#[post("/sites")]
pub async fn create(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Json<CreateSite>,
) -> Result<HttpResponse, AppError> {
    let b = body.into_inner();
    let t = now();
    let new = NewSite {
        id: new_id(),
        name: field(Text::parse("name", &b.name, 200))?.into_inner(),
        address: field(Text::parse("address", &b.address, 500))?.into_inner(),
        time_zone: field(TimeZone::parse(&b.time_zone))?.to_string(),
        dwell_hours: parse_dwell(b.dwell_hours)?,
        created_at: t,
        updated_at: t,
    };
    let site = state.db.run(move |c| Ok(sites::insert(c, &new)?)).await?;
    Ok(HttpResponse::Created().json(site))
}

#[utoipa::path(tag = "sites", params(PageQuery), security(("admin" = [])), responses((status = 200, body = Paged<Site>)))]
#[get("/sites")]
pub async fn list(_: Admin, state: web::Data<AppState>, q: web::Query<PageQuery>) -> Result<HttpResponse, AppError> {
    let page = field(q.parse())?;
    let sites = state.db.read(move |c| Ok(sites::list(c, &page)?)).await?;
    Ok(HttpResponse::Ok().json(sites))
}

#[utoipa::path(tag = "sites", security(("admin" = [])), responses((status = 200, body = Site), (status = 404, body = crate::error::ErrorBody)))]
#[get("/sites/{id}")]
pub async fn get_one(_: Admin, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let site = state
        .db
        .read(move |c| sites::get(c, &id).map_err(|e| not_found(e, "site")))
        .await?;
    Ok(HttpResponse::Ok().json(site))
}

#[utoipa::path(tag = "sites", request_body = UpdateSite, security(("admin" = [])),
    responses((status = 200, body = Site), (status = 404, body = crate::error::ErrorBody)))]
#[patch("/sites/{id}")]
pub async fn update(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<UpdateSite>,
) -> Result<HttpResponse, AppError> {
    let b = body.into_inner();
    let changes = SiteChanges {
        name: b
            .name
            .map(|n| field(Text::parse("name", &n, 200)))
            .transpose()?
            .map(Text::into_inner),
        address: b
            .address
            .map(|a| field(Text::parse("address", &a, 500)))
            .transpose()?
            .map(Text::into_inner),
        time_zone: b
            .time_zone
            .map(|z| field(TimeZone::parse(&z)))
            .transpose()?
            .map(|z| z.to_string()),
        dwell_hours: b.dwell_hours.map(parse_dwell).transpose()?,
        updated_at: None,
    };
    let id = id.into_inner();
    let site = state
        .db
        .run(move |c| sites::update(c, &id, changes).map_err(|e| not_found(e, "site")))
        .await?;
    Ok(HttpResponse::Ok().json(site))
}

/// Names the missing thing in a diesel `NotFound`; passes other errors through.
pub fn not_found(e: diesel::result::Error, what: &str) -> AppError {
    match e {
        diesel::result::Error::NotFound => AppError::not_found(format!("{what} not found")),
        other => other.into(),
    }
}
