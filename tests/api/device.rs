//! The device protocol end to end: a simulated locker over a real WebSocket.

use std::collections::HashSet;
use std::time::Duration;

use awc::http::StatusCode;
use lockerhub::domain::Size;
use lockerhub::protocol::messages::{DoorChange, Identify, Pickup};
use lockerhub::protocol::ErrorCode;
use lockerhub::simulator::{Behaviour, SimLocker};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::db_test;
use crate::helpers::{assert_error, eventually, TestApp};

/// A site with one locker (layout given as size runs), one carrier and one resident.
pub(crate) struct World {
    pub site: String,
    pub locker: String,
    pub credential: String,
    pub carrier: String,
    pub recipient: String,
    pub layout: Vec<(i32, Size)>,
}

pub(crate) async fn world(app: &TestApp, runs: &[(Size, i32)]) -> World {
    let site = app.site().await;
    let layout_json: Vec<Value> = runs
        .iter()
        .map(|(s, n)| json!({"size": s.as_str(), "count": n}))
        .collect();
    let (locker, credential) = app.locker(&site, json!(layout_json)).await;
    let mut layout = Vec::new();
    for (size, count) in runs {
        for _ in 0..*count {
            layout.push((layout.len() as i32 + 1, *size));
        }
    }
    let carrier = app.carrier("ups").await["carrier"]["id"].as_str().unwrap().to_string();
    let recipient = app.recipient(&site, "Ann Lee", "+1 555 010 2030").await;
    World {
        site,
        locker,
        credential,
        carrier,
        recipient,
        layout,
    }
}

async fn device(app: &TestApp, w: &World) -> SimLocker {
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .expect("connects");
    let boot = sim.boot().await.expect("boots");
    assert_eq!(boot.status, "Accepted");
    sim
}

/// Waits (bounded) until the locker shows as disconnected: the session's end is recorded
/// after the socket closes, asynchronously.
pub(crate) async fn disconnected(app: &TestApp, locker: &str, what: &str) {
    eventually(Duration::from_secs(5), what, || async {
        let (_, l) = app.get(&format!("/api/v1/lockers/{locker}")).await;
        (l["connected"] == false).then_some(())
    })
    .await;
}

pub(crate) async fn parcel(app: &TestApp, id: &str) -> Value {
    let (s, v) = app.get(&format!("/api/v1/parcels/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

db_test!(
    deposit_by_phone_then_pickup_by_code,
    deposit_by_directory_then_pickup_by_qr,
    deposit_by_tracking_number,
    wrong_codes_lock_out,
    doesnt_fit_upsizes,
    cancel_and_empty_close_release_the_compartment,
    dedicated_sections_and_runtime_repartition,
    reconnect_with_changed_snapshot_reports_faults,
    concurrent_deposits_never_share_a_compartment,
    full_locker_says_no_compartment,
    malformed_frames_get_error_frames,
    retried_calls_are_deduplicated,
    the_memory_window_holds_the_recent_answers,
    newer_session_replaces_older,
    device_auth_is_checked,
    faults_take_compartments_out_of_service,
    accessible_compartments_go_to_residents_who_need_them,
);

// The call timeout is the app clock's: the test moves the clock rather than waiting for it.
db_test!(remote_open_and_unknown_outcome with |s| s.device_call_timeout_secs = 3600);

async fn deposit_by_phone_then_pickup_by_code(app: TestApp) {
    let w = world(&app, &[(Size::S, 2), (Size::M, 2)]).await;
    let sim = device(&app, &w).await;
    let (s, l) = app.get(&format!("/api/v1/lockers/{}", w.locker)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(l["connected"], true);
    assert_eq!(l["firmware_version"], "sim-1.0");

    let open = sim
        .start_deposit(
            &w.carrier,
            Identify::Phone("555-010-2030".into()),
            Size::M,
            Some("1Z999AA10123456784"),
        )
        .await
        .unwrap();
    assert_eq!(open.compartment, 3, "smallest free compartment that fits M");
    let p = parcel(&app, &open.deposit_id).await;
    assert_eq!(p["state"], "reserved", "not deposited until the door closes on it");
    assert_eq!(app.statuses(&w.locker).await[&3], "reserved");

    assert_eq!(sim.put_parcel(open.compartment).await.unwrap(), "deposited");
    let p = parcel(&app, &open.deposit_id).await;
    assert_eq!(p["state"], "deposited");
    assert_eq!(p["recipient_id"], w.recipient.as_str());
    assert_eq!(p["tracking_number"], "1Z999AA10123456784");
    assert!(p["pickup_deadline"].as_str().is_some());
    let kinds: Vec<&str> = p["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["deposit_started", "deposited"]);
    assert_eq!(app.statuses(&w.locker).await[&3], "occupied");
    let hooks = app.webhooks_for(&open.deposit_id).await;
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].0, "parcel.delivered_to_locker");
    assert_eq!(hooks[0].1["data"]["compartment"], 3);

    let (code, _) = app.pickup_secrets(&open.deposit_id).await;
    assert_eq!(code.len(), 8);
    assert!(!p.to_string().contains(&code), "the code is never shown by the API");
    let picked = sim.pickup(Pickup::Code(code.clone())).await.unwrap();
    assert_eq!(picked.compartment, 3);
    let p = parcel(&app, &open.deposit_id).await;
    assert_eq!(p["state"], "picked_up");
    assert_eq!(app.statuses(&w.locker).await[&3], "free");
    let hooks = app.webhooks_for(&open.deposit_id).await;
    assert_eq!(hooks.last().unwrap().0, "parcel.picked_up");
    assert!(hooks.last().unwrap().1["data"]["picked_up_at"].is_string());
    // The code is spent.
    let err = sim.call("Pickup", json!({"code": code})).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidCode));
}

async fn deposit_by_directory_then_pickup_by_qr(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    app.recipient(&w.site, "Bob Ray", "+1 555 010 9999").await;
    let sim = device(&app, &w).await;
    let found = sim.call("SearchDirectory", json!({"query": "lee"})).await.unwrap();
    let list = found["recipients"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["unit"], "4B");
    assert!(
        list[0].get("phone").is_none(),
        "the kiosk directory shows no contact details"
    );
    let rid = list[0]["id"].as_str().unwrap().to_string();
    let err = sim.call("SearchDirectory", json!({"query": "x"})).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProtocolError));

    let carriers = sim.call("ListCarriers", json!({})).await.unwrap();
    assert_eq!(carriers["carriers"][0]["id"], w.carrier.as_str());
    let open = sim
        .deposit(&w.carrier, Identify::RecipientId(rid), Size::S, None)
        .await
        .unwrap();
    let p = parcel(&app, &open.deposit_id).await;
    assert_eq!(p["recipient_id"], w.recipient.as_str());
    assert!(
        p["tracking_number"].as_str().unwrap().starts_with("LH-"),
        "generated when none was scanned"
    );

    let (_, qr) = app.pickup_secrets(&open.deposit_id).await;
    assert!(qr.len() > 40, "the QR holds a long random token");
    let picked = sim.pickup(Pickup::QrToken(qr)).await.unwrap();
    assert_eq!(picked.parcel_id, open.deposit_id);
    assert_eq!(parcel(&app, &open.deposit_id).await["state"], "picked_up");
}

