//! Durability at the edges of a crash: answers a retry gets after a restart, door sessions a
//! restart interrupted, and the order of a parcel's webhooks while its carrier is down.

use std::time::Duration;

use awc::http::StatusCode;
use lockerhub::domain::Size;
use lockerhub::protocol::messages::{DoorChange, Identify, Pickup};
use lockerhub::protocol::ErrorCode;
use lockerhub::simulator::SimLocker;
use serde_json::{json, Value};

use crate::db_test;
use crate::helpers::{eventually, header, Receiver, TestApp};

/// A site with one locker of small compartments, one carrier (webhooks to `hooks` if given)
/// and one resident.
struct World {
    locker: String,
    credential: String,
    carrier: String,
    layout: Vec<(i32, Size)>,
}

async fn world(app: &TestApp, smalls: i32, hooks: Option<&str>) -> World {
    let site = app.site().await;
    let (locker, credential) = app.locker(&site, json!([{"size": "S", "count": smalls}])).await;
    let (s, v) = app
        .post(
            "/api/v1/carriers",
            json!({"code": "ups", "name": "UPS", "webhook_url": hooks}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    app.recipient(&site, "Ann Lee", "+1 555 010 2030").await;
    World {
        locker,
        credential,
        carrier: v["carrier"]["id"].as_str().unwrap().to_string(),
        layout: (1..=smalls).map(|n| (n, Size::S)).collect(),
    }
}

/// A device connected to `app`; not booted yet, so a test can set the hardware state first.
async fn connect(app: &TestApp, w: &World) -> SimLocker {
    SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .expect("connects")
}

async fn parcel(app: &TestApp, id: &str) -> Value {
    let (s, v) = app.get(&format!("/api/v1/parcels/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn walk_up(w: &World) -> Value {
    json!({"carrier_id": w.carrier, "identify": {"phone": "5550102030"}, "size": "S"})
}

db_test!(a_retry_after_a_restart_gets_the_committed_answer);

/// Item 4: the server commits a closing DoorEvent and dies before the device hears the
/// answer. The device's retry (same id, same payload) after the restart must say
/// `deposited`, which is what was committed, not `none` ("not deposited").
async fn a_retry_after_a_restart_gets_the_committed_answer(app: TestApp) {
    let w = world(&app, 2, None).await;
    let sim = connect(&app, &w).await;
    sim.boot().await.unwrap();
    let start = walk_up(&w);
    let open = sim
        .call_with_id("start-1", "StartDeposit", start.clone())
        .await
        .unwrap();
    let n = open["compartment"].as_i64().unwrap() as i32;
    let deposit_id = open["deposit_id"].as_str().unwrap().to_string();
    sim.door(n, DoorChange::Opened).await.unwrap();
    let close = json!({"compartment": n, "door": "closed", "occupied": true});
    let first = sim.call_with_id("close-1", "DoorEvent", close.clone()).await.unwrap();
    assert_eq!(first["outcome"], "deposited");
    // The answer is lost with the server.
    sim.disconnect().await;
    let app = app.restart().await;

    let sim = connect(&app, &w).await;
    sim.tamper(n, false, true);
    // Before the boot, a stored answer is sent again (section 5); anything else must wait.
    let early = sim
        .call_with_id("start-1", "StartDeposit", start.clone())
        .await
        .unwrap();
    assert_eq!(
        early, open,
        "the retried StartDeposit gets its original answer, even before the boot"
    );
    let err = sim
        .call_with_id("new-1", "StartDeposit", start.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProtocolError), "{err:?}");
    let boot = sim.boot().await.unwrap();
    assert!(boot.discrepancies.is_empty(), "{:?}", boot.discrepancies);
    let retry = sim.call_with_id("close-1", "DoorEvent", close.clone()).await.unwrap();
    assert_eq!(retry, first, "the committed answer, not a fresh run");
    let again = sim.call_with_id("start-1", "StartDeposit", start).await.unwrap();
    assert_eq!(again, open, "the retried StartDeposit gets its original answer");
    let p = parcel(&app, &deposit_id).await;
    assert_eq!(p["state"], "deposited");
    let hooks = app.webhooks_for(&deposit_id).await;
    assert_eq!(hooks.len(), 1, "nothing ran twice: {hooks:?}");
    let (_, found) = app.get(&format!("/api/v1/parcels?locker_id={}", w.locker)).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "one parcel, not two");

    // The same id with another payload is a new call (section 5): it runs.
    let other = json!({"compartment": n, "door": "opened", "occupied": true});
    let v = sim.call_with_id("close-1", "DoorEvent", other).await.unwrap();
    assert_eq!(v["outcome"], "fault", "an unexpected open, not the stored answer");

    // The refusal before the boot was not remembered: now booted, the same call runs.
    let late = sim.call_with_id("new-1", "StartDeposit", walk_up(&w)).await.unwrap();
    assert!(late["deposit_id"].is_string(), "{late}");
}

// One wrong code is allowed, the second locks out: a retry counted as a miss would show.
db_test!(a_retried_pickup_gets_its_answer_after_a_restart_and_counts_no_miss with |s| s.pickup_attempts = 1);

/// A pickup's answer lost with the server, in its two shapes. The code still opens: the retry
/// runs again, meets the stored answer and rolls back. The parcel has left since: the retry's
/// code is spent, a wrong code, which must get the stored answer and count no miss.
async fn a_retried_pickup_gets_its_answer_after_a_restart_and_counts_no_miss(app: TestApp) {
    let w = world(&app, 2, None).await;
    let sim = connect(&app, &w).await;
    sim.boot().await.unwrap();
    let phone = || Identify::Phone("5550102030".into());
    let gone = sim.deposit(&w.carrier, phone(), Size::S, None).await.unwrap();
    let kept = sim.deposit(&w.carrier, phone(), Size::S, None).await.unwrap();
    let (gone_code, _) = app.pickup_secrets(&gone.deposit_id).await;
    let (kept_code, _) = app.pickup_secrets(&kept.deposit_id).await;
    let gone_call = json!({"code": &gone_code});
    let taken = sim
        .call_with_id("pick-gone", "Pickup", gone_call.clone())
        .await
        .unwrap();
    let n = taken["compartment"].as_i64().unwrap() as i32;
    sim.door(n, DoorChange::Opened).await.unwrap();
    sim.tamper(n, true, false);
    assert_eq!(sim.door(n, DoorChange::Closed).await.unwrap(), "picked_up");
    let kept_call = json!({"code": kept_code});
    let opened = sim
        .call_with_id("pick-kept", "Pickup", kept_call.clone())
        .await
        .unwrap();
    // Both answers are lost with the server; the second pickup's door never opened.
    sim.disconnect().await;
    let app = app.restart().await;

    let sim = connect(&app, &w).await;
    let boot = sim.boot().await.unwrap();
    assert!(boot.discrepancies.is_empty(), "{:?}", boot.discrepancies);
    let again = sim.call_with_id("pick-kept", "Pickup", kept_call).await.unwrap();
    assert_eq!(again, opened, "the stored answer, not a second run");
    let again = sim.call_with_id("pick-gone", "Pickup", gone_call).await.unwrap();
    assert_eq!(again, taken, "a spent code's retry gets the stored answer");
    let p = parcel(&app, &kept.deposit_id).await;
    let opens = kinds(&p).iter().filter(|k| *k == "pickup_opened").count();
    assert_eq!(opens, 1, "the pickup ran once: {:?}", kinds(&p));
    // One miss is allowed and the next starts a lockout. Had the retry counted, this first
    // new miss would start it.
    let miss = |id: &'static str| sim.call_with_id(id, "Pickup", json!({"code": &gone_code}));
    let err = miss("pick-new-1").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::InvalidCode),
        "no miss was counted before: {err:?}"
    );
    let err = miss("pick-new-2").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::LockedOut), "a real miss counts: {err:?}");
}

