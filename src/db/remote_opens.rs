//! The remote-open audit: one row per attempt, successful or not, and the parcel changes a
//! remote open leads to.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::json;

use super::schema::{compartments, parcels, remote_opens};
use super::{new_id, parcels as parcel_rows, DbConn};
use crate::domain::parcel::ParcelState;
use crate::domain::remote_open::{check_decision, needs_approval, DecisionRefused, Outcome};
use crate::error::AppError;

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = remote_opens)]
pub struct RemoteOpenRecord {
    pub id: String,
    /// The admin key that asked.
    pub admin_key_id: String,
    /// The person holding that key when it asked.
    pub holder: String,
    pub locker_id: String,
    pub compartment: i32,
    /// The parcel in the compartment when the open was asked for, if any.
    pub parcel_id: Option<String>,
    pub reason: String,
    #[schema(value_type = Outcome)]
    pub outcome: String,
    /// Why it was refused or failed, when it was.
    pub detail: String,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub requested_at: NaiveDateTime,
    /// When a pending approval lapses.
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<NaiveDateTime>,
    /// The admin key that approved or rejected it.
    pub decided_by: Option<String>,
    pub decided_by_holder: Option<String>,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub decided_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

/// Who asks for an open, and what for.
#[derive(Debug, Clone)]
pub struct Request {
    pub admin_key_id: String,
    pub holder: String,
    pub locker_id: String,
    pub compartment: i32,
    pub reason: String,
}

/// The window rule's settings.
#[derive(Debug, Clone, Copy)]
pub struct WindowRule {
    pub max: u32,
    pub window: chrono::Duration,
    pub approval_ttl: chrono::Duration,
}

fn insert(
    conn: &mut DbConn,
    r: &Request,
    parcel_id: Option<&str>,
    outcome: Outcome,
    detail: &str,
    expires_at: Option<NaiveDateTime>,
    now: NaiveDateTime,
) -> QueryResult<RemoteOpenRecord> {
    let id = new_id();
    diesel::insert_into(remote_opens::table)
        .values((
            remote_opens::id.eq(&id),
            remote_opens::admin_key_id.eq(&r.admin_key_id),
            remote_opens::holder.eq(&r.holder),
            remote_opens::locker_id.eq(&r.locker_id),
            remote_opens::compartment.eq(r.compartment),
            remote_opens::parcel_id.eq(parcel_id),
            remote_opens::reason.eq(&r.reason),
            remote_opens::outcome.eq(outcome.as_str()),
            remote_opens::detail.eq(detail),
            remote_opens::requested_at.eq(now),
            remote_opens::expires_at.eq(expires_at),
            remote_opens::updated_at.eq(now),
        ))
        .execute(conn)?;
    get(conn, &id)
}

/// Records an attempt refused before anything was decided (no reason, rate limited).
pub fn refused(conn: &mut DbConn, r: &Request, detail: &str, now: NaiveDateTime) -> QueryResult<RemoteOpenRecord> {
    insert(conn, r, None, Outcome::Refused, detail, None, now)
}

/// The live parcel in a compartment, if any.
pub fn parcel_in(conn: &mut DbConn, locker_id: &str, number: i32) -> QueryResult<Option<String>> {
    let comp: Option<String> = compartments::table
        .filter(compartments::locker_id.eq(locker_id))
        .filter(compartments::number.eq(number))
        .select(compartments::id)
        .first(conn)
        .optional()?;
    let Some(comp) = comp else { return Ok(None) };
    let live = [ParcelState::Deposited.as_str(), ParcelState::Expired.as_str()];
    parcels::table
        .filter(parcels::compartment_id.eq(comp))
        .filter(parcels::state.eq_any(live))
        .select(parcels::id)
        .first(conn)
        .optional()
}

/// Decides and records a new request: refused when there is no such compartment, pending
/// approval when the locker already had `rule.max` opens in the window (counted in the
/// database, so a restart forgets nothing), otherwise `opening`. Runs in the locker's actor,
/// one at a time per locker, so two requests cannot both take the last free place.
pub fn request(
    conn: &mut DbConn,
    r: &Request,
    compartment_exists: bool,
    rule: WindowRule,
    now: NaiveDateTime,
) -> QueryResult<RemoteOpenRecord> {
    if !compartment_exists {
        return insert(conn, r, None, Outcome::Refused, "no such compartment", None, now);
    }
    let counted: Vec<&str> = Outcome::COUNTED.iter().map(|o| o.as_str()).collect();
    let recent: i64 = remote_opens::table
        .filter(remote_opens::locker_id.eq(&r.locker_id))
        .filter(remote_opens::requested_at.gt(now - rule.window))
        .filter(remote_opens::outcome.eq_any(counted))
        .count()
        .get_result(conn)?;
    let parcel = parcel_in(conn, &r.locker_id, r.compartment)?;
    if needs_approval(recent, rule.max) {
        let detail = format!("{recent} opens of this locker in the window; a second person must approve");
        insert(
            conn,
            r,
            parcel.as_deref(),
            Outcome::PendingApproval,
            &detail,
            Some(now + rule.approval_ttl),
            now,
        )
    } else {
        insert(conn, r, parcel.as_deref(), Outcome::Opening, "", None, now)
    }
}

/// Records what the device did with an open. An opened compartment holding a parcel gets a
/// `remote_opened` event on that parcel.
pub fn finish(
    conn: &mut DbConn,
    id: &str,
    outcome: Outcome,
    detail: &str,
    now: NaiveDateTime,
) -> QueryResult<RemoteOpenRecord> {
    diesel::update(remote_opens::table.find(id))
        .set((
            remote_opens::outcome.eq(outcome.as_str()),
            remote_opens::detail.eq(detail),
            remote_opens::updated_at.eq(now),
        ))
        .execute(conn)?;
    let rec = get(conn, id)?;
    if outcome == Outcome::Opened {
        if let Some(pid) = &rec.parcel_id {
            parcel_rows::record_event(
                conn,
                pid,
                "remote_opened",
                None,
                &format!("admin:{}", rec.admin_key_id),
                json!({"compartment": rec.compartment, "remote_open_id": rec.id, "reason": rec.reason,
                       "holder": rec.holder, "approved_by": rec.decided_by_holder}),
            )?;
        }
    }
    Ok(rec)
}

/// Marks pending approvals whose time has passed as expired.
pub fn expire_due(conn: &mut DbConn, now: NaiveDateTime) -> QueryResult<usize> {
    diesel::update(
        remote_opens::table
            .filter(remote_opens::outcome.eq(Outcome::PendingApproval.as_str()))
            .filter(remote_opens::expires_at.le(now)),
    )
    .set((
        remote_opens::outcome.eq(Outcome::Expired.as_str()),
        remote_opens::updated_at.eq(now),
    ))
    .execute(conn)
}

/// Who decides on a pending open.
#[derive(Debug, Clone)]
pub struct Decider {
    pub admin_key_id: String,
    pub holder: String,
}

/// Approves (`approving`) or rejects a pending open of `locker_id`. The conditional update
/// makes a decision happen once even when two people decide at the same moment.
pub fn decide(
    conn: &mut DbConn,
    locker_id: &str,
    id: &str,
    by: &Decider,
    approving: bool,
    now: NaiveDateTime,
) -> Result<RemoteOpenRecord, AppError> {
    expire_due(conn, now)?;
    let rec = get_for_locker(conn, locker_id, id)?;
    let outcome = Outcome::parse(&rec.outcome).unwrap_or(Outcome::Refused);
    check_decision(outcome, rec.expires_at, now, &rec.holder, &by.holder, approving).map_err(refusal)?;
    let next = if approving {
        Outcome::Approved
    } else {
        Outcome::Rejected
    };
    let changed = diesel::update(
        remote_opens::table
            .find(id)
            .filter(remote_opens::outcome.eq(Outcome::PendingApproval.as_str())),
    )
    .set((
        remote_opens::outcome.eq(next.as_str()),
        remote_opens::decided_by.eq(&by.admin_key_id),
        remote_opens::decided_by_holder.eq(&by.holder),
        remote_opens::decided_at.eq(now),
        remote_opens::updated_at.eq(now),
    ))
    .execute(conn)?;
    if changed == 0 {
        return Err(refusal(DecisionRefused::NotPending));
    }
    Ok(get(conn, id)?)
}

fn refusal(r: DecisionRefused) -> AppError {
    match r {
        DecisionRefused::NotPending => AppError::Conflict {
            code: "not_pending",
            message: "this remote open is not waiting for approval".into(),
        },
        DecisionRefused::Expired => AppError::Conflict {
            code: "approval_expired",
            message: "this remote open waited too long for approval and has expired; ask again".into(),
        },
        DecisionRefused::SameHolder => AppError::Denied {
            code: "same_holder",
            message: "a remote open must be approved by a different person than the one who asked".into(),
        },
    }
}

pub fn get(conn: &mut DbConn, id: &str) -> QueryResult<RemoteOpenRecord> {
    remote_opens::table
        .find(id)
        .select(RemoteOpenRecord::as_select())
        .get_result(conn)
}

/// One open of one locker; 404 when it belongs to another locker.
pub fn get_for_locker(conn: &mut DbConn, locker_id: &str, id: &str) -> Result<RemoteOpenRecord, AppError> {
    remote_opens::table
        .find(id)
        .filter(remote_opens::locker_id.eq(locker_id))
        .select(RemoteOpenRecord::as_select())
        .get_result(conn)
        .optional()?
        .ok_or_else(|| AppError::not_found("remote open not found"))
}

/// Opens of one locker or of one parcel, oldest first.
pub fn list(
    conn: &mut DbConn,
    locker_id: Option<&str>,
    parcel_id: Option<&str>,
    page: &super::page::Page,
) -> QueryResult<super::page::Paged<RemoteOpenRecord>> {
    let mut q = remote_opens::table
        .order(remote_opens::id.asc())
        .limit(page.limit + 1)
        .select(RemoteOpenRecord::as_select())
        .into_boxed();
    if let Some(l) = locker_id {
        q = q.filter(remote_opens::locker_id.eq(l.to_string()));
    }
    if let Some(p) = parcel_id {
        q = q.filter(remote_opens::parcel_id.eq(p.to_string()));
    }
    if let Some(after) = &page.after {
        q = q.filter(remote_opens::id.gt(after.clone()));
    }
    Ok(super::page::Paged::from_rows(q.load(conn)?, page, |r| &r.id))
}
