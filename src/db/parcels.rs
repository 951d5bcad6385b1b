//! Parcels and their append-only event log.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::Serialize;

use super::direct;
use super::page::{Page, Paged};
use super::schema::{parcel_events, parcels};
use super::{new_id, now, DbConn};
use crate::domain::lifecycle::ParcelAt;
use crate::domain::parcel::{ParcelState, Transition};
use crate::domain::refusal::Refusal;
use crate::error::OpError;

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = parcels)]
pub struct Parcel {
    pub id: String,
    pub carrier_id: String,
    pub tracking_number: String,
    pub site_id: String,
    pub recipient_id: Option<String>,
    pub locker_id: Option<String>,
    pub compartment_id: Option<String>,
    pub size: String,
    #[schema(value_type = ParcelState)]
    pub state: String,
    #[serde(skip)]
    pub pickup_code_hash: Option<String>,
    #[serde(skip)]
    pub qr_token_hash: Option<String>,
    #[serde(skip)]
    pub collection_code_hash: Option<String>,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub reserved_until: Option<NaiveDateTime>,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deposited_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub pickup_deadline: Option<NaiveDateTime>,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub picked_up_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expired_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub returned_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "super::ts::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub cancelled_at: Option<NaiveDateTime>,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: NaiveDateTime,
}

impl Parcel {
    pub fn state(&self) -> ParcelState {
        ParcelState::parse(&self.state).unwrap_or(ParcelState::Cancelled)
    }

    /// This parcel as the lifecycle rules see it, at `locker_id` in `compartment`.
    pub fn at<'a>(&'a self, locker_id: Option<&'a str>, compartment: Option<i32>) -> ParcelAt<'a> {
        ParcelAt {
            parcel_id: &self.id,
            tracking_number: &self.tracking_number,
            carrier_id: &self.carrier_id,
            recipient_id: self.recipient_id.as_deref(),
            locker_id,
            compartment,
        }
    }
}

/// The columns a change of state sets besides the state itself. `None` leaves a column
/// alone; `Some(None)` clears it.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = parcels)]
pub struct ParcelChange {
    pub locker_id: Option<String>,
    pub compartment_id: Option<Option<String>>,
    pub size: Option<String>,
    pub pickup_code_hash: Option<Option<String>>,
    pub qr_token_hash: Option<Option<String>>,
    pub collection_code_hash: Option<Option<String>>,
    pub reserved_until: Option<Option<NaiveDateTime>>,
    pub deposited_at: Option<NaiveDateTime>,
    pub pickup_deadline: Option<NaiveDateTime>,
    pub picked_up_at: Option<NaiveDateTime>,
    pub expired_at: Option<NaiveDateTime>,
    pub returned_at: Option<NaiveDateTime>,
    pub cancelled_at: Option<NaiveDateTime>,
}

/// What the event log says about a change: its kind, who made it, and detail.
#[derive(Debug, Clone)]
pub struct EventNote<'a> {
    pub kind: &'a str,
    pub actor: &'a str,
    pub detail: serde_json::Value,
}

/// The only writer of an existing parcel's state. The transition comes from the domain's
/// state machine (`ParcelState::transition`); the update applies only while the row is still
/// in the transition's `from` state, so a change decided from a stale read is refused
/// (`state_changed`) instead of overwriting whatever happened meanwhile. Records the event.
pub fn apply(
    conn: &mut DbConn,
    parcel_id: &str,
    transition: Transition,
    change: ParcelChange,
    note: EventNote<'_>,
) -> Result<(), OpError> {
    let Some(from) = transition.from() else {
        return Err(OpError::Failed(crate::error::AppError::internal(
            "a creation is inserted, not applied to an existing parcel",
        )));
    };
    let n = direct::execute(
        conn,
        direct::update(
            parcels::table,
            parcels::id.eq(parcel_id).and(parcels::state.eq(from.as_str())),
            (
                parcels::state.eq(transition.to().as_str()),
                parcels::updated_at.eq(now()),
                change,
            ),
        ),
    )?;
    if n != 1 {
        return Err(OpError::Refused(Refusal::StateChanged { expected: from }));
    }
    record_event(
        conn,
        parcel_id,
        note.kind,
        Some(transition.as_event()),
        note.actor,
        note.detail,
    )?;
    Ok(())
}