// Retries ten minutes apart on the app's clock: the test moves the clock past each one.
db_test!(a_parcels_webhooks_arrive_in_event_order with |s| s.webhook_retry_base_ms = 600_000);

/// Item 6: with the carrier's endpoint down, a parcel's `picked_up` must not overtake its
/// `delivered_to_locker`: it waits until the earlier one is delivered.
async fn a_parcels_webhooks_arrive_in_event_order(app: TestApp) {
    let rx = Receiver::start(1_000_000).await;
    let w = world(&app, 1, Some(&rx.url)).await;
    let sim = connect(&app, &w).await;
    sim.boot().await.unwrap();
    let open = sim
        .deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    rx.wait_for(1, Duration::from_secs(20)).await;
    // The failed attempt is recorded before the clock moves past its retry (at most 12 min).
    eventually(Duration::from_secs(10), "the failed attempt is recorded", || {
        let (db, pid) = (app.db.clone(), open.deposit_id.clone());
        async move {
            use diesel::prelude::*;
            use lockerhub::db::schema::webhook_outbox as o;
            let attempts: Vec<i32> = db
                .run(move |c| Ok(o::table.filter(o::parcel_id.eq(&pid)).select(o::attempts).load(c)?))
                .await
                .unwrap();
            (attempts.first() >= Some(&1)).then_some(())
        }
    })
    .await;
    app.advance_outboxes(Duration::from_secs(15 * 60)).await;
    rx.wait_for(2, Duration::from_secs(20)).await;
    assert!(rx.got.lock().unwrap().len() >= 2, "the endpoint is down and retried");
    let (code, _) = app.pickup_secrets(&open.deposit_id).await;
    sim.pickup(Pickup::Code(code)).await.unwrap();
    // The endpoint comes back. Each look below first moves the clock past the next retry
    // (at most 24 min away), whenever the last failure was recorded.
    rx.fail_next.store(0, std::sync::atomic::Ordering::SeqCst);

    let pid = open.deposit_id.clone();
    let delivered = eventually(Duration::from_secs(30), "both webhooks delivered", || {
        let (db, pid) = (app.db.clone(), pid.clone());
        let app = &app;
        async move {
            app.advance_outboxes(Duration::from_secs(3600)).await;
            use diesel::prelude::*;
            use lockerhub::db::schema::webhook_outbox as o;
            let rows: Vec<(String, String, Option<chrono::NaiveDateTime>)> = db
                .run(move |c| {
                    Ok(o::table
                        .filter(o::parcel_id.eq(&pid))
                        .order(o::id.asc())
                        .select((o::event_type, o::status, o::delivered_at))
                        .load(c)?)
                })
                .await
                .unwrap();
            (rows.len() == 2 && rows.iter().all(|r| r.1 == "delivered")).then_some(rows)
        }
    })
    .await;
    assert_eq!(delivered[0].0, "parcel.delivered_to_locker");
    assert_eq!(delivered[1].0, "parcel.picked_up");
    assert!(delivered[0].2 <= delivered[1].2, "{delivered:?}");
    // Every request the carrier saw for the deposit came before any for the pickup.
    let got = rx.got.lock().unwrap().clone();
    let kinds: Vec<String> = got
        .iter()
        .map(|(_, body)| {
            serde_json::from_slice::<Value>(body).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let last_deposit = kinds.iter().rposition(|k| k == "parcel.delivered_to_locker").unwrap();
    let first_pickup = kinds.iter().position(|k| k == "parcel.picked_up").unwrap();
    assert!(last_deposit < first_pickup, "out of order: {kinds:?}");
    assert!(got.iter().all(|(h, _)| !header(h, "webhook-id").is_empty()));
}

/// Starts a walk-up deposit, opens its door, and restarts the server with the door open (the
/// case the fault runs found stranded). Returns the new app, the deposit id and compartment.
async fn deposit_cut_short_with_the_door_open(app: TestApp, w: &World) -> (TestApp, String, i32) {
    let sim = connect(&app, w).await;
    sim.boot().await.unwrap();
    let open = sim.call("StartDeposit", walk_up(w)).await.unwrap();
    let n = open["compartment"].as_i64().unwrap() as i32;
    sim.door(n, DoorChange::Opened).await.unwrap();
    sim.disconnect().await;
    let app = app.restart().await;
    (app, open["deposit_id"].as_str().unwrap().to_string(), n)
}

fn kinds(p: &Value) -> Vec<String> {
    p["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

db_test!(
    an_interrupted_deposit_closed_on_the_parcel_is_deposited_at_boot,
    an_interrupted_deposit_closed_empty_is_cancelled_at_boot,
    an_interrupted_deposit_with_the_door_open_is_held_for_the_door,
    an_interrupted_pickup_closed_empty_is_picked_up_at_boot,
);

/// Item 5: the parcel is inside and the door closed while the server was down.
async fn an_interrupted_deposit_closed_on_the_parcel_is_deposited_at_boot(app: TestApp) {
    let w = world(&app, 2, None).await;
    let (app, deposit_id, n) = deposit_cut_short_with_the_door_open(app, &w).await;
    let sim = connect(&app, &w).await;
    sim.tamper(n, false, true);
    let boot = sim.boot().await.unwrap();
    assert!(boot.discrepancies.is_empty(), "{:?}", boot.discrepancies);
    let p = parcel(&app, &deposit_id).await;
    assert_eq!(p["state"], "deposited");
    let deposited = p["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "deposited")
        .unwrap();
    let detail: Value = serde_json::from_str(deposited["detail"].as_str().unwrap()).unwrap();
    assert_eq!(detail["reason"], "at_reconnection", "{deposited}");
    assert_eq!(app.statuses(&w.locker).await[&i64::from(n)], "occupied");
    let hooks = app.webhooks_for(&deposit_id).await;
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].0, "parcel.delivered_to_locker", "the carrier is told");
    // The recipient is told: the code in the email opens the compartment.
    let (code, _) = app.pickup_secrets(&deposit_id).await;
    let picked = sim.pickup(Pickup::Code(code)).await.unwrap();
    assert_eq!(picked.compartment, n);
}

/// Item 5: the driver took the parcel back out and closed the door while the server was down.
async fn an_interrupted_deposit_closed_empty_is_cancelled_at_boot(app: TestApp) {
    let w = world(&app, 2, None).await;
    let (app, deposit_id, n) = deposit_cut_short_with_the_door_open(app, &w).await;
    let sim = connect(&app, &w).await;
    let boot = sim.boot().await.unwrap();
    assert!(boot.discrepancies.is_empty(), "{:?}", boot.discrepancies);
    let p = parcel(&app, &deposit_id).await;
    assert_eq!(p["state"], "cancelled");
    assert_eq!(kinds(&p), vec!["deposit_started", "deposit_cancelled"]);
    assert_eq!(app.statuses(&w.locker).await[&i64::from(n)], "free");
    assert!(app.webhooks_for(&deposit_id).await.is_empty());
}

/// Item 5: the door is still open at the boot: the deposit goes on, and the door's closing
/// event completes it as for any deposit.
async fn an_interrupted_deposit_with_the_door_open_is_held_for_the_door(app: TestApp) {
    let w = world(&app, 2, None).await;
    let (app, deposit_id, n) = deposit_cut_short_with_the_door_open(app, &w).await;
    let sim = connect(&app, &w).await;
    sim.tamper(n, true, true);
    let boot = sim.boot().await.unwrap();
    assert!(
        boot.discrepancies.is_empty(),
        "an open door of a held session is expected"
    );
    assert_eq!(
        parcel(&app, &deposit_id).await["state"],
        "reserved",
        "held, not cancelled"
    );
    assert_eq!(app.statuses(&w.locker).await[&i64::from(n)], "reserved");
    // No other deposit can take the held compartment.
    let other = sim.call("StartDeposit", walk_up(&w)).await.unwrap();
    assert_ne!(other["compartment"].as_i64().unwrap() as i32, n);
    assert_eq!(sim.door(n, DoorChange::Closed).await.unwrap(), "deposited");
    let p = parcel(&app, &deposit_id).await;
    assert_eq!(p["state"], "deposited");
    assert_eq!(app.webhooks_for(&deposit_id).await[0].0, "parcel.delivered_to_locker");
}

/// Item 5: a pickup whose door was open at the restart, found closed and empty at the boot:
/// the recipient took the parcel.
async fn an_interrupted_pickup_closed_empty_is_picked_up_at_boot(app: TestApp) {
    let w = world(&app, 2, None).await;
    let sim = connect(&app, &w).await;
    sim.boot().await.unwrap();
    let open = sim
        .deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    let (code, _) = app.pickup_secrets(&open.deposit_id).await;
    let v = sim.call("Pickup", json!({"code": code})).await.unwrap();
    let n = v["compartment"].as_i64().unwrap() as i32;
    sim.door(n, DoorChange::Opened).await.unwrap();
    sim.disconnect().await;
    let app = app.restart().await;
    let sim = connect(&app, &w).await;
    let boot = sim.boot().await.unwrap();
    assert!(boot.discrepancies.is_empty(), "{:?}", boot.discrepancies);
    assert_eq!(parcel(&app, &open.deposit_id).await["state"], "picked_up");
    assert_eq!(app.statuses(&w.locker).await[&i64::from(n)], "free");
    let hooks = app.webhooks_for(&open.deposit_id).await;
    assert_eq!(hooks.last().unwrap().0, "parcel.picked_up");
}

db_test!(a_locker_that_does_not_come_back_gets_an_operator_fault);

/// Item 5: the locker does not reconnect after the restart. Its interrupted deposit is not
/// cancelled (the parcel may be inside): the compartment goes out of service with a fault
/// for a person to check, and the device's boot still decides the deposit later.
async fn a_locker_that_does_not_come_back_gets_an_operator_fault(app: TestApp) {
    let w = world(&app, 2, None).await;
    let (app, deposit_id, n) = deposit_cut_short_with_the_door_open(app, &w).await;
    // The locker actor rebuilds the session at start, asynchronously; each round moves the
    // clock past the door timeout (on the app clock) and fires what is due.
    let timeout = Duration::from_secs(app.settings.deposit_timeout_secs + 1);
    let faults = eventually(Duration::from_secs(20), "a session_outcome_unknown fault", || async {
        app.advance(timeout).await;
        let (_, f) = app.get(&format!("/api/v1/lockers/{}/faults", w.locker)).await;
        let found = f["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "session_outcome_unknown");
        found.then_some(f)
    })
    .await;
    let fault = faults["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "session_outcome_unknown")
        .unwrap()
        .clone();
    assert_eq!(fault["compartment_number"], n);
    assert_eq!(app.statuses(&w.locker).await[&i64::from(n)], "out_of_service");
    let p = parcel(&app, &deposit_id).await;
    assert_eq!(p["state"], "reserved", "not silently cancelled");
    assert_eq!(kinds(&p).last().unwrap(), "session_outcome_unknown");
    // The locker comes back with the parcel inside: deposited; the compartment stays out of
    // service until a person has checked it.
    let sim = connect(&app, &w).await;
    sim.tamper(n, false, true);
    sim.boot().await.unwrap();
    assert_eq!(parcel(&app, &deposit_id).await["state"], "deposited");
    assert_eq!(app.statuses(&w.locker).await[&i64::from(n)], "out_of_service");
}
