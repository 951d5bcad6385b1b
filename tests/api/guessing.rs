//! Guessing codes at a locker (issue 10, items 13, 14, 15, 17): the second factor, escalating
//! and persisted lockouts, QR holders never locked out, the lockout record, the kiosk
//! directory's privacy and rate limit, and pre-advices for residents who need an accessible
//! compartment. Lockouts run on the app's clock: the tests move it, never sleep.

use std::time::Duration;

use awc::http::{Method, StatusCode};
use lockerhub::config::SecondFactor;
use lockerhub::domain::Size;
use lockerhub::protocol::messages::{Identify, Pickup};
use lockerhub::protocol::{ErrorCode, FrameError};
use lockerhub::simulator::{SimError, SimLocker};
use serde_json::{json, Value};

use crate::db_test;
use crate::helpers::{assert_error, TestApp};

/// Ann Lee's phone ends in 2030: her second factor.
const ANN_PHONE: &str = "+1 555 010 2030";

struct World {
    site: String,
    locker: String,
    credential: String,
    carrier: String,
    layout: Vec<(i32, Size)>,
}

async fn world(app: &TestApp, smalls: i32) -> World {
    let site = app.site().await;
    let (locker, credential) = app.locker(&site, json!([{"size": "S", "count": smalls}])).await;
    let carrier = app.carrier("ups").await["carrier"]["id"].as_str().unwrap().to_string();
    app.recipient(&site, "Ann Lee", ANN_PHONE).await;
    World {
        site,
        locker,
        credential,
        carrier,
        layout: (1..=smalls).map(|n| (n, Size::S)).collect(),
    }
}

async fn device(app: &TestApp, w: &World) -> SimLocker {
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .expect("connects");
    assert_eq!(sim.boot().await.expect("boots").status, "Accepted");
    sim
}

/// Deposits a parcel for the resident with this phone; its (parcel id, code, QR token).
async fn deposit_for(app: &TestApp, w: &World, sim: &SimLocker, phone: &str) -> (String, String, String) {
    let open = sim
        .deposit(&w.carrier, Identify::Phone(phone.into()), Size::S, None)
        .await
        .expect("deposited");
    let (code, qr) = app.pickup_secrets(&open.deposit_id).await;
    (open.deposit_id, code, qr)
}

