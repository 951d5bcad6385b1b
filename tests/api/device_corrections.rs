//! Device-protocol corrections of version 1.0.1 (docs/protocol.md §14): the largest locker
//! boots, door events as the document shows them, and kiosk interactions bound to the carrier
//! of the courier code entered.

use std::time::Duration;

use awc::http::StatusCode;
use lockerhub::domain::Size;
use lockerhub::protocol::messages::Identify;
use lockerhub::protocol::ErrorCode;
use lockerhub::simulator::SimLocker;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::db_test;
use crate::helpers::TestApp;

db_test!(
    a_locker_of_1000_compartments_boots_and_fills_its_last,
    only_boot_frames_may_exceed_16_kib,
    door_events_as_the_document_shows_them,
    a_courier_code_binds_the_deposits_that_follow,
    a_kiosk_interaction_ends_after_silence_on_the_app_clock,
);

/// What the tests need of a site: a locker, its layout, carriers and one resident.
struct World {
    locker: String,
    credential: String,
    layout: Vec<(i32, Size)>,
}

struct Carrier {
    id: String,
    courier_code: String,
}

async fn world(app: &TestApp, runs: &[(Size, i32)]) -> World {
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
    app.recipient(&site, "Ann Lee", "+1 555 010 2030").await;
    World {
        locker,
        credential,
        layout,
    }
}

async fn carrier(app: &TestApp, code: &str) -> Carrier {
    let v = app.carrier(code).await;
    Carrier {
        id: v["carrier"]["id"].as_str().unwrap().to_string(),
        courier_code: v["secrets"]["courier_code"].as_str().unwrap().to_string(),
    }
}

async fn booted(app: &TestApp, w: &World) -> SimLocker {
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .expect("connects");
    assert_eq!(sim.boot().await.expect("boots").status, "Accepted");
    sim
}

fn by_phone() -> Identify {
    Identify::Phone("5550102030".into())
}

async fn a_locker_of_1000_compartments_boots_and_fills_its_last(app: TestApp) {
    // The largest locker the admin API accepts; its one XL compartment is number 1000.
    let w = world(&app, &[(Size::S, 999), (Size::XL, 1)]).await;
    let ups = carrier(&app, "ups").await;
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    let boot = sim.boot().await.expect("a 1,000-compartment boot gets an answer");
    assert_eq!(boot.status, "Accepted");
    assert!(boot.discrepancies.is_empty(), "{:?}", boot.discrepancies);
    let open = sim.deposit(&ups.id, by_phone(), Size::XL, None).await.unwrap();
    assert_eq!(open.compartment, 1000);
    let (s, p) = app.get(&format!("/api/v1/parcels/{}", open.deposit_id)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["state"], "deposited", "{p}");
    assert_eq!(app.statuses(&w.locker).await[&1000], "occupied");
}

async fn only_boot_frames_may_exceed_16_kib(app: TestApp) {
    let w = world(&app, &[(Size::S, 3)]).await;
    // A device reporting more compartments than any locker may have is told so, not cut off.
    let too_many: Vec<(i32, Size)> = (1..=1001).map(|n| (n, Size::S)).collect();
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &too_many)
        .await
        .unwrap();
    assert_eq!(sim.boot().await.unwrap().status, "Rejected");
    let e = sim.call("Heartbeat", json!({})).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(ErrorCode::ProtocolError),
        "a rejected boot does not boot"
    );

    // Every other action keeps the 16 KiB limit: the connection ends, the server does not.
    let sim = booted(&app, &w).await;
    let big = format!(
        "[2, \"big\", \"Heartbeat\", {{\"pad\": \"{}\"}}]",
        "x".repeat(17 * 1024)
    );
    let _ = sim.send_raw(Message::text(big), "big").await;
    assert!(
        sim.wait_closed(Duration::from_secs(5)).await,
        "a 17 KiB heartbeat is refused"
    );

    // A boot beyond its own limit (128 KiB) is refused by the WebSocket layer.
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    let huge = format!(
        "[2, \"huge\", \"BootNotification\", {{\"pad\": \"{}\", \"firmware_version\": \"x\", \
         \"protocol_version\": \"1.0\", \"compartments\": []}}]",
        "x".repeat(129 * 1024)
    );
    let _ = sim.send_raw(Message::text(huge), "huge").await;
    assert!(sim.wait_closed(Duration::from_secs(5)).await);
    booted(&app, &w).await;
}

async fn door_event(sim: &SimLocker, payload: Value) -> Result<String, lockerhub::simulator::SimError> {
    let v = sim.call("DoorEvent", payload).await?;
    Ok(v["outcome"].as_str().unwrap_or_default().to_string())
}