/// Seeds a pre-advised parcel the way a carrier's out-for-delivery callback would.
async fn pre_advise(app: &TestApp, w: &World, tracking: &str) -> String {
    use diesel::prelude::*;
    use lockerhub::db::schema::parcels as p;
    let (id, carrier, site, recipient, tracking) = (
        lockerhub::db::new_id(),
        w.carrier.clone(),
        w.site.clone(),
        w.recipient.clone(),
        tracking.to_string(),
    );
    let pid = id.clone();
    app.db
        .run(move |c| {
            let t = lockerhub::db::now();
            diesel::insert_into(p::table)
                .values((
                    p::id.eq(&pid),
                    p::carrier_id.eq(carrier),
                    p::tracking_number.eq(tracking),
                    p::site_id.eq(site),
                    p::recipient_id.eq(recipient),
                    p::size.eq("S"),
                    p::state.eq("expected"),
                    p::created_at.eq(t),
                    p::updated_at.eq(t),
                ))
                .execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
    id
}

async fn deposit_by_tracking_number(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let id = pre_advise(&app, &w, "1Z999AA10000000001").await;
    let sim = device(&app, &w).await;
    let err = sim
        .start_deposit(
            &w.carrier,
            Identify::TrackingNumber("1Z999AA19999999999".into()),
            Size::S,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    let dhl = app.carrier("dhl").await["carrier"]["id"].as_str().unwrap().to_string();
    let err = sim
        .start_deposit(
            &dhl,
            Identify::TrackingNumber("1Z999AA10000000001".into()),
            Size::S,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::NotFound),
        "another carrier cannot deposit this carrier's parcel"
    );

    let open = sim
        .deposit(
            &w.carrier,
            Identify::TrackingNumber("1z999aa10000000001".into()),
            Size::S,
            None,
        )
        .await
        .unwrap();
    assert_eq!(open.deposit_id, id, "the pre-advised parcel is the one deposited");
    let p = parcel(&app, &id).await;
    assert_eq!(p["state"], "deposited");
    assert_eq!(p["locker_id"], w.locker.as_str());
    let (s, found) = app
        .get(&format!("/api/v1/parcels?state=deposited&carrier_id={}", w.carrier))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["events"].as_array().unwrap().len(), 2);
}

async fn wrong_codes_lock_out(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = device(&app, &w).await;
    let open = sim
        .deposit(&w.carrier, Identify::Phone("+15550102030".into()), Size::S, None)
        .await
        .unwrap();
    let (code, _) = app.pickup_secrets(&open.deposit_id).await;
    let wrong = if code == "00000000" { "11111111" } else { "00000000" };
    let attempts = app.settings.pickup_attempts;
    for _ in 0..attempts {
        let e = sim.call("Pickup", json!({"code": wrong})).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidCode));
    }
    let e = sim.call("Pickup", json!({"code": wrong})).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LockedOut));
    // Even the right code waits out the lockout.
    match sim.call("Pickup", json!({"code": code})).await.unwrap_err() {
        lockerhub::simulator::SimError::Refused(f) => {
            assert_eq!(f.code, ErrorCode::LockedOut);
            assert!(f.details["retry_after_secs"].as_u64().unwrap() >= 1);
        }
        other => panic!("{other:?}"),
    }
    // Malformed codes and QR tokens count as wrong guesses too, and nothing changed.
    assert_eq!(parcel(&app, &open.deposit_id).await["state"], "deposited");
}

