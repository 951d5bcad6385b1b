//! /api/v1/recipients, and CSV import under /api/v1/sites/{id}/recipients/import.

use actix_web::{get, patch, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::sites::not_found;
use super::{double_option, field, AppState};
use crate::db::page::Paged;
use crate::db::recipients::{self, NewRecipient, Recipient, RecipientChanges, RecipientFilter};
use crate::db::{new_id, now, sites};
use crate::domain::inputs::{Channel, Email, Phone, Text};
use crate::error::AppError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(create)
        .service(list)
        .service(get_one)
        .service(update)
        .service(import_csv);
}

/// Most rows one CSV import may hold.
pub const MAX_IMPORT_ROWS: usize = 10_000;

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientInput {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 50)]
    pub unit: String,
    /// 7–15 digits, optionally after `+`, with spaces, dashes, dots or parentheses; blank for none.
    #[schema(
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*(\\+*[ ().-]*([0-9][ ().-]*){7,15})?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub phone: Option<String>,
    /// An email address (printable ASCII); blank for none.
    #[schema(
        max_length = 254,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*([!-?A-~]+@[!-\\-/-?A-~][!-?A-~]*\\.[!-?A-~]*[!-\\-/-?A-~])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub email: Option<String>,
    /// Device token or endpoint for app push.
    #[schema(max_length = 512)]
    pub push_target: Option<String>,
    /// Preferred channels, most preferred first. Defaults to every channel with contact details.
    pub channels: Option<Vec<Channel>>,
    pub vacation_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub needs_accessible: bool,
}

/// A recipient and its site. Written out flat, not as `site_id` + a flattened
/// [`RecipientInput`]: the schema of that is an `allOf` whose parts each forbid the other's
/// fields, which no body can satisfy.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRecipient {
    pub site_id: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 50)]
    pub unit: String,
    /// 7–15 digits, optionally after `+`, with spaces, dashes, dots or parentheses; blank for none.
    #[schema(
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*(\\+*[ ().-]*([0-9][ ().-]*){7,15})?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub phone: Option<String>,
    /// An email address (printable ASCII); blank for none.
    #[schema(
        max_length = 254,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*([!-?A-~]+@[!-\\-/-?A-~][!-?A-~]*\\.[!-?A-~]*[!-\\-/-?A-~])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub email: Option<String>,
    /// Device token or endpoint for app push.
    #[schema(max_length = 512)]
    pub push_target: Option<String>,
    /// Preferred channels, most preferred first. Defaults to every channel with contact details.
    pub channels: Option<Vec<Channel>>,
    pub vacation_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub needs_accessible: bool,
}