/// [`change_state`] from whatever state the parcel is in, read in this transaction. For moves
/// that may start from several states (a parcel taken out may be `deposited` or `expired`):
/// if another transaction changes the state between the read and the write (outside the
/// locker actor only the timeout actor does: a dwell expiry), the state is read again and the
/// move is asked of the machine once more, instead of failing a change it allows.
pub fn change_from_current(
    conn: &mut DbConn,
    parcel_id: &str,
    to: ParcelState,
    change: ParcelChange,
    note: EventNote<'_>,
) -> Result<ParcelState, OpError> {
    let from = get(conn, parcel_id)?.state();
    match change_state(conn, parcel_id, from, to, change.clone(), note.clone()) {
        Err(OpError::Refused(Refusal::StateChanged { .. })) => {
            let now_in = get(conn, parcel_id)?.state();
            change_state(conn, parcel_id, now_in, to, change, note).map(|()| now_in)
        }
        other => other.map(|()| from),
    }
}

/// Changes a parcel's columns without changing its state (a deposit into its own pre-advice
/// reservation, a cancel back to it), only while it is still in `state`. Records the event.
pub fn update_in_state(
    conn: &mut DbConn,
    parcel_id: &str,
    state: ParcelState,
    change: ParcelChange,
    note: EventNote<'_>,
) -> Result<(), OpError> {
    let n = direct::execute(
        conn,
        direct::update(
            parcels::table,
            parcels::id.eq(parcel_id).and(parcels::state.eq(state.as_str())),
            (parcels::updated_at.eq(now()), change),
        ),
    )?;
    if n != 1 {
        return Err(OpError::Refused(Refusal::StateChanged { expected: state }));
    }
    record_event(
        conn,
        parcel_id,
        note.kind,
        Some((state, state)),
        note.actor,
        note.detail,
    )?;
    Ok(())
}

/// Asks the state machine for `from → to` and applies it: [`apply`] for the common case of
/// a state read in this same transaction.
pub fn change_state(
    conn: &mut DbConn,
    parcel_id: &str,
    from: ParcelState,
    to: ParcelState,
    change: ParcelChange,
    note: EventNote<'_>,
) -> Result<(), OpError> {
    apply(conn, parcel_id, from.transition(to)?, change, note)
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, utoipa::ToSchema)]
#[diesel(table_name = parcel_events)]
pub struct ParcelEvent {
    pub id: String,
    pub parcel_id: String,
    pub kind: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    /// Who caused it: `locker:<id>`, `carrier:<id>`, `admin:<key id>` or `system`.
    pub actor: String,
    /// JSON object with event details.
    pub detail: String,
    #[serde(serialize_with = "super::ts::serialize")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Default, Clone)]
pub struct ParcelFilter {
    pub state: Option<ParcelState>,
    pub carrier_id: Option<String>,
    pub recipient_id: Option<String>,
    pub locker_id: Option<String>,
    pub site_id: Option<String>,
    pub tracking_number: Option<String>,
}

pub fn search(conn: &mut DbConn, f: &ParcelFilter, page: &Page) -> QueryResult<Paged<Parcel>> {
    let mut q = parcels::table
        .select(Parcel::as_select())
        .order(parcels::id.asc())
        .limit(page.limit + 1)
        .into_boxed();
    if let Some(after) = &page.after {
        q = q.filter(parcels::id.gt(after.clone()));
    }
    if let Some(s) = f.state {
        q = q.filter(parcels::state.eq(s.as_str()));
    }
    if let Some(v) = &f.carrier_id {
        q = q.filter(parcels::carrier_id.eq(v.clone()));
    }
    if let Some(v) = &f.recipient_id {
        q = q.filter(parcels::recipient_id.eq(v.clone()));
    }
    if let Some(v) = &f.locker_id {
        q = q.filter(parcels::locker_id.eq(v.clone()));
    }
    if let Some(v) = &f.site_id {
        q = q.filter(parcels::site_id.eq(v.clone()));
    }
    if let Some(v) = &f.tracking_number {
        q = q.filter(parcels::tracking_number.eq(v.clone()));
    }
    Ok(Paged::from_rows(q.load(conn)?, page, |p| &p.id))
}

/// `parcels.state IN ('expected', 'reserved', 'deposited', 'expired')` as literal SQL: the
/// condition of the partial unique index `parcels_live_tracking`. A planner uses a partial
/// index only when the query's own condition implies the index's, which a bound state never
/// does; written out, it does, on SQLite and PostgreSQL. A type of its own (not `dsl::sql`)
/// so that the statements using it are prepared once and cached.
#[derive(Debug, Clone, Copy, diesel::query_builder::QueryId)]
pub struct LiveState;

impl diesel::expression::Expression for LiveState {
    type SqlType = diesel::sql_types::Bool;
}

impl diesel::expression::AppearsOnTable<parcels::table> for LiveState {}
impl diesel::expression::SelectableExpression<parcels::table> for LiveState {}
impl diesel::expression::ValidGrouping<()> for LiveState {
    type IsAggregate = diesel::expression::is_aggregate::Never;
}

impl<DB: diesel::backend::Backend> diesel::query_builder::QueryFragment<DB> for LiveState {
    fn walk_ast<'b>(&'b self, mut out: diesel::query_builder::AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("parcels.state IN ('expected', 'reserved', 'deposited', 'expired')");
        Ok(())
    }
}