async fn doesnt_fit_upsizes(app: TestApp) {
    let w = world(&app, &[(Size::S, 1), (Size::M, 1), (Size::XL, 1)]).await;
    let sim = device(&app, &w).await;
    let open = sim
        .start_deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    assert_eq!(open.compartment, 1);
    sim.door(1, DoorChange::Opened).await.unwrap();
    // The parcel does not fit: reported with the door still open.
    let bigger: Value = sim
        .call("DoesNotFit", json!({"deposit_id": open.deposit_id}))
        .await
        .unwrap();
    assert_eq!(bigger["compartment"], 2);
    assert_eq!(
        sim.door(1, DoorChange::Closed).await.unwrap(),
        "none",
        "closing the first door ends nothing"
    );
    assert_eq!(bigger["size"], "M");
    let s = app.statuses(&w.locker).await;
    assert_eq!((s[&1].as_str(), s[&2].as_str()), ("free", "reserved"));
    let again: Value = sim
        .call("DoesNotFit", json!({"deposit_id": open.deposit_id}))
        .await
        .unwrap();
    assert_eq!(again["compartment"], 3, "too big for M; there is no L, so XL");
    let e = sim
        .call("DoesNotFit", json!({"deposit_id": open.deposit_id}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NoCompartment));
    assert_eq!(sim.put_parcel(3).await.unwrap(), "deposited");
    let p = parcel(&app, &open.deposit_id).await;
    assert_eq!(p["size"], "L", "what we know of the parcel: it needs at least L");
    let s = app.statuses(&w.locker).await;
    assert_eq!(
        (s[&1].as_str(), s[&2].as_str(), s[&3].as_str()),
        ("free", "free", "occupied")
    );
    let e = sim.call("DoesNotFit", json!({"deposit_id": "nope"})).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
}

async fn cancel_and_empty_close_release_the_compartment(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = device(&app, &w).await;
    let open = sim
        .start_deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    let r = sim
        .call("CancelDeposit", json!({"deposit_id": open.deposit_id}))
        .await
        .unwrap();
    assert_eq!(r["status"], "Cancelled");
    assert_eq!(parcel(&app, &open.deposit_id).await["state"], "cancelled");
    assert!(app.statuses(&w.locker).await.values().all(|s| s == "free"));

    let open = sim
        .start_deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    sim.door(open.compartment, DoorChange::Opened).await.unwrap();
    assert_eq!(
        sim.door(open.compartment, DoorChange::Closed).await.unwrap(),
        "deposit_cancelled"
    );
    assert_eq!(parcel(&app, &open.deposit_id).await["state"], "cancelled");
    assert!(app.statuses(&w.locker).await.values().all(|s| s == "free"));
    assert!(
        app.webhooks_for(&open.deposit_id).await.is_empty(),
        "nothing was delivered"
    );
}

async fn dedicated_sections_and_runtime_repartition(app: TestApp) {
    let w = world(&app, &[(Size::S, 4)]).await;
    let dhl = app.carrier("dhl").await["carrier"]["id"].as_str().unwrap().to_string();
    let section = format!("/api/v1/lockers/{}/sections/{}", w.locker, w.carrier);
    let (s, _) = app.put(&section, json!({"compartments": [1, 2]})).await;
    assert_eq!(s, StatusCode::OK);
    let sim = device(&app, &w).await;
    let phone = || Identify::Phone("5550102030".into());

    let d = sim.deposit(&dhl, phone(), Size::S, None).await.unwrap();
    assert_eq!(d.compartment, 3, "DHL never gets UPS's section");
    let u = sim.deposit(&w.carrier, phone(), Size::S, None).await.unwrap();
    assert_eq!(u.compartment, 1, "UPS uses its section first");

    // Re-partition at runtime: UPS now owns only compartment 4, exclusively.
    let (s, _) = app.put(&section, json!({"compartments": [4], "exclusive": true})).await;
    assert_eq!(s, StatusCode::OK);
    let u = sim.deposit(&w.carrier, phone(), Size::S, None).await.unwrap();
    assert_eq!(u.compartment, 4, "the change takes effect on the next allocation");
    let e = sim.start_deposit(&w.carrier, phone(), Size::S, None).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(ErrorCode::NoCompartment),
        "an exclusive section does not spill over"
    );
    let d = sim.deposit(&dhl, phone(), Size::S, None).await.unwrap();
    assert_eq!(d.compartment, 2, "2 returned to the shared pool");
}

