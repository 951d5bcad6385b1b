//! Carrier integrations end to end: signed inbound callbacks against the real server, and
//! webhooks delivered to a real HTTP receiver, checked with an independent HMAC.

use std::time::Duration;

use awc::http::StatusCode;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use lockerhub::domain::Size;
use lockerhub::protocol::messages::Identify;
use lockerhub::protocol::ErrorCode;
use lockerhub::simulator::SimLocker;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::db_test;
use crate::helpers::{assert_error, eventually, header, read, HeldPort, Receiver, TestApp};

/// What a carrier's system holds: its API key and signing secret.
#[derive(Clone)]
pub(crate) struct Carrier {
    pub(crate) id: String,
    api_key: String,
    secret: String,
    pub(crate) courier_code: String,
}

pub(crate) async fn carrier(app: &TestApp, code: &str, webhook_url: Option<&str>) -> Carrier {
    let (s, v) = app
        .post(
            "/api/v1/carriers",
            json!({"code": code, "name": code, "webhook_url": webhook_url}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    Carrier {
        id: v["carrier"]["id"].as_str().unwrap().into(),
        api_key: v["secrets"]["api_key"].as_str().unwrap().into(),
        secret: v["secrets"]["webhook_secret"].as_str().unwrap().into(),
        courier_code: v["secrets"]["courier_code"].as_str().unwrap().into(),
    }
}

/// Standard Webhooks signing, written here independently of the server's code.
fn sign(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let key = STANDARD.decode(secret.trim_start_matches("whsec_")).unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Posts raw bytes with explicit auth headers.
async fn post_raw(
    app: &TestApp,
    path: &str,
    api_key: Option<&str>,
    id: &str,
    ts: i64,
    signature: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = app
        .client
        .post(app.url(path))
        .insert_header(("content-type", "application/json"))
        .insert_header(("webhook-id", id))
        .insert_header(("webhook-timestamp", ts.to_string()))
        .insert_header(("webhook-signature", signature));
    if let Some(k) = api_key {
        req = req.bearer_auth(k);
    }
    read(req.send_body(body).await.unwrap()).await
}

/// Sends a properly signed event.
pub(crate) async fn event(app: &TestApp, c: &Carrier, id: &str, body: Value) -> (StatusCode, Value) {
    let bytes = body.to_string().into_bytes();
    let ts = now();
    let sig = sign(&c.secret, id, ts, &bytes);
    post_raw(app, "/carrier/v1/events", Some(&c.api_key), id, ts, &sig, bytes).await
}

async fn carrier_get(app: &TestApp, c: &Carrier, path: &str) -> (StatusCode, Value) {
    let id = format!("get-{}", uuid::Uuid::new_v4());
    let ts = now();
    let resp = app
        .client
        .get(app.url(path))
        .bearer_auth(&c.api_key)
        .insert_header(("webhook-id", id.as_str()))
        .insert_header(("webhook-timestamp", ts.to_string()))
        .insert_header(("webhook-signature", sign(&c.secret, &id, ts, b"")))
        .send()
        .await
        .unwrap();
    read(resp).await
}

struct World {
    site: String,
    locker: String,
    credential: String,
    layout: Vec<(i32, Size)>,
}

async fn world(app: &TestApp, smalls: i32) -> World {
    let site = app.site().await;
    let layout = if smalls > 0 {
        json!([{"size": "S", "count": smalls}])
    } else {
        json!([])
    };
    let (locker, credential) = app.locker(&site, layout).await;
    app.recipient(&site, "Ann Lee", "+1 555 010 2030").await;
    World {
        site,
        locker,
        credential,
        layout: (1..=smalls).map(|n| (n, Size::S)).collect(),
    }
}

fn pre_advice(w: &World, tracking: &str) -> Value {
    json!({"type": "out_for_delivery", "data": {
        "tracking_number": tracking, "locker_id": w.locker,
        "recipient": {"phone": "+15550102030"}, "size": "S"}})
}

/// The carrier's delivered deliveries once `n` are recorded (the receiver sees a request a
/// moment before the server records the answer).
async fn delivered_log(app: &TestApp, carrier_id: &str, n: usize) -> Value {
    let path = format!("/api/v1/carriers/{carrier_id}/deliveries?status=delivered");
    eventually(Duration::from_secs(10), "deliveries recorded as delivered", || async {
        let (_, log) = app.get(&path).await;
        (log["items"].as_array().unwrap().len() >= n).then_some(log)
    })
    .await
}

async fn parcel_count(app: &TestApp) -> usize {
    let (_, v) = app.get("/api/v1/parcels?limit=200").await;
    v["items"].as_array().unwrap().len()
}

db_test!(
    pre_advice_reserves_and_webhooks_are_signed,
    replayed_events_change_nothing,
    bad_credentials_and_bodies_are_refused,
    carriers_cannot_see_each_others_parcels,
    cancel_releases_and_full_locker_fails_reservation,
    secret_rotation_keeps_both_valid,
    courier_code_identifies_the_carrier,
);

async fn pre_advice_reserves_and_webhooks_are_signed(app: TestApp) {
    let rx = Receiver::start(0).await;
    let ups = carrier(&app, "ups", Some(&rx.url)).await;
    let w = world(&app, 3).await;
    let (s, v) = event(&app, &ups, "evt-1", pre_advice(&w, "1Z999AA10000000001")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["state"], "reserved");
    let reserved = v["compartment"].as_i64().unwrap();
    assert!(v["reserved_until"].as_str().is_some());
    assert_eq!(app.statuses(&w.locker).await[&reserved], "reserved");
    // Its history: created expected, then reserved through the state machine.
    let (_, p) = app
        .get(&format!("/api/v1/parcels/{}", v["parcel_id"].as_str().unwrap()))
        .await;
    let history: Vec<(&str, &Value, &Value)> = p["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), &e["from_state"], &e["to_state"]))
        .collect();
    assert_eq!(
        history,
        [
            ("pre_advised", &Value::Null, &Value::Null),
            ("reserved", &json!("expected"), &json!("reserved"))
        ],
        "{p}"
    );
    assert_eq!(p["state"], "reserved");
    assert_eq!(p["reserved_until"], v["reserved_until"]);

    // The driver deposits by tracking number into the pre-assigned compartment.
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    sim.boot().await.unwrap();
    let open = sim
        .deposit(
            &ups.id,
            Identify::TrackingNumber("1Z999AA10000000001".into()),
            Size::S,
            None,
        )
        .await
        .unwrap();
    assert_eq!(i64::from(open.compartment), reserved);

    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "one webhook");
    let (headers, body) = &got[0];
    let id = header(headers, "webhook-id");
    let ts: i64 = header(headers, "webhook-timestamp").parse().unwrap();
    assert!((now() - ts).abs() < 60);
    let expected = sign(&ups.secret, id, ts, body);
    assert!(
        header(headers, "webhook-signature").split(' ').any(|s| s == expected),
        "signature verifies independently"
    );
    let payload: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(payload["type"], "parcel.delivered_to_locker");
    assert_eq!(payload["data"]["tracking_number"], "1Z999AA10000000001");
    assert_eq!(payload["data"]["locker_id"], w.locker.as_str());
    assert_eq!(payload["data"]["compartment"], reserved);
    // The delivery log shows it, under the same stable id.
    let log = delivered_log(&app, &ups.id, 1).await;
    assert_eq!(log["items"][0]["id"], id);
    assert_eq!(log["items"][0]["status"], "delivered");
    assert_eq!(log["items"][0]["last_status_code"], 204);
}

async fn replayed_events_change_nothing(app: TestApp) {
    let ups = carrier(&app, "ups", None).await;
    let w = world(&app, 3).await;
    let first = event(&app, &ups, "evt-1", pre_advice(&w, "1Z999AA10000000001")).await;
    assert_eq!(first.0, StatusCode::ACCEPTED);
    let before = app.statuses(&w.locker).await;
    let again = event(&app, &ups, "evt-1", pre_advice(&w, "1Z999AA10000000001")).await;
    assert_eq!(again, first, "same answer");
    assert_eq!(app.statuses(&w.locker).await, before, "no second reservation");
    assert_eq!(parcel_count(&app).await, 1);
    // The same tracking number under a new event id is a conflict, not a second parcel.
    let dup = event(&app, &ups, "evt-2", pre_advice(&w, "1Z999AA10000000001")).await;
    assert_error(&dup, StatusCode::CONFLICT, "already_pre_advised");
    // A refused event is refused the same way when replayed.
    let bad = json!({"type": "out_for_delivery", "data": {"tracking_number": "1Z999AA10000000002",
        "locker_id": w.locker, "recipient": {"phone": "+19990000000"}, "size": "S"}});
    let r1 = event(&app, &ups, "evt-3", bad.clone()).await;
    assert_error(&r1, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    // Now the recipient exists, but the replay of evt-3 still gets the first answer.
    app.recipient(&w.site, "Zed", "+19990000000").await;
    assert_eq!(event(&app, &ups, "evt-3", bad).await, r1);
    assert_eq!(parcel_count(&app).await, 1);
    // A cancel replayed is one cancel.
    let cancel = json!({"type": "cancel", "data": {"tracking_number": "1Z999AA10000000001"}});
    let c1 = event(&app, &ups, "evt-4", cancel.clone()).await;
    assert_eq!(c1.0, StatusCode::OK, "{}", c1.1);
    assert_eq!(event(&app, &ups, "evt-4", cancel).await, c1);
}

async fn bad_credentials_and_bodies_are_refused(app: TestApp) {
    let ups = carrier(&app, "ups", None).await;
    let w = world(&app, 2).await;
    let body = pre_advice(&w, "1Z999AA10000000001").to_string().into_bytes();
    let ts = now();
    let good = sign(&ups.secret, "evt-x", ts, &body);
    let path = "/carrier/v1/events";
    // Unknown carrier, wrong key, no key.
    for key in [Some("lhc_nope"), None] {
        let got = post_raw(&app, path, key, "evt-x", ts, &good, body.clone()).await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // A signature by another key, over another body, with another id.
    let other = STANDARD.encode([9u8; 32]);
    for sig in [
        sign(&format!("whsec_{other}"), "evt-x", ts, &body),
        sign(&ups.secret, "evt-x", ts, b"{}"),
        sign(&ups.secret, "evt-y", ts, &body),
        "v1,garbage".to_string(),
        String::new(),
    ] {
        let got = post_raw(&app, path, Some(&ups.api_key), "evt-x", ts, &sig, body.clone()).await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // Stale and future timestamps, beyond the 5-minute window. Taken from the clock right
    // before each request, with 10 s to spare: a `ts` read earlier in the test, a second from
    // the edge, was accepted once the loaded machine had spent that second (a flake seen in
    // the 5-run stability check).
    for skew in [-310, 310, -3600] {
        let t = now() + skew;
        let sig = sign(&ups.secret, "evt-x", t, &body);
        let got = post_raw(&app, path, Some(&ups.api_key), "evt-x", t, &sig, body.clone()).await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // Well signed but malformed: bad JSON, unknown type, wrong types, bad fields.
    for (raw, status, code) in [
        (b"{not json".to_vec(), StatusCode::BAD_REQUEST, "malformed_json"),
        (br#"{"type": "teleport", "data": {}}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_body"),
        (br#"{"type": "out_for_delivery", "data": {"tracking_number": 5}}"#.to_vec(), StatusCode::BAD_REQUEST, "invalid_body"),
        (json!({"type": "out_for_delivery", "data": {"tracking_number": "1Z 9", "locker_id": w.locker, "recipient": {"phone": "5550102030"}, "size": "S"}}).to_string().into_bytes(), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
        (json!({"type": "out_for_delivery", "data": {"tracking_number": "1Z999", "locker_id": "nope", "recipient": {"phone": "5550102030"}, "size": "S"}}).to_string().into_bytes(), StatusCode::NOT_FOUND, "not_found"),
        (json!({"type": "out_for_delivery", "data": {"tracking_number": "1Z999", "site_id": w.site, "recipient": {}, "size": "S"}}).to_string().into_bytes(), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
    ] {
        let id = format!("evt-{}", uuid::Uuid::new_v4());
        let t = now();
        let sig = sign(&ups.secret, &id, t, &raw);
        let got = post_raw(&app, path, Some(&ups.api_key), &id, t, &sig, raw.clone()).await;
        assert_error(&got, status, code);
    }
    // Oversize body.
    let big = vec![b' '; app.settings.max_body_bytes + 100];
    let sig = sign(&ups.secret, "evt-big", ts, &big);
    let got = post_raw(&app, path, Some(&ups.api_key), "evt-big", ts, &sig, big).await;
    assert_eq!(got.0, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(parcel_count(&app).await, 0, "nothing changed");
    assert!(app.statuses(&w.locker).await.values().all(|s| s == "free"));
}

async fn carriers_cannot_see_each_others_parcels(app: TestApp) {
    let ups = carrier(&app, "ups", None).await;
    let dhl = carrier(&app, "dhl", None).await;
    let w = world(&app, 2).await;
    assert_eq!(
        event(&app, &ups, "u-1", pre_advice(&w, "1Z999AA10000000001")).await.0,
        StatusCode::ACCEPTED
    );
    let (s, mine) = carrier_get(&app, &ups, "/carrier/v1/parcels/1Z999AA10000000001").await;
    assert_eq!(s, StatusCode::OK, "{mine}");
    assert_eq!(mine["parcel"]["state"], "reserved");
    assert!(mine["events"].as_array().unwrap().len() >= 2);
    // DHL can neither see nor cancel UPS's parcel.
    assert_error(
        &carrier_get(&app, &dhl, "/carrier/v1/parcels/1Z999AA10000000001").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let cancel = json!({"type": "cancel", "data": {"tracking_number": "1Z999AA10000000001"}});
    assert_error(
        &event(&app, &dhl, "d-1", cancel).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (_, still) = carrier_get(&app, &ups, "/carrier/v1/parcels/1Z999AA10000000001").await;
    assert_eq!(still["parcel"]["state"], "reserved");
    // The same tracking number may exist at two carriers independently.
    assert_eq!(
        event(&app, &dhl, "d-2", pre_advice(&w, "1Z999AA10000000001")).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(parcel_count(&app).await, 2);
    // An unsigned read is refused.
    let resp = app
        .client
        .get(app.url("/carrier/v1/parcels/1Z999AA10000000001"))
        .bearer_auth(&ups.api_key)
        .send()
        .await
        .unwrap();
    assert_error(&read(resp).await, StatusCode::UNAUTHORIZED, "unauthorized");
}

async fn cancel_releases_and_full_locker_fails_reservation(app: TestApp) {
    let rx = Receiver::start(0).await;
    let ups = carrier(&app, "ups", Some(&rx.url)).await;
    let w = world(&app, 1).await;
    let (_, first) = event(&app, &ups, "e1", pre_advice(&w, "1Z999AA10000000001")).await;
    assert_eq!(first["compartment"], 1);
    let (s, second) = event(&app, &ups, "e2", pre_advice(&w, "1Z999AA10000000002")).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(
        second["state"], "expected",
        "no room: the parcel is expected without a compartment"
    );
    assert!(second["compartment"].is_null());
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    let payload: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(
        payload["type"], "parcel.reservation_failed",
        "so the carrier can reroute"
    );
    assert_eq!(payload["data"]["tracking_number"], "1Z999AA10000000002");
    assert_eq!(
        payload["data"]["reason_code"], "locker_full",
        "the same code a pre-check gives"
    );
    assert!(app
        .webhooks_match_the_document()
        .await
        .contains("parcel.reservation_failed"));

    let (s, c) = event(
        &app,
        &ups,
        "e3",
        json!({"type": "redirect", "data": {"tracking_number": "1Z999AA10000000001", "reason": "to store"}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["released_compartment"], 1);
    assert_eq!(app.statuses(&w.locker).await[&1], "free");
    assert_error(
        &event(
            &app,
            &ups,
            "e4",
            json!({"type": "cancel", "data": {"tracking_number": "1Z999AA10000000001"}}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

/// Webhook retries an app-clock hour apart: they go out when the test moves the clock past
/// their backoff ([`retry_after`]), never on a real-time timer.
const RETRY_BASE: Duration = Duration::from_secs(600);

fn retry_by_hand(s: &mut lockerhub::config::Settings) {
    s.webhook_retry_base_ms = RETRY_BASE.as_millis() as u64;
}

/// Waits until the carrier's only delivery has `n` attempts recorded (so its retry's due time
/// is committed), then moves the app clock past that retry's longest backoff (the base,
/// doubled per attempt, plus 20% jitter).
async fn retry_after(app: &TestApp, carrier_id: &str, n: u32) {
    let path = format!("/api/v1/carriers/{carrier_id}/deliveries");
    eventually(Duration::from_secs(10), &format!("attempt {n} recorded"), || async {
        let (_, log) = app.get(&path).await;
        (log["items"][0]["attempts"] == n).then_some(())
    })
    .await;
    app.advance_outboxes(RETRY_BASE.mul_f64(1.2) * 2u32.pow(n - 1)).await;
}

db_test!(failing_receiver_gets_exactly_one_success with super::retry_by_hand);

async fn failing_receiver_gets_exactly_one_success(app: TestApp) {
    let rx = Receiver::start(3).await;
    let ups = carrier(&app, "ups", Some(&rx.url)).await;
    let w = world(&app, 1).await;
    event(
        &app,
        &ups,
        "e1",
        json!({"type": "out_for_delivery", "data": {"tracking_number": "1Z999AA10000000009",
        "locker_id": w.locker, "recipient": {"phone": "5550102030"}, "size": "XL"}}),
    )
    .await;
    for n in 1..=3 {
        retry_after(&app, &ups.id, n).await;
    }
    let got = rx.wait_for(4, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 4, "three failures, then the success");
    let ids: std::collections::HashSet<&str> = got.iter().map(|(h, _)| header(h, "webhook-id")).collect();
    assert_eq!(ids.len(), 1, "every attempt carries the same event id");
    let log = delivered_log(&app, &ups.id, 1).await;
    // Recorded as delivered: no further attempt can start, so the count is final.
    assert_eq!(rx.got.lock().unwrap().len(), 4, "nothing more after the success");
    let d = &log["items"][0];
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["attempts"], 4);
    let codes: Vec<i64> = d["attempts_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![500, 500, 500, 204]);
}

db_test!(dead_letters_and_redelivery with |s| {
    super::retry_by_hand(s);
    s.webhook_max_attempts = 2;
});

async fn dead_letters_and_redelivery(app: TestApp) {
    let rx = Receiver::start(100).await;
    let ups = carrier(&app, "ups", Some(&rx.url)).await;
    let w = world(&app, 0).await;
    event(
        &app,
        &ups,
        "e1",
        json!({"type": "out_for_delivery", "data": {"tracking_number": "1Z999AA10000000009",
        "locker_id": w.locker, "recipient": {"phone": "5550102030"}, "size": "S"}}),
    )
    .await;
    retry_after(&app, &ups.id, 1).await;
    let dead = crate::helpers::eventually(Duration::from_secs(10), "the delivery is dead-lettered", || async {
        let (_, log) = app
            .get(&format!("/api/v1/carriers/{}/deliveries?status=dead", ups.id))
            .await;
        log["items"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(dead["status"], "dead");
    assert_eq!(dead["attempts"], 2);
    assert!(dead["last_error"].as_str().unwrap().contains("500"));
    assert_eq!(rx.got.lock().unwrap().len(), 2);
    rx.fail_next.store(0, std::sync::atomic::Ordering::SeqCst);
    let (s, v) = app
        .post(&format!("/api/v1/carriers/{}/redeliver", ups.id), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["requeued"], 1);
    assert_eq!(rx.wait_for(3, Duration::from_secs(10)).await.len(), 3);
    assert_error(
        &app.post(
            &format!("/api/v1/carriers/{}/deliveries/nope/redeliver", ups.id),
            json!({}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.get(&format!("/api/v1/carriers/{}/deliveries?status=lost", ups.id))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
}

db_test!(return_collection_at_the_kiosk with |s| {
    // Real hours and no scan: the test moves the clock past the 20-hour window itself.
    s.dwell_hours = 20;
    s.reminder_offsets_hours = vec![];
    s.deadline_scan_ms = 3_600_000;
});

async fn return_collection_at_the_kiosk(app: TestApp) {
    let rx = Receiver::start(0).await;
    let ups = carrier(&app, "ups", Some(&rx.url)).await;
    let w = world(&app, 2).await;
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    sim.boot().await.unwrap();
    let open = sim
        .deposit(
            &ups.id,
            Identify::Phone("5550102030".into()),
            Size::S,
            Some("1Z999AA10000000042"),
        )
        .await
        .unwrap();
    // Not expired yet: no collection.
    let collect = json!({"type": "return_collection", "data": {"tracking_number": "1Z999AA10000000042"}});
    assert_error(
        &event(&app, &ups, "r0", collect.clone()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // The dwell window (20 hours) closes and the deadline actor expires the parcel.
    assert_eq!(app.advance(Duration::from_secs(19 * 3600)).await, 0, "not due yet");
    assert_eq!(app.advance(Duration::from_secs(2 * 3600)).await, 1, "the expiry");
    let (_, p) = app.get(&format!("/api/v1/parcels/{}", open.deposit_id)).await;
    assert_eq!(p["state"], "expired");
    let (s, v) = event(&app, &ups, "r1", collect).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let code = v["collection_code"].as_str().unwrap().to_string();
    assert_eq!(v["compartment"], open.compartment);
    // The recipient's pickup code no longer... still works until collected, but a wrong collection code is refused.
    let e = sim
        .call("CollectReturn", json!({"collection_code": "00000000"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidCode));
    let opened = sim
        .call("CollectReturn", json!({"collection_code": code}))
        .await
        .unwrap();
    assert_eq!(opened["compartment"], open.compartment);
    sim.door(open.compartment, lockerhub::protocol::messages::DoorChange::Opened)
        .await
        .unwrap();
    sim.tamper(open.compartment, true, false);
    assert_eq!(
        sim.door(open.compartment, lockerhub::protocol::messages::DoorChange::Closed)
            .await
            .unwrap(),
        "returned"
    );
    let (_, p) = app.get(&format!("/api/v1/parcels/{}", open.deposit_id)).await;
    assert_eq!(p["state"], "returned");
    assert_eq!(app.statuses(&w.locker).await[&i64::from(open.compartment)], "free");
    let got = rx.wait_for(3, Duration::from_secs(10)).await;
    let types: Vec<String> = got
        .iter()
        .map(|(_, b)| {
            serde_json::from_slice::<Value>(b).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        types,
        vec![
            "parcel.delivered_to_locker",
            "parcel.return_requested",
            "parcel.returned"
        ]
    );
    // What the carrier received is what the OpenAPI document says it gets.
    let (_, doc) = app.get("/api-docs/openapi.json").await;
    for (_, body) in &got {
        let body: Value = serde_json::from_slice(body).unwrap();
        let name = lockerhub::http::webhook_docs::schema_name(body["type"].as_str().unwrap());
        crate::helpers::conforms(&doc, &doc["components"]["schemas"][&name], &body, "").unwrap();
    }
    assert_eq!(app.webhooks_match_the_document().await.len(), 3);
}

async fn secret_rotation_keeps_both_valid(app: TestApp) {
    let rx = Receiver::start(0).await;
    let old = carrier(&app, "ups", Some(&rx.url)).await;
    let w = world(&app, 2).await;
    let (s, v) = app
        .post(&format!("/api/v1/carriers/{}/webhook-secret", old.id), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let new = Carrier {
        secret: v["webhook_secret"].as_str().unwrap().into(),
        ..old.clone()
    };
    assert_ne!(new.secret, old.secret);
    // Inbound: both secrets are accepted during the overlap.
    assert_eq!(
        event(&app, &old, "a", pre_advice(&w, "1Z999AA10000000001")).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        event(&app, &new, "b", pre_advice(&w, "1Z999AA10000000002")).await.0,
        StatusCode::ACCEPTED
    );
    // Outbound: signed with both, so a receiver on either secret verifies.
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    sim.boot().await.unwrap();
    sim.deposit(
        &old.id,
        Identify::TrackingNumber("1Z999AA10000000001".into()),
        Size::S,
        None,
    )
    .await
    .unwrap();
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    let (h, body) = &got[0];
    let (id, ts) = (
        header(h, "webhook-id"),
        header(h, "webhook-timestamp").parse::<i64>().unwrap(),
    );
    let sigs: Vec<&str> = header(h, "webhook-signature").split(' ').collect();
    assert!(sigs.contains(&sign(&old.secret, id, ts, body).as_str()));
    assert!(sigs.contains(&sign(&new.secret, id, ts, body).as_str()));
}

async fn courier_code_identifies_the_carrier(app: TestApp) {
    let ups = carrier(&app, "ups", None).await;
    let w = world(&app, 1).await;
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    sim.boot().await.unwrap();
    let v = sim
        .call("IdentifyCourier", json!({"courier_code": ups.courier_code}))
        .await
        .unwrap();
    assert_eq!(v["carrier"]["id"], ups.id.as_str());
    let e = sim
        .call("IdentifyCourier", json!({"courier_code": "WRONGCODE123"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidCode));
}

/// Events still undelivered when the server stops are delivered after it restarts.
#[actix_web::test]
async fn pending_webhooks_survive_a_restart_sqlite() {
    pending_webhooks_survive_a_restart(TestApp::sqlite().await).await;
    crate::helpers::stop_servers().await
}

#[actix_web::test]
#[cfg_attr(not(postgres_tests), ignore = "PostgreSQL: set TEST_DATABASE_URL to run")]
async fn pending_webhooks_survive_a_restart_postgres() {
    pending_webhooks_survive_a_restart(TestApp::postgres().await).await;
    crate::helpers::stop_servers().await
}

async fn pending_webhooks_survive_a_restart(app: TestApp) {
    let held = HeldPort::new();
    let port = held.port();
    let url = format!("http://127.0.0.1:{port}/hooks");
    let ups = carrier(&app, "ups", Some(&url)).await;
    let w = world(&app, 0).await;
    for i in 0..3 {
        let (s, _) = event(
            &app,
            &ups,
            &format!("e{i}"),
            pre_advice(&w, &format!("1Z999AA1000000000{i}")),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    // Nobody listens yet: each has failed an attempt before the restart.
    eventually(Duration::from_secs(10), "a failed attempt for each webhook", || async {
        let (_, log) = app.get(&format!("/api/v1/carriers/{}/deliveries", ups.id)).await;
        let items = log["items"].as_array().unwrap().clone();
        (items.len() == 3
            && items
                .iter()
                .all(|d| d["status"] == "pending" && d["attempts"].as_i64() >= Some(1)))
        .then_some(())
    })
    .await;
    let app = app.restart().await;
    let rx = Receiver::start_on(held.release(), 0).await;
    // The restarted app's clock starts from the wall clock again: move it past the retries.
    app.advance_outboxes(Duration::from_secs(2 * 3600)).await;
    let got = rx.wait_for(3, Duration::from_secs(20)).await;
    let mut tracking: Vec<String> = got
        .iter()
        .map(|(_, b)| {
            serde_json::from_slice::<Value>(b).unwrap()["data"]["tracking_number"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    tracking.sort();
    tracking.dedup();
    assert_eq!(
        tracking,
        vec!["1Z999AA10000000000", "1Z999AA10000000001", "1Z999AA10000000002"]
    );
    let log = delivered_log(&app, &ups.id, 3).await;
    assert_eq!(log["items"].as_array().unwrap().len(), 3);
    rx.stop().await;
}

/// The hub reads the carriers at start to resume their pending webhooks. A database it
/// cannot read yet is tried again with backoff, instead of leaving them undelivered until the
/// next restart. (SQLite only: renaming the table is the fault injected.)
#[actix_web::test]
async fn carriers_unreadable_at_start_are_retried() {
    let app = TestApp::sqlite().await;
    let held = HeldPort::new();
    let port = held.port();
    let url = format!("http://127.0.0.1:{port}/hooks");
    let ups = carrier(&app, "ups", Some(&url)).await;
    let w = world(&app, 0).await;
    // A full locker: the pre-advice queues `parcel.reservation_failed`, and nobody listens yet.
    let (s, _) = event(&app, &ups, "e1", pre_advice(&w, "1Z999AA10000000001")).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let path = app
        .settings
        .database_location()
        .trim_start_matches("sqlite://")
        .to_string();
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    // The app may still be writing (the failed webhook attempt): wait for its lock like the
    // app's own connections do, instead of failing with "database is locked".
    let raw = || {
        let mut c = diesel::SqliteConnection::establish(&path).expect("raw connection");
        c.batch_execute("PRAGMA busy_timeout = 10000").expect("busy timeout");
        c
    };
    raw()
        .batch_execute("PRAGMA foreign_keys = OFF; ALTER TABLE carriers RENAME TO carriers_away")
        .unwrap();
    let app = app.restart().await;
    let read = app
        .db
        .run(|c| Ok(c.batch_execute("SELECT id FROM carriers LIMIT 1")?))
        .await;
    assert!(read.is_err(), "the carriers table is unreadable");
    raw()
        .batch_execute("PRAGMA foreign_keys = OFF; ALTER TABLE carriers_away RENAME TO carriers")
        .unwrap();
    let rx = Receiver::start_on(held.release(), 0).await;
    // Past the failed attempt's retry: the carrier actor, once the hub can start it, finds the
    // webhook due.
    app.advance_outboxes(Duration::from_secs(2 * 3600)).await;
    let got = rx.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(
        got.len(),
        1,
        "the pending webhook went out once the carriers could be read"
    );
    let payload: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(payload["type"], "parcel.reservation_failed");
    crate::helpers::stop_servers().await
}

/// Messages that reach the hub after `Shutdown` (a request racing the server's stop) are
/// answered; none panics the process.
#[actix_web::test]
async fn messages_after_shutdown_do_not_panic() {
    use lockerhub::actors::messages::{CarrierChanged, GetLocker, KickCarriers, Shutdown};
    let app = TestApp::sqlite().await;
    let ups = carrier(&app, "ups", None).await;
    app.hub.send(Shutdown).await.expect("shutdown");
    let locker = app
        .hub
        .send(GetLocker {
            locker_id: "no-such-locker".into(),
        })
        .await;
    assert!(locker.is_ok(), "the hub answers after Shutdown");
    app.hub
        .send(CarrierChanged {
            carrier_id: ups.id.clone(),
        })
        .await
        .expect("carrier changed after Shutdown");
    app.hub
        .send(KickCarriers { carrier_id: None })
        .await
        .expect("kick after Shutdown");
    let (s, _) = app.get("/healthz").await;
    assert_eq!(s, StatusCode::OK, "the process is still up");
    crate::helpers::stop_servers().await
}

db_test!(a_slow_carrier_does_not_delay_another);

async fn a_slow_carrier_does_not_delay_another(app: TestApp) {
    let slow_rx = Receiver::start(0).await;
    // The slow receiver answers nothing until the test says so.
    slow_rx.hold();
    let fast_rx = Receiver::start(0).await;
    let slow = carrier(&app, "slow", Some(&slow_rx.url)).await;
    let fast = carrier(&app, "fast", Some(&fast_rx.url)).await;
    let w = world(&app, 0).await;
    // Many events for the slow carrier first: its deliveries pile up behind its receiver.
    for i in 0..8 {
        let (s, _) = event(
            &app,
            &slow,
            &format!("s{i}"),
            pre_advice(&w, &format!("1Z999AA1000000001{i}")),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    // Wait until the slow receiver holds a request: the slow carrier is now blocked on it.
    assert!(!slow_rx.wait_for(1, Duration::from_secs(10)).await.is_empty());
    let (s, _) = event(&app, &fast, "f0", pre_advice(&w, "1Z999AA10000000099")).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let got = fast_rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    // Causal, not timed: the fast carrier's webhook arrived while every delivery of the slow
    // carrier was still waiting on its held receiver.
    let (_, slow_log) = app
        .get(&format!("/api/v1/carriers/{}/deliveries?status=delivered", slow.id))
        .await;
    assert_eq!(
        slow_log["items"].as_array().unwrap().len(),
        0,
        "the slow carrier has delivered nothing yet"
    );
    // Released, the slow carrier's backlog drains too.
    slow_rx.release();
    crate::helpers::eventually(
        Duration::from_secs(20),
        "the slow carrier's 8 webhooks delivered",
        || async {
            let (_, log) = app
                .get(&format!(
                    "/api/v1/carriers/{}/deliveries?status=delivered&limit=200",
                    slow.id
                ))
                .await;
            (log["items"].as_array().unwrap().len() >= 8).then_some(())
        },
    )
    .await;
}

/// A signed POST of `body` to a carrier API path, with a fresh `webhook-id`.
async fn signed_post(app: &TestApp, c: &Carrier, path: &str, body: Value) -> (StatusCode, Value) {
    let id = format!("req-{}", uuid::Uuid::new_v4());
    let bytes = body.to_string().into_bytes();
    let ts = now();
    let sig = sign(&c.secret, &id, ts, &bytes);
    post_raw(app, path, Some(&c.api_key), &id, ts, &sig, bytes).await
}

db_test!(a_precheck_answers_with_a_stable_reason_and_reserves_nothing with |s| {
    // A locker that went offline is unavailable at once (the default waits an hour).
    s.booking_offline_grace_secs = 0;
});

async fn a_precheck_answers_with_a_stable_reason_and_reserves_nothing(app: TestApp) {
    let ups = carrier(&app, "ups", None).await;
    let w = world(&app, 2).await;
    // Online: bookable (offline, with the grace of 0 s here, it would not be).
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    sim.boot().await.unwrap();
    let check = |body: Value| {
        let (app, ups) = (&app, &ups);
        async move {
            let (s, v) = signed_post(app, ups, "/carrier/v1/precheck", body).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v
        }
    };
    let here = |extra: Value| {
        let mut b = json!({"locker_id": w.locker});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    let v = check(here(json!({"size": "S"}))).await;
    assert_eq!(v["available"], true, "{v}");
    assert_eq!(v["locker_id"], w.locker.as_str());
    assert_eq!(v["size"], "S");
    // By dimensions and weight, through the locker's size classes (the defaults: S is 90 mm high).
    let parcel = |l: u32, wd: u32, h: u32, g: u32| json!({"dimensions": {"length_mm": l, "width_mm": wd, "height_mm": h}, "weight_g": g});
    assert_eq!(check(here(parcel(300, 200, 80, 2_000))).await["size"], "S");
    let reason = |v: Value| v["reason"].as_str().unwrap_or("available").to_string();
    assert_eq!(
        reason(check(here(parcel(300, 200, 150, 2_000))).await),
        "no_fitting_compartment"
    );
    assert_eq!(
        reason(check(here(json!({"size": "M"}))).await),
        "no_fitting_compartment"
    );
    assert_eq!(
        reason(check(here(parcel(900, 200, 80, 2_000))).await),
        "dimensions_exceed"
    );
    assert_eq!(
        reason(check(here(parcel(300, 200, 80, 40_000))).await),
        "weight_exceeds"
    );
    assert_eq!(
        reason(check(here(json!({"size": "S", "recipient": {"phone": "+15559999999"}}))).await),
        "recipient_invalid"
    );
    // Nothing was reserved by asking.
    let statuses = app.statuses(&w.locker).await;
    assert!(statuses.values().all(|s| s == "free"), "{statuses:?}");

    // An administrator sets the locker's size classes: S is now 160 mm high.
    let classes = |s_height: u32, m_height: u32| {
        json!({
            "S": {"inside": {"length_mm": 640, "width_mm": 380, "height_mm": s_height}, "max_weight_g": 10000},
            "M": {"inside": {"length_mm": 640, "width_mm": 380.0, "height_mm": m_height}, "max_weight_g": 15000},
            "L": {"inside": {"length_mm": 640, "width_mm": 380, "height_mm": 410}, "max_weight_g": 25000},
            "XL": {"inside": {"length_mm": 640, "width_mm": 500, "height_mm": 610}, "max_weight_g": 30000}})
    };
    let path = format!("/api/v1/lockers/{}/size-classes", w.locker);
    let (s, v) = app.get(&path).await;
    assert_eq!((s, v["default"].clone()), (StatusCode::OK, json!(true)), "{v}");
    let (s, v) = app.put(&path, classes(160, 300)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["default"], false);
    let (_, now_set) = app.get(&path).await;
    assert!(
        now_set["S"]["inside"]["height_mm"] == 160 && now_set["M"]["inside"]["width_mm"] == 380,
        "{now_set}"
    );
    // Every size at once: one left out is refused.
    let mut partial = classes(160, 300);
    partial.as_object_mut().unwrap().remove("XL");
    assert_eq!(app.put(&path, partial).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(check(here(parcel(300, 200, 150, 2_000))).await["size"], "S");
    // A larger size smaller than a smaller one, or a bound broken: refused, nothing changes.
    for bad in [classes(160, 100), classes(0, 300)] {
        assert_error(
            &app.put(&path, bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    let mut unknown = classes(160, 300);
    unknown["XXL"] = unknown["M"].clone();
    assert_eq!(app.put(&path, unknown).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(app.get(&path).await.1["M"]["inside"]["height_mm"], 300);

    // A booking by dimensions and weight takes the size they map to; one that fits no
    // compartment here is refused with the pre-check's reason, and so is one giving both.
    let by_measure = |t: &str, extra: Value| {
        let mut b = pre_advice(&w, t);
        let data = b["data"].as_object_mut().unwrap();
        data.remove("size");
        data.extend(extra.as_object().unwrap().clone());
        b
    };
    let (s, v) = event(
        &app,
        &ups,
        "m-1",
        by_measure("1Z999AA10000000071", parcel(300, 200, 150, 2_000)),
    )
    .await;
    assert_eq!(
        (s, v["state"].clone()),
        (StatusCode::ACCEPTED, json!("reserved")),
        "{v}"
    );
    let booked = parcel_view(&app, &ups, "1Z999AA10000000071").await;
    assert_eq!(booked["parcel"]["size"], "S", "150 mm fits S as the locker now sets it");
    assert_error(
        &event(
            &app,
            &ups,
            "m-2",
            by_measure("1Z999AA10000000079", parcel(900, 200, 80, 2_000)),
        )
        .await,
        StatusCode::CONFLICT,
        "dimensions_exceed",
    );
    let mut both = by_measure("1Z999AA10000000079", parcel(300, 200, 80, 2_000));
    both["data"]["size"] = json!("S");
    assert_error(
        &event(&app, &ups, "m-3", both).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    // Both compartments reserved: full.
    let (s, v) = event(&app, &ups, "fill-1", pre_advice(&w, "1Z999AA10000000072")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(reason(check(here(json!({"size": "S"}))).await), "locker_full");
    // By site: the only locker's reason.
    assert_eq!(
        reason(check(json!({"site_id": w.site, "size": "S"})).await),
        "locker_full"
    );

    // Bad input: clear 4xx answers.
    for bad in [
        here(json!({})),
        here(json!({"size": "S", "dimensions": {"length_mm": 1, "width_mm": 1, "height_mm": 1}, "weight_g": 1})),
        here(json!({"dimensions": {"length_mm": 1, "width_mm": 1, "height_mm": 1}})),
        here(parcel(0, 200, 80, 2_000)),
        here(parcel(300, 200, 80, 2_000_000)),
        json!({"size": "S"}),
    ] {
        let (s, v) = signed_post(&app, &ups, "/carrier/v1/precheck", bad.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {v}");
    }
    let (s, _) = signed_post(
        &app,
        &ups,
        "/carrier/v1/precheck",
        json!({"locker_id": "nope", "size": "S"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = signed_post(
        &app,
        &ups,
        "/carrier/v1/precheck",
        json!({"locker_id": w.locker, "size": "Q"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let unsigned = post_raw(
        &app,
        "/carrier/v1/precheck",
        Some(&ups.api_key),
        "x",
        now(),
        "v1,AAAA",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(unsigned.0, StatusCode::UNAUTHORIZED);

    // A locker that went away is unavailable (grace 0 here), to a pre-check and to a booking;
    // so is a deactivated one.
    sim.disconnect().await;
    crate::device::disconnected(&app, &w.locker, "the locker shows as offline").await;
    assert_eq!(reason(check(here(json!({"size": "S"}))).await), "locker_unavailable");
    assert_error(
        &event(&app, &ups, "gone", pre_advice(&w, "1Z999AA10000000073")).await,
        StatusCode::CONFLICT,
        "locker_unavailable",
    );
    let (s, _) = app
        .patch(&format!("/api/v1/lockers/{}", w.locker), json!({"active": false}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(reason(check(here(json!({"size": "S"}))).await), "locker_unavailable");
    assert_error(
        &event(&app, &ups, "inactive", pre_advice(&w, "1Z999AA10000000074")).await,
        StatusCode::CONFLICT,
        "locker_unavailable",
    );
}

db_test!(quotas_limit_a_carrier_in_the_shared_pool);

async fn quotas_limit_a_carrier_in_the_shared_pool(app: TestApp) {
    let ups = carrier(&app, "ups", None).await;
    let dhl = carrier(&app, "dhl", None).await;
    let w = world(&app, 3).await;
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    sim.boot().await.unwrap();
    let quota_path = format!("/api/v1/lockers/{}/quotas/{}", w.locker, ups.id);
    let (s, v) = app.put(&quota_path, json!({"S": 1})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["limits"], json!({"S": 1}));
    assert_eq!(v["in_use"], json!({}));
    let (s, v) = event(&app, &ups, "q1", pre_advice(&w, "1Z999AA10000000081")).await;
    assert_eq!(
        (s, v["state"].clone()),
        (StatusCode::ACCEPTED, json!("reserved")),
        "{v}"
    );
    let precheck = |c: &Carrier| {
        let (app, c, locker) = (&app, c.clone(), w.locker.clone());
        async move {
            let (s, v) = signed_post(
                app,
                &c,
                "/carrier/v1/precheck",
                json!({"locker_id": locker, "size": "S"}),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v["reason"].as_str().unwrap_or("available").to_string()
        }
    };
    // UPS has used its one S; DHL has no quota.
    assert_eq!(precheck(&ups).await, "over_quota");
    assert_eq!(precheck(&dhl).await, "available");
    // A second UPS pre-advice: no reservation, and the carrier is told why.
    let (s, v) = event(&app, &ups, "q2", pre_advice(&w, "1Z999AA10000000082")).await;
    assert_eq!(
        (s, v["state"].clone()),
        (StatusCode::ACCEPTED, json!("expected")),
        "{v}"
    );
    let failed = app.webhooks_for(v["parcel_id"].as_str().unwrap()).await;
    assert_eq!(failed[0].0, "parcel.reservation_failed");
    assert_eq!(failed[0].1["data"]["reason_code"], "over_quota");
    // At the kiosk, a UPS walk-up deposit is refused with the reason; DHL's goes in.
    let e = sim
        .start_deposit(&ups.id, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NoCompartment), "{e:?}");
    assert!(format!("{e:?}").contains("over_quota"), "{e:?}");
    sim.deposit(&dhl.id, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .expect("DHL has no quota");
    // UPS's driver deposits the parcel it reserved: the reservation already counts.
    sim.deposit(
        &ups.id,
        Identify::TrackingNumber("1Z999AA10000000081".into()),
        Size::S,
        None,
    )
    .await
    .expect("a reserved parcel goes in at quota");
    // A quota below what the carrier holds is refused with the count, and changes nothing.
    let (s, v) = app.put(&quota_path, json!({"S": 0})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "quota_below_use");
    assert_eq!(v["details"]["in_use"]["S"], 1);
    let (_, list) = app.get(&format!("/api/v1/lockers/{}/quotas", w.locker)).await;
    assert_eq!(
        list,
        json!([{"carrier_id": ups.id, "limits": {"S": 1}, "in_use": {"S": 1}}])
    );
    // Raised at runtime: the next allocation follows it.
    let (s, _) = app.put(&quota_path, json!({"S": 2.0})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(precheck(&ups).await, "available");
    // No sizes: no quota.
    let (s, v) = app.put(&quota_path, json!({})).await;
    assert_eq!((s, v["limits"].clone()), (StatusCode::OK, json!({})));
    assert_eq!(
        app.get(&format!("/api/v1/lockers/{}/quotas", w.locker)).await.1,
        json!([])
    );
    // Bad input changes nothing.
    for bad in [json!({"S": -1}), json!({"XXL": 1}), json!([1]), json!({"S": "two"})] {
        let (s, v) = app.put(&quota_path, bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }
    assert_eq!(
        app.put(&quota_path, json!({"S": 10_001})).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (s, _) = app
        .put(&format!("/api/v1/lockers/{}/quotas/nope", w.locker), json!({"S": 1}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&format!("/api/v1/lockers/{}/quotas", w.locker)).await.1,
        json!([])
    );
    assert!(app
        .webhooks_match_the_document()
        .await
        .contains("parcel.reservation_failed"));
}

/// A carrier's signed read of its parcel.
async fn parcel_view(app: &TestApp, c: &Carrier, tracking: &str) -> Value {
    let (s, v) = carrier_get(app, c, &format!("/carrier/v1/parcels/{tracking}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

db_test!(a_locker_can_take_only_some_carriers);

async fn a_locker_can_take_only_some_carriers(app: TestApp) {
    let ups = carrier(&app, "ups", None).await;
    let dhl = carrier(&app, "dhl", None).await;
    let w = world(&app, 2).await;
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    sim.boot().await.unwrap();
    let path = format!("/api/v1/lockers/{}/carriers", w.locker);
    assert_eq!(
        app.get(&path).await.1,
        json!({"carriers": []}),
        "every carrier by default"
    );
    let (s, v) = app.put(&path, json!({"carriers": [dhl.id, dhl.id]})).await;
    assert_eq!((s, v.clone()), (StatusCode::OK, json!({"carriers": [dhl.id]})), "{v}");
    let precheck = |c: &Carrier| {
        let (app, c, locker) = (&app, c.clone(), w.locker.clone());
        async move {
            let (s, v) = signed_post(
                app,
                &c,
                "/carrier/v1/precheck",
                json!({"locker_id": locker, "size": "S"}),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v["reason"].as_str().unwrap_or("available").to_string()
        }
    };
    assert_eq!(precheck(&ups).await, "carrier_not_allowed");
    assert_eq!(precheck(&dhl).await, "available");
    // UPS's pre-advice is refused and creates nothing; its driver cannot deposit here.
    assert_error(
        &event(&app, &ups, "na-1", pre_advice(&w, "1Z999AA10000000091")).await,
        StatusCode::CONFLICT,
        "carrier_not_allowed",
    );
    let (s, _) = carrier_get(&app, &ups, "/carrier/v1/parcels/1Z999AA10000000091").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let e = sim
        .start_deposit(&ups.id, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("carrier_not_allowed"), "{e:?}");
    sim.deposit(&dhl.id, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .expect("DHL is allowed");
    // An unknown carrier is refused and changes nothing; an empty list allows every carrier.
    let (s, _) = app.put(&path, json!({"carriers": [dhl.id, "nope"]})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&path).await.1, json!({"carriers": [dhl.id]}));
    for bad in [json!({"carriers": "x"}), json!({"carriers": [1]}), json!({})] {
        assert_eq!(app.put(&path, bad.clone()).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    let (s, _) = app.put(&path, json!({"carriers": []})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(precheck(&ups).await, "available");
}