/// This carrier's live parcel (expected, reserved, deposited or expired) with this tracking
/// number: at most one, by the live-tracking index, which this lookup uses.
pub fn live_by_tracking(conn: &mut DbConn, carrier_id: &str, tracking_number: &str) -> QueryResult<Option<Parcel>> {
    parcels::table
        .filter(parcels::carrier_id.eq(carrier_id))
        .filter(parcels::tracking_number.eq(tracking_number))
        .filter(LiveState)
        .select(Parcel::as_select())
        .get_result(conn)
        .optional()
}

/// A parcel with what completing its deposit needs of its carrier and its recipient, in one
/// read (three lookups on the write path before).
pub fn with_carrier_and_absence(
    conn: &mut DbConn,
    id: &str,
) -> QueryResult<(Parcel, super::carriers::CarrierBrief, Option<NaiveDateTime>)> {
    use super::schema::{carriers, recipients};
    // A recipient who is not away and a parcel without a recipient both read as `None`.
    let (parcel, carrier, away): (Parcel, super::carriers::CarrierBrief, Option<NaiveDateTime>) =
        crate::on_backend!(conn, |c| parcels::table
            .inner_join(carriers::table)
            .left_join(recipients::table)
            .filter(parcels::id.eq(id))
            .select((
                Parcel::as_select(),
                (carriers::id, carriers::name, carriers::active, carriers::dwell_hours),
                recipients::vacation_until.nullable(),
            ))
            .get_result(c))?;
    Ok((parcel, carrier, away))
}

/// A parcel by id.
///
/// Lookups by a unique key use `get_result`, not `first`: diesel binds `first`'s `LIMIT 1` as a
/// parameter, and SQLite, whose planner reads a bound `LIMIT`, then marks the statement to be
/// compiled again whenever that parameter is bound, that is on every call. Profiled, those
/// recompilations were a sixth of the SQLite writer's time.
pub fn get(conn: &mut DbConn, id: &str) -> QueryResult<Parcel> {
    crate::on_backend!(conn, |c| parcels::table
        .find(id)
        .select(Parcel::as_select())
        .get_result(c))
}

pub fn events(conn: &mut DbConn, parcel_id: &str) -> QueryResult<Vec<ParcelEvent>> {
    parcel_events::table
        .filter(parcel_events::parcel_id.eq(parcel_id))
        .order(parcel_events::id.asc())
        .select(ParcelEvent::as_select())
        .load(conn)
}

/// Events of many parcels at once, for list views.
pub fn events_of_many(conn: &mut DbConn, ids: &[String]) -> QueryResult<Vec<ParcelEvent>> {
    parcel_events::table
        .filter(parcel_events::parcel_id.eq_any(ids))
        .order(parcel_events::id.asc())
        .select(ParcelEvent::as_select())
        .load(conn)
}

/// Appends to the audit log. Call inside the transaction that made the change.
pub fn record_event(
    conn: &mut DbConn,
    parcel_id: &str,
    kind: &str,
    transition: Option<(ParcelState, ParcelState)>,
    actor: &str,
    detail: serde_json::Value,
) -> QueryResult<()> {
    let insert = diesel::insert_into(parcel_events::table).values((
        parcel_events::id.eq(new_id()),
        parcel_events::parcel_id.eq(parcel_id),
        parcel_events::kind.eq(kind),
        parcel_events::from_state.eq(transition.map(|t| t.0.as_str())),
        parcel_events::to_state.eq(transition.map(|t| t.1.as_str())),
        parcel_events::actor.eq(actor),
        parcel_events::detail.eq(detail.to_string()),
        parcel_events::created_at.eq(now()),
    ));
    direct::execute(conn, insert).map(drop)
}