async fn reconnect_with_changed_snapshot_reports_faults(app: TestApp) {
    let w = world(&app, &[(Size::S, 4)]).await;
    let sim = device(&app, &w).await;
    let open = sim
        .deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    assert_eq!(open.compartment, 1);
    // While offline: the parcel in 1 vanished, something appeared in 2, 3's door is open.
    sim.tamper(1, false, false);
    sim.tamper(2, false, true);
    sim.tamper(3, true, false);
    let sim = sim.reconnect().await.unwrap();
    let boot = sim.boot().await.unwrap();
    assert_eq!(boot.status, "Accepted");
    let mut found: Vec<(i32, String)> = boot
        .discrepancies
        .iter()
        .map(|d| (d.compartment, d.kind.clone()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (1, "parcel_missing".into()),
            (2, "unexpected_parcel".into()),
            (3, "door_open".into())
        ]
    );
    let s = app.statuses(&w.locker).await;
    assert_eq!(
        (s[&1].as_str(), s[&2].as_str(), s[&3].as_str(), s[&4].as_str()),
        ("out_of_service", "out_of_service", "out_of_service", "free")
    );
    let (st, faults) = app.get(&format!("/api/v1/lockers/{}/faults", w.locker)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(faults["items"].as_array().unwrap().len(), 3);
    // Allocation skips them: only 4 is left.
    let next = sim
        .deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    assert_eq!(next.compartment, 4);
    // The manager checks compartment 2 and returns it to service.
    let (st, c) = app
        .patch(
            &format!("/api/v1/lockers/{}/compartments/2", w.locker),
            json!({"in_service": true}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(c["status"], "free");
    // A reconnect with a consistent snapshot reports nothing new.
    sim.tamper(2, false, false);
    sim.tamper(3, false, false);
    let sim = sim.reconnect().await.unwrap();
    assert!(sim.boot().await.unwrap().discrepancies.is_empty());
}

async fn concurrent_deposits_never_share_a_compartment(app: TestApp) {
    let w = world(&app, &[(Size::S, 60), (Size::M, 50), (Size::L, 40)]).await;
    let capacity = w.layout.len();
    let sim = device(&app, &w).await;
    let calls = (0..200).map(|i| {
        let sim = sim.clone();
        let carrier = w.carrier.clone();
        let size = [Size::S, Size::M, Size::L][i % 3];
        async move {
            sim.start_deposit(&carrier, Identify::Phone("5550102030".into()), size, None)
                .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut numbers = HashSet::new();
    let mut refused = 0;
    for r in results {
        match r {
            Ok(open) => assert!(
                numbers.insert(open.compartment),
                "compartment {} given twice",
                open.compartment
            ),
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::NoCompartment), "{e:?}");
                refused += 1;
            }
        }
    }
    assert!(numbers.len() <= capacity);
    assert_eq!(numbers.len() + refused, 200);
    assert!(
        numbers.len() >= 140,
        "L requests may be refused once L runs out, but most fit: {}",
        numbers.len()
    );
    let statuses = app.statuses(&w.locker).await;
    assert_eq!(
        statuses.values().filter(|s| *s == "reserved").count(),
        numbers.len(),
        "memory and database agree"
    );
    let (_, found) = app
        .get(&format!(
            "/api/v1/parcels?state=reserved&locker_id={}&limit=200",
            w.locker
        ))
        .await;
    assert_eq!(found["items"].as_array().unwrap().len(), numbers.len());
}

async fn full_locker_says_no_compartment(app: TestApp) {
    let w = world(&app, &[(Size::S, 1)]).await;
    let sim = device(&app, &w).await;
    sim.deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    match sim
        .start_deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap_err()
    {
        lockerhub::simulator::SimError::Refused(f) => {
            assert_eq!(f.code, ErrorCode::NoCompartment);
            assert!(f.description.contains("no free compartment"), "{}", f.description);
        }
        other => panic!("{other:?}"),
    }
    let e = sim
        .start_deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::XL, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NoCompartment));
}

async fn malformed_frames_get_error_frames(app: TestApp) {
    let w = world(&app, &[(Size::S, 1)]).await;
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    let e = sim.call("Heartbeat", json!({})).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ProtocolError), "boot first");
    sim.boot().await.unwrap();
    for (raw, id, code) in [
        ("not json at all", "-1", ErrorCode::FormatViolation),
        ("{\"a\": 1}", "-1", ErrorCode::FormatViolation),
        ("[2, \"x1\", \"Heartbeat\"]", "x1", ErrorCode::FormatViolation),
        ("[2, \"x2\", \"SelfDestruct\", {}]", "x2", ErrorCode::NotImplemented),
        (
            "[2, \"x3\", \"StartDeposit\", {\"size\": 12}]",
            "x3",
            ErrorCode::ProtocolError,
        ),
        (
            "[2, \"x4\", \"DoorEvent\", {\"compartment\": 99, \"door\": \"opened\", \"occupied\": false}]",
            "x4",
            ErrorCode::NotFound,
        ),
        (
            "[2, \"x5\", \"Pickup\", {\"code\": \"12\"}]",
            "x5",
            ErrorCode::InvalidCode,
        ),
    ] {
        let e = sim.send_raw(Message::text(raw), id).await.unwrap_err();
        assert_eq!(e.code(), Some(code), "{raw}");
    }
    let e = sim.send_raw(Message::binary(vec![1, 2, 3]), "-1").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::FormatViolation));
    // The connection survives all of it.
    assert!(sim.call("Heartbeat", json!({})).await.unwrap()["server_time"].is_string());
    // An oversize frame ends the connection (the WebSocket layer refuses it) but not the server.
    let big = format!("[2, \"big\", \"Heartbeat\", {{\"pad\": \"{}\"}}]", "x".repeat(70_000));
    let _ = sim.send_raw(Message::text(big), "big").await;
    assert!(sim.wait_closed(Duration::from_secs(5)).await);
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    assert_eq!(sim.boot().await.unwrap().status, "Accepted");
}