impl CreateRecipient {
    fn split(self) -> (String, RecipientInput) {
        let r = RecipientInput {
            name: self.name,
            unit: self.unit,
            phone: self.phone,
            email: self.email,
            push_target: self.push_target,
            channels: self.channels,
            vacation_until: self.vacation_until,
            needs_accessible: self.needs_accessible,
        };
        (self.site_id, r)
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRecipient {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\u0000-\\u001f\\u007f-\\u009f])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$"
    )]
    pub name: Option<String>,
    #[schema(max_length = 50)]
    pub unit: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*(\\+*[ ().-]*([0-9][ ().-]*){7,15})?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$")]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 254, pattern = "^[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*([!-?A-~]+@[!-\\-/-?A-~][!-?A-~]*\\.[!-?A-~]*[!-\\-/-?A-~])?[\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*$")]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 512)]
    pub push_target: Option<Option<String>>,
    pub channels: Option<Vec<Channel>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub vacation_until: Option<Option<DateTime<Utc>>>,
    pub needs_accessible: Option<bool>,
    pub active: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RecipientQuery {
    pub site_id: Option<String>,
    /// Substring of name or unit, case-insensitive.
    #[param(max_length = 100)]
    pub q: Option<String>,
    pub limit: Option<i64>,
    pub after: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportResult {
    pub imported: usize,
}

fn opt_phone(p: Option<&str>) -> Result<Option<String>, String> {
    p.map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| Phone::parse(p).map(|p| p.as_str().to_string()))
        .transpose()
}

fn opt_email(e: Option<&str>) -> Result<Option<String>, String> {
    e.map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| Email::parse(e).map(Email::into_inner))
        .transpose()
}

fn opt_push(p: Option<&str>) -> Result<Option<String>, String> {
    match p.map(str::trim).filter(|p| !p.is_empty()) {
        Some(p) if p.len() > 512 => Err("push_target must be at most 512 characters".into()),
        other => Ok(other.map(str::to_string)),
    }
}

/// Checks that every preferred channel has its contact detail; defaults to all that do.
fn channels_for(
    wanted: Option<Vec<Channel>>,
    phone: &Option<String>,
    email: &Option<String>,
    push: &Option<String>,
) -> Result<String, String> {
    let has = |ch: Channel| match ch {
        Channel::Email => email.is_some(),
        Channel::Sms => phone.is_some(),
        Channel::Push => push.is_some(),
    };
    let chosen = match wanted {
        Some(wanted) => {
            if let Some(missing) = wanted.iter().find(|c| !has(**c)) {
                return Err(format!("channel {} needs its contact detail", missing.as_str()));
            }
            let mut dedup = Vec::new();
            for c in wanted {
                if !dedup.contains(&c) {
                    dedup.push(c);
                }
            }
            dedup
        }
        None => [Channel::Email, Channel::Sms, Channel::Push]
            .into_iter()
            .filter(|c| has(*c))
            .collect(),
    };
    Ok(Channel::join(&chosen))
}

/// A unit: trimmed, at most 50 characters (on create, import and update alike).
fn unit(raw: &str) -> Result<String, AppError> {
    let unit = raw.trim().to_string();
    if unit.chars().count() > 50 {
        return Err(AppError::invalid("unit must be at most 50 characters"));
    }
    Ok(unit)
}

/// Parses one recipient for a site: the same rules for JSON and CSV.
pub fn parse_recipient(site_id: &str, r: RecipientInput) -> Result<NewRecipient, String> {
    let name = Text::parse("name", &r.name, 200)?.into_inner();
    let unit = unit(&r.unit).map_err(|e| e.to_string())?;
    let phone = opt_phone(r.phone.as_deref())?;
    let email = opt_email(r.email.as_deref())?;
    let push_target = opt_push(r.push_target.as_deref())?;
    let channels = channels_for(r.channels, &phone, &email, &push_target)?;
    let t = now();
    Ok(NewRecipient {
        id: new_id(),
        site_id: site_id.to_string(),
        name,
        unit,
        phone,
        email,
        push_target,
        channels,
        vacation_until: r.vacation_until.map(|v| v.naive_utc()),
        needs_accessible: r.needs_accessible,
        created_at: t,
        updated_at: t,
    })
}

fn phone_conflict(e: diesel::result::Error) -> AppError {
    match AppError::from(e) {
        AppError::Conflict { .. } => AppError::conflict("a recipient with this phone already exists at this site"),
        other => other,
    }
}

#[utoipa::path(tag = "recipients", request_body = CreateRecipient, security(("admin" = [])),
    responses((status = 201, body = Recipient), (status = 404, description = "No such site", body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
#[post("/recipients")]
pub async fn create(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Json<CreateRecipient>,
) -> Result<HttpResponse, AppError> {
    let (site_id, input) = body.into_inner().split();
    let new = field(parse_recipient(&site_id, input))?;
    let created = state
        .db
        .transaction(move |c| {
            sites::get(c, &new.site_id).map_err(|e| not_found(e, "site"))?;
            recipients::insert_many(c, std::slice::from_ref(&new)).map_err(phone_conflict)?;
            Ok(recipients::get(c, &new.id)?)
        })
        .await?;
    Ok(HttpResponse::Created().json(created))
}

#[utoipa::path(tag = "recipients", params(RecipientQuery), security(("admin" = [])), responses((status = 200, body = Paged<Recipient>)))]
#[get("/recipients")]
pub async fn list(
    _: Admin,
    state: web::Data<AppState>,
    q: web::Query<RecipientQuery>,
) -> Result<HttpResponse, AppError> {
    let q = q.into_inner();
    let page = super::page(q.limit, q.after)?;
    if q.q.as_ref().is_some_and(|s| s.chars().count() > 100) {
        return Err(AppError::invalid("q must be at most 100 characters"));
    }
    let filter = RecipientFilter {
        site_id: q.site_id,
        q: q.q,
    };
    let found = state.db.read(move |c| Ok(recipients::list(c, &filter, &page)?)).await?;
    Ok(HttpResponse::Ok().json(found))
}

#[utoipa::path(tag = "recipients", security(("admin" = [])), responses((status = 200, body = Recipient), (status = 404, body = crate::error::ErrorBody)))]
#[get("/recipients/{id}")]
pub async fn get_one(_: Admin, state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, AppError> {
    let id = id.into_inner();
    let found = state
        .db
        .read(move |c| recipients::get(c, &id).map_err(|e| not_found(e, "recipient")))
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

#[utoipa::path(tag = "recipients", request_body = UpdateRecipient, security(("admin" = [])),
    responses((status = 200, body = Recipient), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "Phone already used at this site, or a preferred channel lacks its contact detail", body = crate::error::ErrorBody)))]
#[patch("/recipients/{id}")]
pub async fn update(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Json<UpdateRecipient>,
) -> Result<HttpResponse, AppError> {
    let b = body.into_inner();
    let id = id.into_inner();
    let updated = state
        .db
        .transaction(move |c| {
            let current = recipients::get(c, &id).map_err(|e| not_found(e, "recipient"))?;
            let phone = match &b.phone {
                Some(p) => field(opt_phone(p.as_deref()))?,
                None => current.phone.clone(),
            };
            let email = match &b.email {
                Some(e) => field(opt_email(e.as_deref()))?,
                None => current.email.clone(),
            };
            let push = match &b.push_target {
                Some(p) => field(opt_push(p.as_deref()))?,
                None => current.push_target.clone(),
            };
            let wanted = b.channels.clone().or_else(|| Some(Channel::split(&current.channels)));
            let channels = match b.channels {
                // The contact details a channel needs may be the stored ones: a conflict with
                // the recipient's state, where on create it is a rule of the body (422).
                Some(_) => channels_for(wanted, &phone, &email, &push).map_err(|message| AppError::Conflict {
                    code: "channel_without_contact",
                    message,
                })?,
                // Contact details changed: keep the preferences that still have a contact.
                None => {
                    let kept: Vec<Channel> = Channel::split(&current.channels)
                        .into_iter()
                        .filter(|c| match c {
                            Channel::Email => email.is_some(),
                            Channel::Sms => phone.is_some(),
                            Channel::Push => push.is_some(),
                        })
                        .collect();
                    Channel::join(&kept)
                }
            };
            let changes = RecipientChanges {
                name: b
                    .name
                    .map(|n| field(Text::parse("name", &n, 200)))
                    .transpose()?
                    .map(Text::into_inner),
                unit: b.unit.map(|u| unit(&u)).transpose()?,
                phone: b.phone.map(|_| phone),
                email: b.email.map(|_| email),
                push_target: b.push_target.map(|_| push),
                channels: Some(channels),
                vacation_until: b.vacation_until.map(|v| v.map(|v| v.naive_utc())),
                needs_accessible: b.needs_accessible,
                active: b.active,
                updated_at: None,
            };
            recipients::update(c, &id, changes).map_err(phone_conflict)
        })
        .await?;
    Ok(HttpResponse::Ok().json(updated))
}

/// One CSV row. Columns: name, unit, phone, email, push_target, channels (`;`-separated), needs_accessible.
#[derive(Debug, Deserialize)]
struct CsvRow {
    name: String,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    push_target: String,
    #[serde(default)]
    channels: String,
    #[serde(default)]
    needs_accessible: String,
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "" | "false" | "no" | "0" | "n" => Ok(false),
        "true" | "yes" | "1" | "y" => Ok(true),
        other => Err(format!("needs_accessible {other:?} is not yes/no")),
    }
}

fn parse_csv(site_id: &str, body: &[u8]) -> Result<Vec<NewRecipient>, AppError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(body);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut phones = std::collections::HashMap::new();
    for (i, row) in reader.deserialize::<CsvRow>().enumerate() {
        let line = i + 2; // 1-based, after the header
        if out.len() + errors.len() >= MAX_IMPORT_ROWS {
            return Err(AppError::invalid(format!(
                "a CSV import holds at most {MAX_IMPORT_ROWS} rows"
            )));
        }
        let parsed = row.map_err(|e| format!("{e}")).and_then(|r| {
            let channels = if r.channels.trim().is_empty() {
                None
            } else {
                Some(
                    r.channels
                        .split([';', '|'])
                        .map(|c| Channel::parse(c).ok_or_else(|| format!("unknown channel {:?}", c.trim())))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            };
            let input = RecipientInput {
                name: r.name,
                unit: r.unit,
                phone: Some(r.phone),
                email: Some(r.email),
                push_target: Some(r.push_target),
                channels,
                vacation_until: None,
                needs_accessible: parse_bool(&r.needs_accessible)?,
            };
            parse_recipient(site_id, input)
        });
        match parsed {
            Ok(rec) => {
                if let Some(phone) = &rec.phone {
                    if let Some(first) = phones.insert(phone.clone(), line) {
                        errors.push(format!("line {line}: phone also on line {first}"));
                        continue;
                    }
                }
                out.push(rec);
            }
            Err(e) => errors.push(format!("line {line}: {e}")),
        }
    }
    if !errors.is_empty() {
        let shown: Vec<_> = errors.iter().take(20).cloned().collect();
        let more = errors.len().saturating_sub(shown.len());
        let suffix = if more > 0 {
            format!(" (and {more} more)")
        } else {
            String::new()
        };
        return Err(AppError::invalid(format!(
            "nothing imported: {}{suffix}",
            shown.join("; ")
        )));
    }
    if out.is_empty() {
        return Err(AppError::invalid("the CSV has no rows"));
    }
    Ok(out)
}

/// Imports recipients from CSV with a header row. All rows are imported, or none.
#[utoipa::path(tag = "recipients", request_body(content = String, content_type = "text/csv"), security(("admin" = [])),
    responses((status = 201, body = ImportResult), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
#[post("/sites/{id}/recipients/import")]
pub async fn import_csv(
    _: Admin,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, AppError> {
    let ct = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("text/csv") {
        return Err(AppError::UnsupportedMediaType("expected Content-Type: text/csv".into()));
    }
    let limit = state.settings.max_csv_bytes;
    let body = body
        .to_bytes_limited(limit)
        .await
        .map_err(|_| AppError::PayloadTooLarge(limit))?
        .map_err(|e| AppError::BadRequest {
            code: "invalid_body",
            message: format!("could not read the body: {e}"),
        })?;
    let site_id = id.into_inner();
    let rows = parse_csv(&site_id, &body)?;
    let imported = state
        .db
        .transaction(move |c| {
            sites::get(c, &site_id).map_err(|e| not_found(e, "site"))?;
            recipients::insert_many(c, &rows).map_err(phone_conflict)
        })
        .await?;
    Ok(HttpResponse::Created().json(ImportResult { imported }))
}
