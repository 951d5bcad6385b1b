//! Remote opens: asking, approving and rejecting, and the audit of every attempt.
//!
//! The rules live in `domain::remote_open` (reasons, the window, who may approve) and the
//! decision to go ahead is taken in the locker's actor, one request at a time per locker.

use actix::Addr;
use actix_web::{get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::sites::not_found;
use super::{AppState, PageParams};
use crate::actors::locker::LockerActor;
use crate::actors::messages::{GetLocker, OpenOutcome, RemoteOpen, RequestRemoteOpen};
use crate::db::page::Paged;
use crate::db::remote_opens::{self, Decider, RemoteOpenRecord, Request};
use crate::db::{lockers, parcels};
use crate::domain::remote_open::{Outcome, Reason};
use crate::error::{AppError, ErrorBody};
use crate::ratelimit::RemoteOpenLimit;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(open_compartment)
        .service(list_for_locker)
        .service(get_one)
        .service(approve)
        .service(reject)
        .service(list_for_parcel);
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    /// Why it is opened (required, 1–200 characters after trimming); recorded with the outcome.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenResult {
    /// `opened`, `pending_approval` or `rejected`.
    pub status: String,
    /// The audit record of this attempt.
    pub remote_open: RemoteOpenRecord,
}

/// Logs one attempt: every remote open leaves a line, whatever its outcome.
fn log(rec: &RemoteOpenRecord) {
    tracing::info!(
        remote_open = %rec.id, admin_key = %rec.admin_key_id, holder = %rec.holder,
        locker = %rec.locker_id, compartment = rec.compartment, outcome = %rec.outcome,
        reason = %rec.reason, detail = %rec.detail, "remote open"
    );
}

async fn locker_actor(state: &AppState, locker_id: String) -> Result<Addr<LockerActor>, AppError> {
    state
        .hub
        .send(GetLocker { locker_id })
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))
}

/// Asks the locker to open for an accepted request and answers with the outcome.
async fn perform(state: &AppState, rec: RemoteOpenRecord, actor: String) -> Result<HttpResponse, AppError> {
    let locker = locker_actor(state, rec.locker_id.clone()).await?;
    let outcome = locker
        .send(RemoteOpen {
            number: rec.compartment,
            reason: rec.reason.clone(),
            actor,
            open_id: rec.id.clone(),
            parcel_id: rec.parcel_id.clone(),
        })
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    let id = rec.id.clone();
    let rec = state.db.read(move |c| Ok(remote_opens::get(c, &id)?)).await?;
    match outcome {
        OpenOutcome::Opened => Ok(HttpResponse::Ok().json(OpenResult {
            status: "opened".into(),
            remote_open: rec,
        })),
        OpenOutcome::Failed(why) => Err(AppError::Conflict {
            code: "open_failed",
            message: format!("the locker could not open it: {why}"),
        }),
        OpenOutcome::Offline => Err(AppError::Conflict {
            code: "locker_offline",
            message: "the locker is not connected".into(),
        }),
        OpenOutcome::NoSuchCompartment => Err(AppError::not_found(format!(
            "compartment {} not found",
            rec.compartment
        ))),
        OpenOutcome::Unknown => Err(AppError::OutcomeUnknown(
            "the locker did not confirm in time; the door may or may not have opened, and the command will not be retried"
                .into(),
        )),
    }
}

/// Opens a compartment remotely through the connected device. A reason is required. Each
/// admin key and each locker has a rate limit (429 with `Retry-After`); beyond
/// `remote_open_window_max` opens of one locker in `remote_open_window_secs`, the open answers
/// 202 `pending_approval` and waits for a second person. Every attempt is recorded. An open
/// the device does not confirm in time answers 504 `outcome_unknown` and is recorded as a
/// fault; it is never retried.
#[utoipa::path(tag = "lockers", request_body = OpenRequest, security(("admin" = [])),
    params(("id" = String, Path, description = "Locker id"),
           ("number" = i32, Path, description = "Compartment number")),
    responses(
        (status = 200, description = "The door opened", body = OpenResult),
        (status = 202, description = "Waiting for a second person's approval", body = OpenResult),
        (status = 400, description = "Malformed path or body", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 403, description = "A viewer key (`read_only_key`)", body = ErrorBody),
        (status = 404, description = "No such locker or compartment", body = ErrorBody),
        (status = 409, description = "`locker_offline` or `open_failed`", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Reason missing, longer than 200 characters or with control characters", body = ErrorBody),
        (status = 429, description = "Rate limit of this key or locker; see Retry-After", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds until the next open is allowed"))),
        (status = 503, description = "Server busy", body = ErrorBody),
        (status = 504, description = "`outcome_unknown`: the device did not confirm in time", body = ErrorBody)))]
