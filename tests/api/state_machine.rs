//! The parcel state machine is enforced where states are written: on a real database, a change
//! the machine forbids, or one decided from a state the parcel has since left, is refused and
//! writes nothing (neither the state nor an event).

use lockerhub::db::parcels::{self, EventNote, ParcelChange};
use lockerhub::domain::parcel::ParcelState;
use lockerhub::domain::refusal::Refusal;
use lockerhub::domain::Size;
use lockerhub::error::OpError;
use lockerhub::protocol::messages::Identify;
use lockerhub::simulator::SimLocker;
use serde_json::json;

use crate::db_test;
use crate::helpers::TestApp;

/// A deposited parcel's id, and the simulated locker that holds it.
async fn deposited(app: &TestApp) -> (String, SimLocker) {
    let site = app.site().await;
    let (locker, credential) = app.locker(&site, json!([{"size": "S", "count": 2}])).await;
    let carrier = app.carrier("ups").await;
    app.recipient(&site, "Ann Lee", "+1 555 010 2030").await;
    let sim = SimLocker::connect(&app.ws_base(), &locker, &credential, &[(1, Size::S), (2, Size::S)])
        .await
        .expect("connects");
    sim.boot().await.unwrap();
    let carrier_id = carrier["carrier"]["id"].as_str().unwrap().to_string();
    let open = sim
        .deposit(&carrier_id, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    (open.deposit_id, sim)
}

async fn try_change(app: &TestApp, id: &str, from: ParcelState, to: ParcelState) -> Result<(), String> {
    let id = id.to_string();
    app.db
        .run(move |c| {
            Ok(parcels::change_state(
                c,
                &id,
                from,
                to,
                ParcelChange::default(),
                EventNote {
                    kind: "test_change",
                    actor: "test",
                    detail: json!({}),
                },
            ))
        })
        .await
        .unwrap()
        .map_err(|e| match e {
            OpError::Refused(r) => r.code().to_string(),
            OpError::Failed(e) => panic!("a server failure, not a refusal: {e}"),
        })
}

async fn state_and_events(app: &TestApp, id: &str) -> (String, usize) {
    let (s, p) = app.get(&format!("/api/v1/parcels/{id}")).await;
    assert_eq!(s, awc::http::StatusCode::OK, "{p}");
    let state = p["state"].as_str().or(p["parcel"]["state"].as_str()).expect("a state");
    (state.to_string(), p["events"].as_array().expect("events").len())
}

db_test!(forbidden_and_stale_changes_write_nothing);
async fn forbidden_and_stale_changes_write_nothing(app: TestApp) {
    let (id, _sim) = deposited(&app).await;
    let before = state_and_events(&app, &id).await;
    assert_eq!(before.0, "deposited");
    assert!(before.1 >= 2, "deposit_started and deposited are logged: {before:?}");

    // Forbidden by the machine: a deposited parcel cannot be cancelled.
    let r = try_change(&app, &id, ParcelState::Deposited, ParcelState::Cancelled).await;
    assert_eq!(r, Err("invalid_transition".into()));
    // Allowed by the machine, but decided from a state the parcel has left.
    let r = try_change(&app, &id, ParcelState::Reserved, ParcelState::Deposited).await;
    assert_eq!(r, Err("state_changed".into()));
    assert_eq!(state_and_events(&app, &id).await, before, "nothing was written");

    // The same gate lets the right change through, and logs it.
    try_change(&app, &id, ParcelState::Deposited, ParcelState::Expired)
        .await
        .expect("deposited → expired is an arrow of the machine");
    let after = state_and_events(&app, &id).await;
    assert_eq!((after.0.as_str(), after.1), ("expired", before.1 + 1));
}

#[test]
fn refusals_map_to_stable_codes_on_both_wires() {
    let r = Refusal::InvalidTransition {
        from: ParcelState::PickedUp,
        to: ParcelState::Deposited,
    };
    let http = lockerhub::error::AppError::from(r.clone());
    assert!(
        matches!(
            http,
            lockerhub::error::AppError::ConflictWith {
                code: "invalid_transition",
                ..
            }
        ),
        "{http:?}"
    );
    let frame = lockerhub::protocol::DeviceError::from(r).to_frame_error();
    assert_eq!(frame.code, lockerhub::protocol::ErrorCode::InvalidState);
    assert_eq!(frame.details["refusal"], "invalid_transition");
    assert_eq!(frame.details["from"], "picked_up");
    assert_eq!(frame.details["to"], "deposited");
}

db_test!(a_refused_operation_in_a_savepoint_leaves_the_rest_of_the_transaction);
/// One operation of several in a transaction (a session decided at boot; later one of a
/// batch) is refused alone: what it wrote before the refusal is undone, the transaction goes
/// on and commits the others.
async fn a_refused_operation_in_a_savepoint_leaves_the_rest_of_the_transaction(app: TestApp) {
    let (id, _sim) = deposited(&app).await;
    let (_, before) = app.get(&format!("/api/v1/parcels/{id}")).await;
    let events_before = before["events"].as_array().unwrap().len();
    let pid = id.clone();
    let refused = app
        .db
        .run(move |c| {
            lockerhub::db::write_transaction(c, |c| {
                let note = |kind| EventNote {
                    kind,
                    actor: "test",
                    detail: json!({}),
                };
                let refused = lockerhub::db::savepoint(c, |c| {
                    // A write, then the refusal: both undone together.
                    parcels::update_in_state(
                        c,
                        &pid,
                        ParcelState::Deposited,
                        ParcelChange {
                            size: Some("XL".into()),
                            ..ParcelChange::default()
                        },
                        note("resized"),
                    )?;
                    parcels::change_state(
                        c,
                        &pid,
                        ParcelState::Deposited,
                        ParcelState::Cancelled,
                        ParcelChange::default(),
                        note("cancelled"),
                    )
                });
                parcels::change_state(
                    c,
                    &pid,
                    ParcelState::Deposited,
                    ParcelState::Expired,
                    ParcelChange::default(),
                    note("expired"),
                )?;
                Ok::<_, OpError>(refused.map_err(|e| match e {
                    OpError::Refused(r) => r.code().to_string(),
                    OpError::Failed(e) => e.to_string(),
                }))
            })
            .map_err(lockerhub::error::AppError::from)
        })
        .await
        .unwrap();
    assert_eq!(refused, Err("invalid_transition".to_string()));
    let (_, after) = app.get(&format!("/api/v1/parcels/{id}")).await;
    assert_eq!(after["state"], "expired", "the rest of the transaction committed");
    assert_eq!(
        after["size"], before["size"],
        "the refused operation's write was undone"
    );
    let kinds: Vec<_> = after["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds.len(), events_before + 1, "only the expiry was logged: {kinds:?}");
    assert_eq!(kinds.last().unwrap(), "expired");
}