async fn retried_calls_are_deduplicated(app: TestApp) {
    let w = world(&app, &[(Size::S, 3)]).await;
    let sim = device(&app, &w).await;
    let req = json!({"carrier_id": w.carrier, "identify": {"phone": "5550102030"}, "size": "S"});
    let a = sim.call_with_id("dep-1", "StartDeposit", req.clone()).await.unwrap();
    // The device lost the answer and retries after reconnecting, with the same id.
    let sim = sim.reconnect().await.unwrap();
    sim.boot().await.unwrap();
    let b = sim.call_with_id("dep-1", "StartDeposit", req).await.unwrap();
    assert_eq!(a, b, "same answer, same compartment");
    let (_, found) = app.get(&format!("/api/v1/parcels?locker_id={}", w.locker)).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "one parcel, not two");
    assert_eq!(
        app.statuses(&w.locker)
            .await
            .values()
            .filter(|s| *s == "reserved")
            .count(),
        1
    );
}

/// The in-memory window (section 5 of docs/protocol.md): a retry of one of the last 64 calls
/// gets its remembered answer even when the answer would now differ; an older id runs again.
async fn the_memory_window_holds_the_recent_answers(app: TestApp) {
    let w = world(&app, &[(Size::S, 1)]).await;
    let sim = device(&app, &w).await;
    let first = sim.call_with_id("list-1", "ListCarriers", json!({})).await.unwrap();
    assert_eq!(first["carriers"].as_array().unwrap().len(), 1);
    app.carrier("SECOND").await;
    let again = sim.call_with_id("list-1", "ListCarriers", json!({})).await.unwrap();
    assert_eq!(again, first, "a retry gets the remembered answer, not a fresh list");
    let fresh = sim.call_with_id("list-2", "ListCarriers", json!({})).await.unwrap();
    assert_eq!(fresh["carriers"].as_array().unwrap().len(), 2);
    // Heartbeats do not take places in the window.
    for i in 0..100 {
        sim.call_with_id(&format!("hb-{i}"), "Heartbeat", json!({}))
            .await
            .unwrap();
    }
    let again = sim.call_with_id("list-1", "ListCarriers", json!({})).await.unwrap();
    assert_eq!(again, first, "still remembered after 100 heartbeats");
    // 63 more answered calls push "list-1" out of the window of 64 (with "list-2").
    for i in 3..=65 {
        sim.call_with_id(&format!("list-{i}"), "ListCarriers", json!({}))
            .await
            .unwrap();
    }
    let rerun = sim.call_with_id("list-1", "ListCarriers", json!({})).await.unwrap();
    assert_eq!(rerun, fresh, "forgotten: the call runs again");

    // An id reused by a call whose answer is not remembered (a heartbeat) replaces the older
    // answer all the same: a retry of the older call runs again.
    sim.call_with_id("list-70", "ListCarriers", json!({})).await.unwrap();
    app.carrier("THIRD").await;
    sim.call_with_id("list-70", "Heartbeat", json!({})).await.unwrap();
    let after = sim.call_with_id("list-70", "ListCarriers", json!({})).await.unwrap();
    assert_eq!(after["carriers"].as_array().unwrap().len(), 3, "ran again: {after}");
}

async fn newer_session_replaces_older(app: TestApp) {
    let w = world(&app, &[(Size::S, 1)]).await;
    let first = device(&app, &w).await;
    let second = device(&app, &w).await;
    assert!(
        first.wait_closed(Duration::from_secs(5)).await,
        "the older session is closed"
    );
    assert!(second.call("Heartbeat", json!({})).await.is_ok());
    let (_, l) = app.get(&format!("/api/v1/lockers/{}", w.locker)).await;
    assert_eq!(l["connected"], true);
    second.disconnect().await;
    disconnected(&app, &w.locker, "disconnection is recorded").await;
}