async fn door_events_as_the_document_shows_them(app: TestApp) {
    let w = world(&app, &[(Size::S, 3)]).await;
    let ups = carrier(&app, "ups").await;
    let sim = booted(&app, &w).await;
    let open = sim.start_deposit(&ups.id, by_phone(), Size::S, None).await.unwrap();
    let n = open.compartment;
    // §7.9 and every diagram: `opened` carries no `occupied`.
    assert_eq!(
        door_event(&sim, json!({"compartment": n, "door": "opened"}))
            .await
            .unwrap(),
        "none"
    );
    // Closing a deposit's door needs the sensor: a clear refusal, and the deposit goes on.
    let e = door_event(&sim, json!({"compartment": n, "door": "closed"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ProtocolError));
    assert!(format!("{e:?}").contains("occupied is required"), "{e:?}");
    sim.tamper(n, false, true);
    assert_eq!(
        door_event(&sim, json!({"compartment": n, "door": "closed", "occupied": true}))
            .await
            .unwrap(),
        "deposited"
    );

    // A door forced open with nothing in progress is a recorded fault.
    let forced = if n == 3 { 2 } else { 3 };
    assert_eq!(
        door_event(&sim, json!({"compartment": forced, "door": "opened"}))
            .await
            .unwrap(),
        "fault"
    );
    let (_, faults) = app.get(&format!("/api/v1/lockers/{}/faults", w.locker)).await;
    let items = faults["items"].as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|f| f["kind"] == "unexpected_door_open" && f["compartment_number"] == forced),
        "{faults}"
    );
    assert_eq!(app.statuses(&w.locker).await[&(forced as i64)], "out_of_service");
    // Its closing needs no sensor reading: nothing is in progress.
    assert_eq!(
        door_event(&sim, json!({"compartment": forced, "door": "closed"}))
            .await
            .unwrap(),
        "none"
    );
    // The simulator speaks exactly the document: a whole deposit through it.
    sim.deposit(&ups.id, by_phone(), Size::S, None).await.unwrap();
}

async fn start(sim: &SimLocker, carrier_id: &str) -> Result<Value, lockerhub::simulator::SimError> {
    sim.call(
        "StartDeposit",
        json!({"carrier_id": carrier_id, "identify": {"phone": "5550102030"}, "size": "S"}),
    )
    .await
}

async fn a_courier_code_binds_the_deposits_that_follow(app: TestApp) {
    let w = world(&app, &[(Size::S, 6)]).await;
    let ups = carrier(&app, "ups").await;
    let dhl = carrier(&app, "dhl").await;
    let sim = booted(&app, &w).await;
    // Walk-up deposits (no courier code) name any carrier, as before.
    sim.deposit(&ups.id, by_phone(), Size::S, None).await.unwrap();
    sim.deposit(&dhl.id, by_phone(), Size::S, None).await.unwrap();

    let v = sim
        .call("IdentifyCourier", json!({"courier_code": ups.courier_code}))
        .await
        .unwrap();
    assert_eq!(v["carrier"]["id"], ups.id.as_str());
    // A driver identified as UPS cannot deposit as DHL.
    let e = start(&sim, &dhl.id).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidState), "{e:?}");
    match &e {
        lockerhub::simulator::SimError::Refused(f) => {
            assert_eq!(f.details["bound_carrier_id"], ups.id.as_str(), "{f:?}")
        }
        other => panic!("{other:?}"),
    }
    // ... but as UPS, as often as needed.
    let open = sim.deposit(&ups.id, by_phone(), Size::S, None).await.unwrap();
    sim.deposit(&ups.id, by_phone(), Size::S, None).await.unwrap();
    let (_, p) = app.get(&format!("/api/v1/parcels/{}", open.deposit_id)).await;
    assert_eq!(p["carrier_id"], ups.id.as_str(), "{p}");

    // A new courier code starts a new interaction for its carrier.
    sim.call("IdentifyCourier", json!({"courier_code": dhl.courier_code}))
        .await
        .unwrap();
    assert_eq!(
        start(&sim, &ups.id).await.unwrap_err().code(),
        Some(ErrorCode::InvalidState)
    );
    // The explicit end: the kiosk is back to walk-up deposits.
    assert_eq!(sim.call("EndInteraction", json!({})).await.unwrap()["ended"], true);
    assert_eq!(sim.call("EndInteraction", json!({})).await.unwrap()["ended"], false);
    sim.deposit(&ups.id, by_phone(), Size::S, None).await.unwrap();
}

async fn a_kiosk_interaction_ends_after_silence_on_the_app_clock(app: TestApp) {
    let w = world(&app, &[(Size::S, 3)]).await;
    let ups = carrier(&app, "ups").await;
    let dhl = carrier(&app, "dhl").await;
    let sim = booted(&app, &w).await;
    let boot = sim.boot().await.unwrap();
    assert_eq!(boot.config.kiosk_interaction_timeout_secs, 120);

    sim.call("IdentifyCourier", json!({"courier_code": ups.courier_code}))
        .await
        .unwrap();
    // Every call from the kiosk keeps the interaction alive.
    app.clock.advance(Duration::from_secs(100));
    sim.call("ListCarriers", json!({})).await.unwrap();
    app.clock.advance(Duration::from_secs(100));
    assert_eq!(
        start(&sim, &dhl.id).await.unwrap_err().code(),
        Some(ErrorCode::InvalidState),
        "200 s after the courier code, 100 s after the last call: still bound"
    );
    // Heartbeats are the device's, not the driver's: they do not keep it alive.
    app.clock.advance(Duration::from_secs(61));
    sim.call("Heartbeat", json!({})).await.unwrap();
    app.clock.advance(Duration::from_secs(60));
    let open = start(&sim, &dhl.id)
        .await
        .expect("121 s of silence ended the interaction");
    assert!(open["compartment"].is_i64());
}