#[post("/lockers/{id}/compartments/{number}/open")]
pub async fn open_compartment(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, i32)>,
    body: web::Json<OpenRequest>,
) -> Result<HttpResponse, AppError> {
    let (id, number) = path.into_inner();
    let lid = id.clone();
    state
        .db
        .read(move |c| lockers::get(c, &lid).map(drop).map_err(|e| not_found(e, "locker")))
        .await?;
    let raw = body.into_inner().reason;
    let mut request = Request {
        admin_key_id: admin.key_id.clone(),
        holder: admin.holder.clone(),
        locker_id: id.clone(),
        compartment: number,
        // Recorded as given (bounded), even when it is refused.
        reason: raw.trim().chars().take(200).collect(),
    };
    let now = state.clock.now();
    let refuse = |request: Request, detail: String| {
        let db = state.db.clone();
        async move {
            let rec = db
                .run(move |c| Ok(remote_opens::refused(c, &request, &detail, now)?))
                .await?;
            log(&rec);
            Ok::<_, AppError>(())
        }
    };
    let reason = match Reason::parse(&raw) {
        Ok(r) => r,
        Err(why) => {
            refuse(request, why.clone()).await?;
            return Err(AppError::invalid(why));
        }
    };
    request.reason = reason.as_str().to_string();
    if let Err((which, wait)) = state.limits.check_remote_open(&admin.key_id, &id) {
        let whose = match which {
            RemoteOpenLimit::AdminKey => "this admin key",
            RemoteOpenLimit::Locker => "this locker",
        };
        let message = format!(
            "too many remote opens by {whose}; try again in {} s",
            wait.as_secs().max(1)
        );
        refuse(request, format!("rate limited: {whose}")).await?;
        return Err(AppError::Throttled {
            message,
            retry_after: wait,
        });
    }
    let locker = locker_actor(&state, id).await?;
    let rec = locker
        .send(RequestRemoteOpen { request })
        .await
        .map_err(|e| AppError::Unavailable(e.to_string()))??;
    match Outcome::parse(&rec.outcome) {
        Some(Outcome::Opening) => perform(&state, rec, admin.actor()).await,
        Some(Outcome::PendingApproval) => {
            log(&rec);
            Ok(HttpResponse::Accepted().json(OpenResult {
                status: "pending_approval".into(),
                remote_open: rec,
            }))
        }
        _ => {
            log(&rec);
            Err(AppError::not_found(format!("compartment {number} not found")))
        }
    }
}

/// Every remote open of a locker, successful or not, oldest first. Pending approvals whose
/// time has passed show as `expired`.
#[utoipa::path(tag = "lockers", params(("id" = String, Path, description = "Locker id"), PageParams),
    security(("admin" = [])),
    responses((status = 200, body = Paged<RemoteOpenRecord>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 404, description = "No such locker", body = ErrorBody),
        (status = 422, description = "`limit` outside 1–200 or a bad `after` cursor", body = ErrorBody)))]
#[get("/lockers/{id}/remote-opens")]
pub async fn list_for_locker(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<PageParams>,
) -> Result<HttpResponse, AppError> {
    list(&state, q.into_inner(), Scope::Locker(id.into_inner())).await
}

/// Whose remote opens a list shows.
enum Scope {
    Locker(String),
    Parcel(String),
}

/// One page of remote opens, after marking pending approvals whose time has passed `expired`.
async fn list(state: &AppState, q: PageParams, scope: Scope) -> Result<HttpResponse, AppError> {
    let page = super::page(q.limit, q.after)?;
    let now = state.clock.now();
    let found = state
        .db
        .run(move |c| {
            let (locker, parcel) = match &scope {
                Scope::Locker(id) => {
                    lockers::get(c, id).map_err(|e| not_found(e, "locker"))?;
                    (Some(id.as_str()), None)
                }
                Scope::Parcel(id) => {
                    parcels::get(c, id).map_err(|e| not_found(e, "parcel"))?;
                    (None, Some(id.as_str()))
                }
            };
            remote_opens::expire_due(c, now)?;
            Ok(remote_opens::list(c, locker, parcel, &page)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(found))
}

/// One remote open of a locker.
#[utoipa::path(tag = "lockers", operation_id = "get_remote_open",
    params(("id" = String, Path, description = "Locker id"), ("open_id" = String, Path, description = "Remote open id")),
    security(("admin" = [])),
    responses((status = 200, body = RemoteOpenRecord),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 404, description = "No such locker or remote open", body = ErrorBody)))]
