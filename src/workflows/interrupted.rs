//! Door sessions a server restart interrupted: found in the database when a locker's state is
//! first loaded, and settled at the device's boot by the rule in `domain::recovery`.

use serde_json::json;

use crate::credentials::ServerKey;
use crate::db::interrupted::{Session, OUTCOME_UNKNOWN};
use crate::db::lockers::LockerCtx;
use crate::db::{parcels as parcel_rows, DbConn};
use crate::domain::deposit::{DepositPolicy, Prior};
use crate::domain::recovery::{Decision, Interrupted};
use crate::error::OpError;
use crate::workflows::deposits;
use crate::workflows::pickups::TakenBy;

/// Carries out a boot-time decision in the caller's transaction. `Hold` and `Unknown` change
/// nothing here: the session goes on.
pub fn settle(
    conn: &mut DbConn,
    ctx: &LockerCtx,
    key: &ServerKey,
    policy: &DepositPolicy,
    s: &Session,
    decision: Decision,
) -> Result<(), OpError> {
    let (pid, number) = (s.parcel_id.as_str(), s.number);
    let by = match s.kind {
        Interrupted::Collection => TakenBy::Carrier,
        _ => TakenBy::Recipient,
    };
    match decision {
        Decision::CompleteDeposit => {
            deposits::complete_because(conn, ctx, key, policy, pid, number, Some("at_reconnection"))
        }
        Decision::CancelDeposit => {
            let prior = s.prior.clone().unwrap_or(Prior::WalkUp);
            deposits::cancel(
                conn,
                ctx,
                pid,
                number,
                &prior,
                "the door was found closed on an empty compartment after a server restart",
            )
            .map(drop)
        }
        Decision::TakenOut => crate::workflows::pickups::taken_out(conn, ctx, pid, number, by),
        Decision::LeftInside => {
            let kind = match by {
                TakenBy::Carrier => "collection_abandoned",
                TakenBy::Recipient => "pickup_abandoned",
            };
            crate::workflows::pickups::record(
                conn,
                ctx,
                pid,
                kind,
                json!({"compartment": number, "reason": "at_reconnection"}),
            )
        }
        Decision::Hold | Decision::Unknown => Ok(()),
    }
}

/// The locker did not boot in time to settle an interrupted session: whether the parcel is
/// inside is unknown. The compartment goes out of service with a fault for a person to check,
/// and the parcel's log says why; the session itself stays open until the device boots.
pub fn outcome_unknown(conn: &mut DbConn, ctx: &LockerCtx, s: &Session) -> Result<(), OpError> {
    let what = match s.kind {
        Interrupted::Deposit => "deposit",
        Interrupted::Pickup => "pickup",
        Interrupted::Collection => "collection",
    };
    crate::workflows::hardware::fault(
        conn,
        ctx,
        Some(s.number),
        OUTCOME_UNKNOWN,
        &format!(
            "a {what} was in progress when the server restarted, and the locker has not reported since; check whether parcel {} is inside",
            s.parcel_id
        ),
    )?;
    parcel_rows::record_event(
        conn,
        &s.parcel_id,
        OUTCOME_UNKNOWN,
        None,
        &ctx.actor(),
        json!({"compartment": s.number, "session": what}),
    )?;
    Ok(())
}
