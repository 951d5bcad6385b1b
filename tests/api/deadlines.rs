//! Deadlines: every test moves the application's clock and fires what is due (`by_hand`), so
//! none waits for a timer and each step's count is exact. What is truly asynchronous (a
//! webhook reaching its receiver, the start-up scan after a restart) is awaited with
//! `eventually`, whose deadline only bounds a failure.

use std::time::Duration;

use awc::http::StatusCode;
use lockerhub::domain::Size;
use lockerhub::protocol::messages::{DoorChange, Identify, Pickup};
use lockerhub::simulator::SimLocker;
use serde_json::{json, Value};

use crate::db_test;
use crate::helpers::{eventually, Receiver, TestApp};

/// Real hours, and no scan: deadlines fire only when the test moves the clock and asks
/// (`TestApp::advance`), so each step's count is exact.
fn by_hand(s: &mut lockerhub::config::Settings) {
    s.deadline_scan_ms = 3_600_000;
}

struct World {
    site: String,
    locker: String,
    carrier: String,
    api_key: String,
    secret: String,
    sim: SimLocker,
    hooks: Receiver,
}

async fn world(app: &TestApp, smalls: i32) -> World {
    let hooks = Receiver::start(0).await;
    let site = app.site().await;
    let (locker, credential) = app.locker(&site, json!([{"size": "S", "count": smalls}])).await;
    let (s, c) = app
        .post(
            "/api/v1/carriers",
            json!({"code": "ups", "name": "UPS", "webhook_url": hooks.url}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let carrier = c["carrier"]["id"].as_str().unwrap().to_string();
    let api_key = c["secrets"]["api_key"].as_str().unwrap().to_string();
    let secret = c["secrets"]["webhook_secret"].as_str().unwrap().to_string();
    app.recipient(&site, "Ann", "+15550102030").await;
    let layout: Vec<(i32, Size)> = (1..=smalls).map(|n| (n, Size::S)).collect();
    let sim = SimLocker::connect(&app.ws_base(), &locker, &credential, &layout)
        .await
        .unwrap();
    sim.boot().await.unwrap();
    World {
        site,
        locker,
        carrier,
        api_key,
        secret,
        sim,
        hooks,
    }
}

async fn state_of(app: &TestApp, parcel: &str) -> String {
    let (_, p) = app.get(&format!("/api/v1/parcels/{parcel}")).await;
    p["state"].as_str().unwrap().to_string()
}

/// Waits (bounded) until the parcel is in state `want`: for a change another actor makes.
async fn wait_state(app: &TestApp, parcel: &str, want: &str) {
    eventually(
        Duration::from_secs(10),
        &format!("parcel {parcel} becomes {want}"),
        || async { (state_of(app, parcel).await == want).then_some(()) },
    )
    .await
}

fn hook_types(rx: &Receiver) -> Vec<String> {
    rx.got
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| {
            serde_json::from_slice::<Value>(b).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Webhook event types queued for the carrier, as the delivery log lists them: what was
/// committed, whether or not it has reached the receiver yet.
async fn queued_types(app: &TestApp, carrier: &str) -> Vec<String> {
    let (_, log) = app
        .get(&format!("/api/v1/carriers/{carrier}/deliveries?limit=200"))
        .await;
    log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event_type"].as_str().unwrap().to_string())
        .collect()
}

const HOUR: Duration = Duration::from_secs(3600);

async fn kinds(app: &TestApp, parcel: &str) -> Vec<String> {
    let (_, log) = app.get(&format!("/api/v1/parcels/{parcel}/notifications")).await;
    log.as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap().to_string())
        .collect()
}

db_test!(reminders_expiry_and_return with super::by_hand);

async fn reminders_expiry_and_return(app: TestApp) {
    let w = world(&app, 2).await;
    let open = w
        .sim
        .deposit(
            &w.carrier,
            Identify::Phone("5550102030".into()),
            Size::S,
            Some("1Z999AA10000000001"),
        )
        .await
        .unwrap();
    // The default window: 72 hours, reminders 24 and 4 hours before its end.
    assert_eq!(app.advance(47 * HOUR).await, 0, "nothing is due yet");
    assert_eq!(app.advance(2 * HOUR).await, 1, "the first reminder");
    assert_eq!(kinds(&app, &open.deposit_id).await, vec!["deposited", "reminder"]);
    assert_eq!(app.advance(20 * HOUR).await, 1, "expiring soon");
    assert_eq!(app.advance(4 * HOUR).await, 1, "the expiry");
    assert_eq!(state_of(&app, &open.deposit_id).await, "expired");
    // Every deadline fired once: a second pass finds nothing.
    assert_eq!(app.advance(HOUR).await, 0);
    let mut k = kinds(&app, &open.deposit_id).await;
    k.sort();
    assert_eq!(
        k,
        vec!["deposited", "expiring_soon", "reminder", "returned"],
        "each fired once"
    );
    let types = queued_types(&app, &w.carrier).await;
    assert_eq!(
        types.iter().filter(|t| *t == "parcel.return_requested").count(),
        1,
        "{types:?}"
    );
    // The carrier's driver collects it at the kiosk.
    let key = {
        let (_, p) = app.get(&format!("/api/v1/parcels/{}", open.deposit_id)).await;
        p["compartment_id"].as_str().unwrap().to_string()
    };
    assert!(!key.is_empty());
    assert_eq!(
        app.statuses(&w.locker).await[&i64::from(open.compartment)],
        "occupied",
        "still inside until collected"
    );
    let _ = w.site;
}

db_test!(a_missed_deadline_fires_at_start with super::by_hand);

async fn a_missed_deadline_fires_at_start(app: TestApp) {
    use diesel::prelude::*;
    use lockerhub::db::schema::{deadlines as d, parcels as p};
    let w = world(&app, 1).await;
    let open = w
        .sim
        .deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    w.sim.disconnect().await;
    // The server is down across the deadline: a restarted app's clock starts again from the
    // wall clock, so the time that passed is written into the rows instead (every deadline of
    // the parcel an hour ago). The running app's scan is an hour away: only the restarted
    // app's start-up scan can fire it.
    let (id, past) = (open.deposit_id.clone(), app.clock.now() - chrono::Duration::hours(1));
    app.db
        .run(move |c| {
            diesel::update(d::table.filter(d::parcel_id.eq(&id)))
                .set(d::due_at.eq(past))
                .execute(c)?;
            diesel::update(p::table.find(&id))
                .set(p::pickup_deadline.eq(past))
                .execute(c)?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(state_of(&app, &open.deposit_id).await, "deposited", "nothing fired yet");
    let app = app.restart().await;
    wait_state(&app, &open.deposit_id, "expired").await;
}

db_test!(pickup_before_the_deadline_cancels_it with super::by_hand);

async fn pickup_before_the_deadline_cancels_it(app: TestApp) {
    let w = world(&app, 1).await;
    let open = w
        .sim
        .deposit(
            &w.carrier,
            Identify::Phone("5550102030".into()),
            Size::S,
            Some("1Z999AA10000000002"),
        )
        .await
        .unwrap();
    let (code, _) = app.pickup_secrets(&open.deposit_id).await;
    w.sim.pickup(Pickup::Code(code)).await.unwrap();
    // Past the 72-hour dwell window and both reminders: nothing is left to fire.
    assert_eq!(app.advance(73 * HOUR).await, 0, "the pickup cancelled every deadline");
    assert_eq!(state_of(&app, &open.deposit_id).await, "picked_up");
    assert!(!queued_types(&app, &w.carrier)
        .await
        .iter()
        .any(|t| t == "parcel.return_requested"));
    let k = kinds(&app, &open.deposit_id).await;
    assert_eq!(k, vec!["deposited"], "no reminder after the pickup");
}

db_test!(many_parcels_with_one_deadline_all_fire with super::by_hand);

async fn many_parcels_with_one_deadline_all_fire(app: TestApp) {
    let w = world(&app, 20).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        let open = w
            .sim
            .start_deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
            .await
            .unwrap();
        ids.push((open.deposit_id, open.compartment));
    }
    // Close all doors together so their deadlines coincide.
    let closes = ids.iter().map(|(_, n)| {
        let sim = w.sim.clone();
        let n = *n;
        async move { sim.put_parcel(n).await }
    });
    for r in futures_util::future::join_all(closes).await {
        assert_eq!(r.unwrap(), "deposited");
    }
    // Their three deadlines each (two reminders, the expiry) come due together.
    assert_eq!(app.advance(73 * HOUR).await, 60, "every deadline of every parcel");
    for (id, _) in &ids {
        assert_eq!(state_of(&app, id).await, "expired");
    }
    assert_eq!(app.advance(HOUR).await, 0, "none fires twice");
    let returns = queued_types(&app, &w.carrier)
        .await
        .iter()
        .filter(|t| *t == "parcel.return_requested")
        .count();
    assert_eq!(returns, 20, "every parcel's expiry queued its webhook, once");
    // And all 20 reach the carrier (at its default 10 per second): bounded, truly async.
    crate::helpers::eventually(Duration::from_secs(20), "20 return webhooks delivered", || async {
        let n = hook_types(&w.hooks)
            .iter()
            .filter(|t| *t == "parcel.return_requested")
            .count();
        (n >= 20).then_some(())
    })
    .await;
}

db_test!(reservations_expire_and_release_the_compartment with |s| {
    super::by_hand(s);
    s.reservation_hours = 5;
});

async fn reservations_expire_and_release_the_compartment(app: TestApp) {
    let w = world(&app, 1).await;
    let body = json!({"type": "out_for_delivery", "data": {"tracking_number": "1Z999AA10000000003",
        "locker_id": w.locker, "recipient": {"phone": "+15550102030"}, "size": "S"}})
    .to_string();
    let ts = chrono::Utc::now().timestamp();
    let resp = app
        .client
        .post(app.url("/carrier/v1/events"))
        .bearer_auth(&w.api_key)
        .insert_header(("content-type", "application/json"))
        .insert_header(("webhook-id", "pre-1"))
        .insert_header(("webhook-timestamp", ts.to_string()))
        .insert_header((
            "webhook-signature",
            lockerhub::signing::sign(&w.secret, "pre-1", ts, body.as_bytes()),
        ))
        .send_body(body)
        .await
        .unwrap();
    let (s, v) = crate::helpers::read(resp).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let id = v["parcel_id"].as_str().unwrap().to_string();
    assert_eq!(app.statuses(&w.locker).await[&1], "reserved");
    assert_eq!(app.advance(4 * HOUR).await, 0, "the 5-hour reservation holds");
    assert_eq!(app.statuses(&w.locker).await[&1], "reserved");
    assert_eq!(app.advance(2 * HOUR).await, 1, "the reservation expires");
    // The expiry asks the locker actor to release the compartment: that is the actor's work.
    wait_state(&app, &id, "expected").await;
    eventually(
        Duration::from_secs(10),
        "the reservation released its compartment",
        || async { (app.statuses(&w.locker).await[&1] == "free").then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(10), "the carrier is told", || async {
        hook_types(&w.hooks)
            .iter()
            .any(|t| t == "parcel.reservation_expired")
            .then_some(())
    })
    .await;
    // Its body is what the OpenAPI document says.
    assert!(app
        .webhooks_match_the_document()
        .await
        .contains("parcel.reservation_expired"));
    // The driver can still deposit it by tracking number.
    let open = w
        .sim
        .deposit(
            &w.carrier,
            Identify::TrackingNumber("1Z999AA10000000003".into()),
            Size::S,
            None,
        )
        .await
        .unwrap();
    assert_eq!(open.deposit_id, id);
    let _ = (w.site, DoorChange::Opened);
}

db_test!(a_vacation_hold_extends_the_window with super::by_hand);

async fn a_vacation_hold_extends_the_window(app: TestApp) {
    let w = world(&app, 2).await;
    let back = chrono::Utc::now() + chrono::Duration::days(3);
    let (s, r) = app
        .post(
            "/api/v1/recipients",
            json!({"site_id": w.site, "name": "Bo", "phone": "+15550109999", "vacation_until": back.to_rfc3339()}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let away = w
        .sim
        .deposit(&w.carrier, Identify::Phone("5550109999".into()), Size::S, None)
        .await
        .unwrap();
    let home = w
        .sim
        .deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    // Past the default 72-hour window: two reminders and the expiry of the parcel at home.
    assert_eq!(
        app.advance(73 * HOUR).await,
        3,
        "only the parcel at home has deadlines due"
    );
    assert_eq!(state_of(&app, &home.deposit_id).await, "expired");
    assert_eq!(
        state_of(&app, &away.deposit_id).await,
        "deposited",
        "the hold keeps it waiting"
    );
    let (_, p) = app.get(&format!("/api/v1/parcels/{}", away.deposit_id)).await;
    let deadline = chrono::DateTime::parse_from_rfc3339(p["pickup_deadline"].as_str().unwrap()).unwrap();
    assert!(deadline > back, "the window starts when the recipient is back");
}