fn refused(r: Result<Value, SimError>) -> FrameError {
    match r {
        Err(SimError::Refused(f)) => f,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn wrong_code(right: &str) -> &'static str {
    if right == "00000000" {
        "11111111"
    } else {
        "00000000"
    }
}

/// Sends wrong codes (with a plausible factor) until the locker locks out; the lockout's length.
async fn lock_out(app: &TestApp, sim: &SimLocker, right: &str) -> u64 {
    for _ in 0..app.settings.pickup_attempts {
        let f = refused(
            sim.call("Pickup", json!({"code": wrong_code(right), "second_factor": "2030"}))
                .await,
        );
        assert_eq!(f.code, ErrorCode::InvalidCode, "{f:?}");
    }
    let f = refused(
        sim.call("Pickup", json!({"code": wrong_code(right), "second_factor": "2030"}))
            .await,
    );
    assert_eq!(f.code, ErrorCode::LockedOut, "{f:?}");
    f.details["retry_after_secs"].as_u64().expect("retry_after_secs")
}

async fn lockouts(app: &TestApp, locker: &str) -> Vec<Value> {
    let (s, v) = app.get(&format!("/api/v1/lockers/{locker}/lockouts")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

fn required(s: &mut lockerhub::config::Settings) {
    s.pickup_second_factor = SecondFactor::Required;
}

db_test!(second_factor_required_and_checked with super::required);
async fn second_factor_required_and_checked(app: TestApp) {
    let w = world(&app, 2).await;
    let sim = device(&app, &w).await;
    let (pid, code, _) = deposit_for(&app, &w, &sim, "5550102030").await;

    // The code alone is neither checked nor counted: as often as a 1.0 kiosk sends it.
    for _ in 0..app.settings.pickup_attempts + 2 {
        let f = refused(sim.call("Pickup", json!({"code": code})).await);
        assert_eq!(f.code, ErrorCode::InvalidCode);
        assert_eq!(f.details["second_factor_required"], true, "{f:?}");
    }
    // The right code with someone else's factor is answered like any wrong code.
    let f = refused(sim.call("Pickup", json!({"code": code, "second_factor": "9999"})).await);
    assert_eq!(f.code, ErrorCode::InvalidCode);
    assert!(f.details.get("second_factor_required").is_none(), "{f:?}");
    // A factor with a QR token is a malformed payload.
    let f = refused(
        sim.call("Pickup", json!({"qr_token": "lhq_x", "second_factor": "2030"}))
            .await,
    );
    assert_eq!(f.code, ErrorCode::ProtocolError);

    // The right pair opens, typed with spaces as a keypad might send it.
    sim.pickup_with_factor(&code, " 20 30").await.expect("opens");
    let (_, p) = app.get(&format!("/api/v1/parcels/{pid}")).await;
    assert_eq!(p["state"], "picked_up");
}

// A fleet still on 1.0 firmware: the code alone opens, but a factor that is sent is checked.
db_test!(optional_second_factor_for_1_0_kiosks);
async fn optional_second_factor_for_1_0_kiosks(app: TestApp) {
    assert_eq!(app.settings.pickup_second_factor, SecondFactor::Optional);
    let w = world(&app, 2).await;
    let sim = device(&app, &w).await;
    let (_, code, _) = deposit_for(&app, &w, &sim, "5550102030").await;
    let f = refused(sim.call("Pickup", json!({"code": code, "second_factor": "1111"})).await);
    assert_eq!(f.code, ErrorCode::InvalidCode);
    sim.pickup(Pickup::Code(code)).await.expect("the code alone opens");
}

db_test!(lockouts_escalate_on_the_app_clock with super::required);
async fn lockouts_escalate_on_the_app_clock(app: TestApp) {
    let w = world(&app, 2).await;
    let sim = device(&app, &w).await;
    let (_, code, _) = deposit_for(&app, &w, &sim, "5550102030").await;
    let base = app.settings.pickup_lockout_secs;

    assert_eq!(lock_out(&app, &sim, &code).await, base);
    // During the lockout even the right pair is refused unchecked.
    let f = refused(sim.call("Pickup", json!({"code": code, "second_factor": "2030"})).await);
    assert_eq!(f.code, ErrorCode::LockedOut);
    assert!((1..=base).contains(&f.details["retry_after_secs"].as_u64().unwrap()));

    // Once it ends, the allowance has not refilled (one per 40 min at 3 per 2 h): the next
    // wrong code starts a lockout twice as long.
    app.clock.advance(Duration::from_secs(base + 1));
    let f = refused(
        sim.call("Pickup", json!({"code": wrong_code(&code), "second_factor": "2030"}))
            .await,
    );
    assert_eq!(f.code, ErrorCode::LockedOut);
    assert_eq!(f.details["retry_after_secs"], 2 * base);

    app.clock.advance(Duration::from_secs(2 * base + 1));
    sim.pickup_with_factor(&code, "2030")
        .await
        .expect("the recipient gets in once it is over");

    // Item 13: both lockouts are on record, without the codes that were tried.
    let list = lockouts(&app, &w.locker).await;
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["kind"], "pickup");
    assert_eq!(list[0]["level"], 1);
    assert_eq!(list[1]["level"], 2);
    assert_eq!(list[0]["locker_id"], w.locker.as_str());
    let text = serde_json::to_string(&list).unwrap();
    assert!(!text.contains(wrong_code(&code)) && !text.contains(&code));
}

db_test!(lockout_survives_a_restart with super::required);
async fn lockout_survives_a_restart(app: TestApp) {
    let w = world(&app, 2).await;
    let sim = device(&app, &w).await;
    let (_, code, _) = deposit_for(&app, &w, &sim, "5550102030").await;
    let base = lock_out(&app, &sim, &code).await;
    let number = sim.snapshot().iter().find(|c| c.occupied).expect("a parcel").number;

    let app = app.restart().await;
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .expect("reconnects");
    sim.tamper(number, false, true);
    assert_eq!(sim.boot().await.unwrap().status, "Accepted");
    let f = refused(sim.call("Pickup", json!({"code": code, "second_factor": "2030"})).await);
    assert_eq!(f.code, ErrorCode::LockedOut, "the restart did not end the lockout");

    app.clock.advance(Duration::from_secs(base + 1));
    sim.pickup_with_factor(&code, "2030")
        .await
        .expect("opens after the lockout");
}

db_test!(qr_holders_are_never_locked_out with super::required);
async fn qr_holders_are_never_locked_out(app: TestApp) {
    let w = world(&app, 3).await;
    app.recipient(&w.site, "Bob Ray", "+1 555 010 9999").await;
    let sim = device(&app, &w).await;
    let (_, ann_code, ann_qr) = deposit_for(&app, &w, &sim, "5550102030").await;
    let (_, _, bob_qr) = deposit_for(&app, &w, &sim, "5550109999").await;

    // Someone guesses at the keypad until it locks, again and again.
    lock_out(&app, &sim, &ann_code).await;
    let f = refused(
        sim.call("Pickup", json!({"code": ann_code, "second_factor": "2030"}))
            .await,
    );
    assert_eq!(f.code, ErrorCode::LockedOut);
    // Wrong QR tokens are answered, never counted and never lock anything out.
    for i in 0..20 {
        let f = refused(sim.call("Pickup", json!({"qr_token": format!("lhq_wrong{i}")})).await);
        assert_eq!(f.code, ErrorCode::InvalidCode);
    }
    sim.pickup(Pickup::QrToken(bob_qr))
        .await
        .expect("Bob's QR opens during the lockout");
    sim.pickup(Pickup::QrToken(ann_qr)).await.expect("so does Ann's");
}

db_test!(lockout_list_rejects_bad_input);
async fn lockout_list_rejects_bad_input(app: TestApp) {
    let w = world(&app, 1).await;
    assert!(lockouts(&app, &w.locker).await.is_empty());
    assert_error(
        &app.get("/api/v1/lockers/nope/lockouts").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (s, _) = app.get(&format!("/api/v1/lockers/{}/lockouts?limit=0", w.locker)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = app.get(&format!("/api/v1/lockers/{}/lockouts?limit=x", w.locker)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = app
        .raw(
            Method::GET,
            &format!("/api/v1/lockers/{}/lockouts", w.locker),
            None,
            "application/json",
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, doc) = app.get("/api-docs/openapi.json").await;
    let op = &doc["paths"]["/api/v1/lockers/{id}/lockouts"]["get"];
    for status in ["200", "400", "401", "404", "422", "429"] {
        assert!(op["responses"].get(status).is_some(), "{status} undocumented: {op}");
    }
}

db_test!(kiosk_lookups_are_masked_and_rate_limited with |s| s.directory_lookups_per_hour = 3);
async fn kiosk_lookups_are_masked_and_rate_limited(app: TestApp) {
    let w = world(&app, 3).await;
    let sim = device(&app, &w).await;
    let found = sim.call("SearchDirectory", json!({"query": "lee"})).await.unwrap();
    let list = found["recipients"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "A. L.");
    assert_eq!(list[0]["unit"], "4B");
    let text = found.to_string();
    assert!(
        !text.contains("Ann") && !text.contains("Lee") && !text.contains("2030"),
        "{text}"
    );
    let rid = list[0]["id"].as_str().unwrap().to_string();

    // A phone match is a lookup too: the second and third of the hour.
    sim.call("SearchDirectory", json!({"query": "4b"})).await.unwrap();
    sim.deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .expect("third lookup");
    let f = refused(sim.call("SearchDirectory", json!({"query": "lee"})).await);
    assert_eq!(f.code, ErrorCode::LockedOut);
    assert!(f.details["retry_after_secs"].as_u64().unwrap() >= 1);
    let f = refused(
        sim.call(
            "StartDeposit",
            json!({"carrier_id": w.carrier, "identify": {"phone": "5550102030"}, "size": "S"}),
        )
        .await,
    );
    assert_eq!(f.code, ErrorCode::LockedOut);
    // A resident already chosen is no lookup: the deposit goes ahead.
    sim.deposit(&w.carrier, Identify::RecipientId(rid), Size::S, None)
        .await
        .expect("directory deposit by reference");
}

db_test!(pre_advice_needing_accessible_is_refused_when_none_is_free);
async fn pre_advice_needing_accessible_is_refused_when_none_is_free(app: TestApp) {
    let site = app.site().await;
    let (locker, _) = app
        .locker(
            &site,
            json!([{"size": "S", "count": 1, "accessible": true}, {"size": "S", "count": 2}]),
        )
        .await;
    for (name, phone) in [("Ann Lee", "+15550102030"), ("Cy Oh", "+15550104040")] {
        let (s, v) = app
            .post(
                "/api/v1/recipients",
                json!({"site_id": site, "name": name, "unit": "1A", "phone": phone, "needs_accessible": true}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let c = crate::carrier_api::carrier(&app, "dhl", None).await;
    let advise = |tracking: &str, phone: &str| {
        json!({"type": "out_for_delivery", "data": {"tracking_number": tracking, "locker_id": locker,
               "recipient": {"phone": phone}, "size": "S"}})
    };
    let (s, v) = crate::carrier_api::event(&app, &c, "evt-1", advise("1Z999AA10000000101", "+15550102030")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["compartment"], 1, "the accessible compartment: {v}");

    let second = advise("1Z999AA10000000102", "+15550104040");
    let got = crate::carrier_api::event(&app, &c, "evt-2", second.clone()).await;
    assert_error(&got, StatusCode::CONFLICT, "no_accessible_compartment");
    // Nothing was reserved in its place, and a replay gets the same answer.
    let statuses = app.statuses(&locker).await;
    assert_eq!(statuses.values().filter(|s| *s == "free").count(), 2, "{statuses:?}");
    let again = crate::carrier_api::event(&app, &c, "evt-2", second).await;
    assert_error(&again, StatusCode::CONFLICT, "no_accessible_compartment");
    let (_, parcels) = app.get("/api/v1/parcels?state=expected").await;
    assert!(parcels["items"].as_array().unwrap().is_empty(), "{parcels}");
}