async fn device_auth_is_checked(app: TestApp) {
    let w = world(&app, &[(Size::S, 1)]).await;
    for (id, cred) in [
        (w.locker.as_str(), "lhd_wrong"),
        ("no-such-locker", w.credential.as_str()),
    ] {
        let err = SimLocker::connect(&app.ws_base(), id, cred, &w.layout)
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("401"), "{err}");
    }
    let (s, _) = app
        .patch(&format!("/api/v1/lockers/{}", w.locker), json!({"active": false}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let err = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("401"),
        "an inactive locker cannot connect: {err}"
    );
    // A plain HTTP request to the endpoint is refused cleanly, not with a 500.
    let got = app
        .raw(
            awc::http::Method::GET,
            &format!("/ws/v1/lockers/{}", w.locker),
            None,
            "text/plain",
            vec![],
        )
        .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
}

async fn faults_take_compartments_out_of_service(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = device(&app, &w).await;
    sim.call(
        "FaultNotification",
        json!({"compartment": 1, "kind": "jammed", "detail": "latch stuck"}),
    )
    .await
    .unwrap();
    assert_eq!(app.statuses(&w.locker).await[&1], "out_of_service");
    let open = sim
        .deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    assert_eq!(open.compartment, 2, "the jammed compartment is skipped");
    let (_, faults) = app.get(&format!("/api/v1/lockers/{}/faults", w.locker)).await;
    assert_eq!(faults["items"][0]["kind"], "jammed");
    // A door opened with nothing in progress is a fault as well.
    sim.tamper(2, false, true);
    assert_eq!(sim.door(1, DoorChange::Opened).await.unwrap(), "fault");
    let e = sim
        .call("FaultNotification", json!({"compartment": 42, "kind": "jammed"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
}

async fn remote_open_and_unknown_outcome(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let path = format!("/api/v1/lockers/{}/compartments/2/open", w.locker);
    assert_error(
        &app.post(&path, json!({"reason": "inspection"})).await,
        StatusCode::CONFLICT,
        "locker_offline",
    );
    let sim = device(&app, &w).await;
    let (s, v) = app.post(&path, json!({"reason": "inspection"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "opened");
    assert_eq!(sim.server_calls.lock().unwrap()[0].0, "OpenCompartment");
    assert_error(
        &app.post(
            &format!("/api/v1/lockers/{}/compartments/9/open", w.locker),
            json!({"reason": "inspection"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // A device that goes quiet: the outcome is unknown, reported, and never replayed.
    sim.disconnect().await;
    let quiet = SimLocker::connect_with(
        &app.ws_base(),
        &w.locker,
        &w.credential,
        &w.layout,
        Behaviour {
            answer_open_commands: false,
            ..Behaviour::default()
        },
        None,
    )
    .await
    .unwrap();
    quiet.boot().await.unwrap();
    let asked = app.post(&path, json!({"reason": "inspection"}));
    let timed_out = async {
        eventually(Duration::from_secs(5), "the device gets the open call", || async {
            (!quiet.server_calls.lock().unwrap().is_empty()).then_some(())
        })
        .await;
        assert_eq!(app.advance(Duration::from_secs(3599)).await, 0, "not due yet");
        assert_eq!(app.advance(Duration::from_secs(2)).await, 1, "the call timed out");
    };
    let (got, ()) = tokio::join!(asked, timed_out);
    assert_error(&got, StatusCode::GATEWAY_TIMEOUT, "outcome_unknown");
    // Never replayed: nothing is due any more, and the device got the one call.
    assert_eq!(app.advance(Duration::from_secs(3601)).await, 0);
    assert_eq!(quiet.server_calls.lock().unwrap().len(), 1, "sent once, not replayed");
    eventually(Duration::from_secs(5), "an open_outcome_unknown fault", || async {
        let (_, faults) = app.get(&format!("/api/v1/lockers/{}/faults", w.locker)).await;
        let found = faults["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "open_outcome_unknown");
        found.then_some(())
    })
    .await;
}

db_test!(unfinished_deposits_time_out);

async fn unfinished_deposits_time_out(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = device(&app, &w).await;
    let quiet = sim
        .start_deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    let open = sim
        .start_deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    sim.door(open.compartment, DoorChange::Opened).await.unwrap();
    let timeout = app.settings.deposit_timeout_secs;
    assert_eq!(app.advance(Duration::from_secs(timeout - 1)).await, 0, "not yet");
    assert_eq!(parcel(&app, &quiet.deposit_id).await["state"], "reserved");
    assert_eq!(app.advance(Duration::from_secs(2)).await, 2, "both deposits timed out");
    assert_eq!(parcel(&app, &quiet.deposit_id).await["state"], "cancelled");
    assert_eq!(parcel(&app, &open.deposit_id).await["state"], "cancelled");
    let s = app.statuses(&w.locker).await;
    assert_eq!(
        s[&i64::from(quiet.compartment)],
        "free",
        "an unopened deposit just gives its compartment back"
    );
    assert_eq!(
        s[&i64::from(open.compartment)],
        "out_of_service",
        "a door left open is a fault"
    );
    let (_, faults) = app.get(&format!("/api/v1/lockers/{}/faults", w.locker)).await;
    assert_eq!(faults["items"][0]["kind"], "door_not_closed");
}

db_test!(a_failure_restarts_the_locker_from_the_database);

async fn a_failure_restarts_the_locker_from_the_database(app: TestApp) {
    use diesel::prelude::*;
    use lockerhub::db::schema::compartments as c;
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = device(&app, &w).await;
    // Someone changes the database behind the actor's back: compartment 1 is no longer free.
    let locker = w.locker.clone();
    app.db
        .run(move |conn| {
            diesel::update(c::table.filter(c::locker_id.eq(&locker)).filter(c::number.eq(1)))
                .set(c::status.eq("out_of_service"))
                .execute(conn)?;
            Ok(())
        })
        .await
        .unwrap();
    let req = json!({"carrier_id": w.carrier, "identify": {"phone": "5550102030"}, "size": "S"});
    let e = sim
        .call_with_id("try-1", "StartDeposit", req.clone())
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(ErrorCode::InternalError),
        "the actor's memory disagreed with the database"
    );
    // The actor restarted from the database; the device retries with the same id.
    let answer = eventually(Duration::from_secs(5), "the retry succeeds", || async {
        match sim.call_with_id("try-1", "StartDeposit", req.clone()).await {
            Ok(v) => Some(v),
            Err(e) if e.code() == Some(ErrorCode::ProtocolError) => {
                sim.boot().await.unwrap();
                None
            }
            Err(_) => None,
        }
    })
    .await;
    assert_eq!(answer["compartment"], 2);
    let s = app.statuses(&w.locker).await;
    assert_eq!((s[&1].as_str(), s[&2].as_str()), ("out_of_service", "reserved"));
    assert!(
        sim.call("Heartbeat", json!({})).await.is_ok(),
        "the session survived the restart"
    );
}

db_test!(
    boot_first_refusal_is_not_remembered,
    revoking_the_credential_closes_the_session,
    a_fault_during_pickup_survives_it,
    one_parcel_cannot_be_deposited_twice_at_once,
    deposits_cut_short_by_a_restart_are_cancelled,
);

async fn boot_first_refusal_is_not_remembered(app: TestApp) {
    let w = world(&app, &[(Size::S, 1)]).await;
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    let e = sim.call_with_id("early-1", "Heartbeat", json!({})).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ProtocolError));
    sim.boot().await.unwrap();
    assert!(
        sim.call_with_id("early-1", "Heartbeat", json!({})).await.is_ok(),
        "the retry runs after boot"
    );
}

async fn revoking_the_credential_closes_the_session(app: TestApp) {
    let w = world(&app, &[(Size::S, 1)]).await;
    let sim = device(&app, &w).await;
    let (s, _) = app
        .post(&format!("/api/v1/lockers/{}/credential", w.locker), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        sim.wait_closed(Duration::from_secs(5)).await,
        "the old credential's session is closed"
    );
    disconnected(&app, &w.locker, "the revoked session is recorded as disconnected").await;
    let err = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("401"));
}

async fn a_fault_during_pickup_survives_it(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = device(&app, &w).await;
    let open = sim
        .deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    let (code, _) = app.pickup_secrets(&open.deposit_id).await;
    let v = sim.call("Pickup", json!({"code": code})).await.unwrap();
    let n = v["compartment"].as_i64().unwrap() as i32;
    sim.door(n, DoorChange::Opened).await.unwrap();
    sim.call(
        "FaultNotification",
        json!({"compartment": n, "kind": "sensor_mismatch"}),
    )
    .await
    .unwrap();
    sim.tamper(n, true, false);
    assert_eq!(sim.door(n, DoorChange::Closed).await.unwrap(), "picked_up");
    assert_eq!(parcel(&app, &open.deposit_id).await["state"], "picked_up");
    assert_eq!(
        app.statuses(&w.locker).await[&i64::from(n)],
        "out_of_service",
        "the fault stands until checked"
    );
    let next = sim
        .start_deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    assert_ne!(next.compartment, n);
}

async fn one_parcel_cannot_be_deposited_twice_at_once(app: TestApp) {
    let w = world(&app, &[(Size::S, 3)]).await;
    pre_advise(&app, &w, "1Z999AA10000000001").await;
    let sim = device(&app, &w).await;
    let tn = || Identify::TrackingNumber("1Z999AA10000000001".into());
    let first = sim.start_deposit(&w.carrier, tn(), Size::S, None).await.unwrap();
    let e = sim.start_deposit(&w.carrier, tn(), Size::S, None).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidState));
    let s = app.statuses(&w.locker).await;
    assert_eq!(
        s[&i64::from(first.compartment)],
        "reserved",
        "the first deposit keeps its compartment"
    );
    assert_eq!(sim.put_parcel(first.compartment).await.unwrap(), "deposited");
}

async fn deposits_cut_short_by_a_restart_are_cancelled(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = device(&app, &w).await;
    let open = sim
        .start_deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    sim.disconnect().await;
    let app = app.restart().await;
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    sim.boot().await.unwrap();
    assert_eq!(parcel(&app, &open.deposit_id).await["state"], "cancelled");
    assert!(app.statuses(&w.locker).await.values().all(|s| s == "free"));
    let again = sim
        .deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    assert_eq!(again.compartment, 1);
}

db_test!(upsized_deposits_still_time_out);

async fn upsized_deposits_still_time_out(app: TestApp) {
    let w = world(&app, &[(Size::S, 1), (Size::M, 1)]).await;
    let sim = device(&app, &w).await;
    let open = sim
        .start_deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    let bigger = sim
        .call("DoesNotFit", json!({"deposit_id": open.deposit_id}))
        .await
        .unwrap();
    assert_eq!(bigger["compartment"], 2);
    let timeout = Duration::from_secs(app.settings.deposit_timeout_secs);
    assert_eq!(
        app.advance(timeout + Duration::from_secs(1)).await,
        1,
        "the moved deposit timed out"
    );
    assert_eq!(parcel(&app, &open.deposit_id).await["state"], "cancelled");
    assert!(app.statuses(&w.locker).await.values().all(|s| s == "free"));
}

db_test!(silent_devices_are_dropped);

async fn silent_devices_are_dropped(app: TestApp) {
    use base64::Engine;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let w = world(&app, &[(Size::S, 1)]).await;
    let mut req = format!("{}/ws/v1/lockers/{}", app.ws_base(), w.locker)
        .into_client_request()
        .unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", w.locker, w.credential));
    req.headers_mut()
        .insert("Authorization", format!("Basic {basic}").parse().unwrap());
    // Connected, then silent: this client never reads, so it never answers the server's pings.
    let (_silent, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    eventually(Duration::from_secs(5), "the connection is recorded", || async {
        let (_, l) = app.get(&format!("/api/v1/lockers/{}", w.locker)).await;
        (l["connected"] == true).then_some(())
    })
    .await;
    // A simulated device on another locker answers its pings: moving the clock leaves it be.
    let (other, credential) = app.locker(&w.site, json!([{"size": "S", "count": 1}])).await;
    let answering = SimLocker::connect(&app.ws_base(), &other, &credential, &[(1, Size::S)])
        .await
        .unwrap();
    answering.boot().await.unwrap();
    app.advance(Duration::from_secs(app.settings.device_timeout_secs + 1))
        .await;
    disconnected(&app, &w.locker, "the silent peer was dropped after the timeout").await;
    assert!(
        answering.call("Heartbeat", json!({})).await.is_ok(),
        "a device that answers its pings stays connected"
    );
}

/// A resident who needs an accessible compartment gets the accessible one, whether the driver
/// finds them by phone or in the directory; anyone else is steered away from it.
async fn accessible_compartments_go_to_residents_who_need_them(app: TestApp) {
    let site = app.site().await;
    let (locker, credential) = app
        .locker(
            &site,
            json!([{"size": "S", "count": 2}, {"size": "S", "count": 1, "accessible": true}]),
        )
        .await;
    let carrier = app.carrier("ups").await["carrier"]["id"].as_str().unwrap().to_string();
    app.recipient(&site, "Ann Lee", "+1 555 010 2030").await;
    let (s, cy) = app
        .post(
            "/api/v1/recipients",
            json!({"site_id": site, "name": "Cy Park", "unit": "1A", "phone": "+1 555 010 7777",
                   "needs_accessible": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{cy}");
    let cy = cy["id"].as_str().unwrap().to_string();
    let layout: Vec<(i32, Size)> = (1..=3).map(|n| (n, Size::S)).collect();
    let sim = SimLocker::connect(&app.ws_base(), &locker, &credential, &layout)
        .await
        .expect("connects");
    sim.boot().await.expect("boots");

    let ann = sim
        .start_deposit(&carrier, Identify::Phone("555-010-2030".into()), Size::S, None)
        .await
        .unwrap();
    assert_ne!(
        ann.compartment, 3,
        "the accessible compartment is kept for those who need it"
    );
    assert_eq!(sim.put_parcel(ann.compartment).await.unwrap(), "deposited");

    let by_phone = sim
        .start_deposit(&carrier, Identify::Phone("555-010-7777".into()), Size::S, None)
        .await
        .unwrap();
    assert_eq!(by_phone.compartment, 3, "found by phone");
    sim.call("CancelDeposit", json!({"deposit_id": by_phone.deposit_id}))
        .await
        .expect("cancels");

    let by_directory = sim
        .start_deposit(&carrier, Identify::RecipientId(cy), Size::S, None)
        .await
        .unwrap();
    assert_eq!(by_directory.compartment, 3, "found in the directory");
    assert_eq!(sim.put_parcel(by_directory.compartment).await.unwrap(), "deposited");
}