#[get("/lockers/{id}/remote-opens/{open_id}")]
pub async fn get_one(
    _: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (id, open_id) = path.into_inner();
    let now = state.clock.now();
    let rec = state
        .db
        .run(move |c| {
            remote_opens::expire_due(c, now)?;
            remote_opens::get_for_locker(c, &id, &open_id)
        })
        .await?;
    Ok(HttpResponse::Ok().json(rec))
}

async fn decide(
    admin: Admin,
    state: &AppState,
    locker_id: String,
    open_id: String,
    approving: bool,
) -> Result<RemoteOpenRecord, AppError> {
    let now = state.clock.now();
    let by = Decider {
        admin_key_id: admin.key_id,
        holder: admin.holder,
    };
    // Expiry is committed on its own, so a refused late approval still leaves the row `expired`.
    state.db.run(move |c| Ok(remote_opens::expire_due(c, now)?)).await?;
    let rec = state
        .db
        .transaction(move |c| remote_opens::decide(c, &locker_id, &open_id, &by, approving, now))
        .await?;
    log(&rec);
    Ok(rec)
}

/// Approves a remote open waiting for approval, and performs it. The approving key must be
/// held by a different person than the key that asked.
#[utoipa::path(tag = "lockers",
    params(("id" = String, Path, description = "Locker id"), ("open_id" = String, Path, description = "Remote open id")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "Approved, and the door opened", body = OpenResult),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 403, description = "`same_holder`: the same person asked; or a viewer key (`read_only_key`)", body = ErrorBody),
        (status = 404, description = "No such locker or remote open", body = ErrorBody),
        (status = 409, description = "`not_pending`, `approval_expired`, `locker_offline` or `open_failed`", body = ErrorBody),
        (status = 503, description = "Server busy", body = ErrorBody),
        (status = 504, description = "`outcome_unknown`: the device did not confirm in time", body = ErrorBody)))]
#[post("/lockers/{id}/remote-opens/{open_id}/approve")]
pub async fn approve(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (id, open_id) = path.into_inner();
    let actor = admin.actor();
    let rec = decide(admin, &state, id, open_id, true).await?;
    perform(&state, rec, actor).await
}

/// Rejects a remote open waiting for approval. Anyone who may write may reject, including
/// the person who asked (withdrawing never opens a door).
#[utoipa::path(tag = "lockers",
    params(("id" = String, Path, description = "Locker id"), ("open_id" = String, Path, description = "Remote open id")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "Rejected", body = OpenResult),
        (status = 400, description = "Malformed path", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 403, description = "A viewer key (`read_only_key`)", body = ErrorBody),
        (status = 404, description = "No such locker or remote open", body = ErrorBody),
        (status = 409, description = "`not_pending` or `approval_expired`", body = ErrorBody)))]
#[post("/lockers/{id}/remote-opens/{open_id}/reject")]
pub async fn reject(
    admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (id, open_id) = path.into_inner();
    let rec = decide(admin, &state, id, open_id, false).await?;
    Ok(HttpResponse::Ok().json(OpenResult {
        status: "rejected".into(),
        remote_open: rec,
    }))
}

/// Every remote open of the compartment a parcel was in while it was inside, oldest first.
#[utoipa::path(tag = "parcels", params(("id" = String, Path, description = "Parcel id"), PageParams),
    security(("admin" = [])),
    responses((status = 200, body = Paged<RemoteOpenRecord>),
        (status = 400, description = "Malformed query", body = ErrorBody),
        (status = 401, description = "No valid admin key", body = ErrorBody),
        (status = 404, description = "No such parcel", body = ErrorBody),
        (status = 422, description = "`limit` outside 1–200 or a bad `after` cursor", body = ErrorBody)))]
#[get("/parcels/{id}/remote-opens")]
pub async fn list_for_parcel(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<PageParams>,
) -> Result<HttpResponse, AppError> {
    list(&state, q.into_inner(), Scope::Parcel(id.into_inner())).await
}
