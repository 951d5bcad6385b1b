//! Device protocol 1.1 (docs/protocol.md §15): a locker that keeps serving QR pickups while its
//! network is down, journals them, and replays the journal when it is back.

use std::sync::Arc;
use std::time::Duration;

use awc::http::StatusCode;
use lockerhub::domain::Size;
use lockerhub::protocol::messages::{AlarmKind, Identify};
use lockerhub::protocol::ErrorCode;
use lockerhub::qr_token::QrError;
use lockerhub::simulator::{Behaviour, OfflineRefusal, SimLocker};
use serde_json::{json, Value};

use crate::carrier_api::{carrier, event, Carrier};
use crate::db_test;
use crate::device::{disconnected, parcel, world, World};
use crate::helpers::{assert_error, eventually, header, HeldPort, Receiver, TestApp};

db_test!(
    offline_qr_pickups_are_replayed_once_at_their_own_times,
    a_token_resent_while_offline_still_opens_and_the_conflict_is_recorded,
    a_parcel_that_expired_while_offline_is_picked_up_and_its_return_withdrawn,
    a_pickup_journaled_twice_applies_once,
    a_locker_checks_tokens_offline_and_the_server_checks_them_online,
    bad_journals_get_their_answer_and_change_nothing,
    lost_journal_events_are_recorded_and_the_snapshot_decides,
    a_1_0_device_sees_nothing_of_the_offline_side,
    offline_code_pickups_use_the_local_list_and_wrong_codes_count_after_replay,
    the_local_list_follows_deposits_pickups_and_resends,
    a_forced_door_leaves_service_and_alerts_the_operator,
    a_blocked_door_ends_its_session_and_twice_leaves_service,
);

/// A 1.1 locker whose clock is the app's clock moved by `skew` (a device clock that is off).
async fn offline_device(app: &TestApp, w: &World, skew: chrono::Duration) -> SimLocker {
    let behaviour = Behaviour {
        offline_capable: true,
        ..Behaviour::default()
    };
    let sim = SimLocker::connect_with(&app.ws_base(), &w.locker, &w.credential, &w.layout, behaviour, None)
        .await
        .expect("connects");
    let clock = app.clock.clone();
    sim.set_clock(Arc::new(move || clock.now().and_utc() + skew));
    let boot = sim.boot().await.expect("boots");
    assert_eq!(boot.status, "Accepted");
    let offline = boot.offline.expect("a 1.1 boot gets the offline side");
    assert_eq!(offline.allowed_skew_secs, 300);
    assert_eq!(offline.qr_keys.len(), 1);
    assert_eq!(offline.qr_keys[0].alg, "Ed25519");
    sim
}

/// Deposits a parcel for the world's resident; returns its id and its QR token (from the email).
async fn deposited(app: &TestApp, sim: &SimLocker, w: &World) -> (String, String) {
    let open = sim
        .deposit(&w.carrier, Identify::Phone("555-010-2030".into()), Size::S, None)
        .await
        .expect("deposits");
    let (_, qr) = app.pickup_secrets(&open.deposit_id).await;
    (open.deposit_id, qr)
}

/// Drops the locker's connection and waits until the server has seen it go.
async fn cut(app: &TestApp, sim: &SimLocker, w: &World) {
    sim.disconnect().await;
    disconnected(app, &w.locker, "the locker shows as offline").await;
}

/// Back online: reconnects and boots (the journal is not replayed yet).
async fn back(sim: &SimLocker) -> (SimLocker, Value) {
    let sim = sim.reconnect().await.expect("reconnects");
    let boot = sim.boot().await.expect("boots");
    assert_eq!(boot.status, "Accepted");
    let v = serde_json::to_value(&boot).unwrap();
    (sim, v)
}

/// Boots again (raw) claiming `pending` journal events numbered from 1, as a device that
/// journaled them offline would: the server then accepts replays of those numbers.
async fn boot_claiming(app: &TestApp, sim: &SimLocker, pending: i64) -> Value {
    let at = app.clock.now().and_utc().to_rfc3339();
    sim.call(
        "BootNotification",
        json!({"firmware_version": "x", "protocol_version": "1.1", "compartments": sim.snapshot(),
               "offline": {"journal": {"next_seq": pending + 1, "pending": pending}, "clock": at}}),
    )
    .await
    .expect("boots")
}

fn picked_up_hooks(hooks: &[(String, Value)]) -> Vec<&Value> {
    hooks
        .iter()
        .filter(|(t, _)| t == "parcel.picked_up")
        .map(|(_, v)| v)
        .collect()
}

async fn faults(app: &TestApp, locker: &str) -> Vec<Value> {
    let (s, v) = app.get(&format!("/api/v1/lockers/{locker}/faults")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn ts(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str().expect("a timestamp").parse().expect("RFC 3339")
}

async fn offline_qr_pickups_are_replayed_once_at_their_own_times(app: TestApp) {
    let w = world(&app, &[(Size::S, 3)]).await;
    // The device's clock runs an hour fast: the server corrects it by the offset it measures.
    let sim = offline_device(&app, &w, chrono::Duration::hours(1)).await;
    let (a, qr_a) = deposited(&app, &sim, &w).await;
    let (b, qr_b) = deposited(&app, &sim, &w).await;
    assert!(qr_a.starts_with("lhq2."), "a signed token: {qr_a}");
    let svg = app
        .client
        .get(app.url(&format!("/qr/{qr_a}")))
        .send()
        .await
        .expect("request sent");
    assert_eq!(svg.status(), StatusCode::OK, "the QR link of a signed token renders");

    cut(&app, &sim, &w).await;
    app.clock.advance(Duration::from_secs(30 * 60));
    let offline_at = app.clock.now();
    let na = sim
        .pickup_offline_qr(&qr_a)
        .expect("the locker opens for a good token offline");
    let nb = sim.pickup_offline_qr(&qr_b).expect("and for the other parcel");
    assert_eq!(
        sim.pickup_offline_qr(&qr_a),
        Err(OfflineRefusal::Spent),
        "a token opens once"
    );
    app.clock.advance(Duration::from_secs(20 * 60));

    let (sim, boot) = back(&sim).await;
    assert_eq!(boot["offline"]["journal"]["applied_through"], 0);
    assert_eq!(boot["offline"]["journal"]["reconcile"], "after_replay");
    assert_eq!(
        boot["discrepancies"],
        json!([]),
        "the empty compartments wait for the journal"
    );
    // Nobody is served before the journal is in.
    let err = sim.call("Pickup", json!({"code": "12345678"})).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProtocolError));

    let journal = sim.journal();
    assert_eq!(journal.len(), 2);
    let results = sim.replay_journal().await.expect("replays");
    let outcomes: Vec<&str> = results.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["picked_up", "picked_up"]);
    assert!(sim.journal().is_empty(), "the server confirmed every event");

    for (id, number) in [(&a, na), (&b, nb)] {
        let p = parcel(&app, id).await;
        assert_eq!(p["state"], "picked_up");
        let at = ts(&p["picked_up_at"]).naive_utc();
        let off = (at - offline_at).num_seconds().abs();
        assert!(off <= 2, "picked up at the offline time {offline_at}, not {at}");
        assert_eq!(app.statuses(&w.locker).await[&(number as i64)], "free");
        let hooks = app.webhooks_for(id).await;
        let picked = picked_up_hooks(&hooks);
        assert_eq!(picked.len(), 1, "the carrier hears of the pickup once");
        assert_eq!(picked[0]["data"]["offline"], true);
        assert_eq!(ts(&picked[0]["data"]["picked_up_at"]).naive_utc(), at);
    }
    assert!(faults(&app, &w.locker).await.is_empty(), "nothing for the operator");

    // The same journal again, as a device that missed the answer would send it: the stored
    // outcomes, and nothing changes.
    let again = sim
        .call("ReplayJournal", json!({"events": journal}))
        .await
        .expect("a replay of applied events is answered");
    assert_eq!(again["applied_through"], 2);
    assert_eq!(again["results"][0]["outcome"], "picked_up");
    assert_eq!(again["results"][1]["seq"], 2);
    assert_eq!(picked_up_hooks(&app.webhooks_for(&a).await).len(), 1);
    // And the next boot has nothing to wait for; the locker serves again.
    let (sim, boot) = back(&sim).await;
    assert_eq!(boot["offline"]["journal"]["applied_through"], 2);
    assert_eq!(boot["offline"]["journal"]["reconcile"], "at_boot");
    assert_eq!(boot["discrepancies"], json!([]));
    sim.deposit(&w.carrier, Identify::Phone("555-010-2030".into()), Size::S, None)
        .await
        .expect("the freed compartments take parcels again");
}

async fn a_token_resent_while_offline_still_opens_and_the_conflict_is_recorded(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    let (id, old_qr) = deposited(&app, &sim, &w).await;
    cut(&app, &sim, &w).await;
    let (s, v) = app.post(&format!("/api/v1/parcels/{id}/resend-code"), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    // The locker cannot know: the old token still opens it offline.
    sim.pickup_offline_qr(&old_qr).expect("opens offline");
    let (sim, _) = back(&sim).await;
    let results = sim.replay_journal().await.unwrap();
    assert_eq!(results[0]["outcome"], "picked_up", "the pickup stands");
    assert_eq!(results[0]["conflicts"], json!(["code_revoked"]));
    assert_eq!(parcel(&app, &id).await["state"], "picked_up");
    assert_eq!(picked_up_hooks(&app.webhooks_for(&id).await).len(), 1);
    let f = faults(&app, &w.locker).await;
    assert!(
        f.iter().any(|f| f["kind"] == "offline_conflict"
            && f["detail"].as_str().unwrap().contains("code_revoked")
            && f["compartment_number"].is_null()),
        "the operator is told, and no compartment is taken out of service: {f:?}"
    );
    let alerts = open_alerts(&app).await;
    assert!(alerts.iter().any(|a| a["kind"] == "offline_conflict"), "{alerts:?}");
}

async fn a_parcel_that_expired_while_offline_is_picked_up_and_its_return_withdrawn(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    let (id, qr) = deposited(&app, &sim, &w).await;
    cut(&app, &sim, &w).await;
    // Past the 72-hour dwell: the parcel expires and the carrier is asked to collect it.
    app.advance(Duration::from_secs(73 * 3600)).await;
    eventually(Duration::from_secs(10), "the parcel expires", || async {
        (parcel(&app, &id).await["state"] == "expired").then_some(())
    })
    .await;
    // The token outlives the deadline: the locker, which never heard, still opens.
    sim.pickup_offline_qr(&qr).expect("opens offline after the deadline");
    let (sim, _) = back(&sim).await;
    let results = sim.replay_journal().await.unwrap();
    assert_eq!(results[0]["outcome"], "picked_up");
    assert_eq!(results[0]["conflicts"], json!(["after_expiry"]));
    let p = parcel(&app, &id).await;
    assert_eq!(p["state"], "picked_up");
    let hooks = app.webhooks_for(&id).await;
    let kinds: Vec<&str> = hooks.iter().map(|(t, _)| t.as_str()).collect();
    assert!(kinds.contains(&"parcel.return_requested"), "{kinds:?}");
    let picked = picked_up_hooks(&hooks);
    assert_eq!(picked.len(), 1);
    assert_eq!(
        picked[0]["data"]["after_expiry"], true,
        "the carrier learns its return request is withdrawn"
    );
    let seen = app.webhooks_match_the_document().await;
    assert!(seen.contains("parcel.picked_up") && seen.contains("parcel.return_requested"));
    // Nothing is left for the carrier to collect: no deadline is pending for the parcel.
    assert_eq!(pending_deadlines(&app, &id).await, 0);
}

async fn pending_deadlines(app: &TestApp, parcel_id: &str) -> i64 {
    use diesel::prelude::*;
    use lockerhub::db::schema::deadlines as d;
    let pid = parcel_id.to_string();
    app.db
        .run(move |c| {
            Ok(d::table
                .filter(d::parcel_id.eq(&pid))
                .filter(d::fired_at.is_null())
                .filter(d::cancelled_at.is_null())
                .count()
                .get_result(c)?)
        })
        .await
        .unwrap()
}

async fn a_pickup_journaled_twice_applies_once(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    let (id, qr) = deposited(&app, &sim, &w).await;
    boot_claiming(&app, &sim, 2).await;
    let at = app.clock.now().and_utc().to_rfc3339();
    let event = |seq: i64| json!({"seq": seq, "at": at, "kind": "pickup", "compartment": 1, "by": {"qr_token": qr}});
    let r = sim
        .call("ReplayJournal", json!({"events": [event(1), event(2)]}))
        .await
        .expect("applied");
    assert_eq!(r["applied_through"], 2);
    assert_eq!(r["results"][0]["outcome"], "picked_up");
    assert_eq!(
        r["results"][1]["outcome"], "already_moved",
        "the parcel had left; the event goes into its history only"
    );
    assert_eq!(parcel(&app, &id).await["state"], "picked_up");
    assert_eq!(picked_up_hooks(&app.webhooks_for(&id).await).len(), 1);
    let p = parcel(&app, &id).await;
    let kinds: Vec<&str> = p["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"offline_pickup_after_move"), "{kinds:?}");
}

async fn a_locker_checks_tokens_offline_and_the_server_checks_them_online(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    let (id, qr) = deposited(&app, &sim, &w).await;
    // One character of the signature changed: a forgery, refused offline and online.
    let mut forged = qr.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert!(matches!(
        sim.pickup_offline_qr(&forged),
        Err(OfflineRefusal::Invalid(QrError::BadSignature | QrError::Malformed))
    ));
    let err = sim.call("Pickup", json!({"qr_token": forged})).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidCode));
    // Another locker's device (another locker id) refuses the token.
    let (locker2, credential2) = app.locker(&w.site, json!([{"size": "S", "count": 1}])).await;
    let w2 = World {
        locker: locker2,
        credential: credential2,
        layout: vec![(1, Size::S)],
        site: w.site.clone(),
        carrier: w.carrier.clone(),
        recipient: w.recipient.clone(),
    };
    let sim2 = offline_device(&app, &w2, chrono::Duration::zero()).await;
    sim2.tamper(1, false, true);
    assert_eq!(
        sim2.pickup_offline_qr(&qr),
        Err(OfflineRefusal::Invalid(QrError::OtherLocker))
    );
    let err = sim2.call("Pickup", json!({"qr_token": qr})).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidCode), "online too");
    // Past the token's expiry (deadline + 72 h) and the skew allowance: refused offline.
    let late = chrono::Duration::hours(72 + 72) + chrono::Duration::seconds(301);
    let clock = app.clock.clone();
    sim.set_clock(Arc::new(move || clock.now().and_utc() + late));
    assert_eq!(
        sim.pickup_offline_qr(&qr),
        Err(OfflineRefusal::Invalid(QrError::Expired))
    );
    // Online, the token opens as ever.
    let open = sim
        .call("Pickup", json!({"qr_token": qr}))
        .await
        .expect("online pickup");
    assert_eq!(open["parcel_id"], id.as_str());
}

async fn bad_journals_get_their_answer_and_change_nothing(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    // A 1.0 device cannot replay.
    let old = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    old.boot().await.unwrap();
    let at = app.clock.now().and_utc().to_rfc3339();
    let ev = |seq: i64, token: &str| json!({"seq": seq, "at": at, "kind": "pickup", "compartment": 1, "by": {"qr_token": token}});
    let err = old
        .call("ReplayJournal", json!({"events": [ev(1, "lhq2.x.y")]}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProtocolError));
    drop(old);

    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    let (id, qr) = deposited(&app, &sim, &w).await;
    // Events beyond the journal the device reported at boot (none yet) are refused.
    let e = sim
        .call("ReplayJournal", json!({"events": [ev(1, &qr)]}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ProtocolError));
    boot_claiming(&app, &sim, 2).await;
    let gap = |r: Result<Value, lockerhub::simulator::SimError>, expected: i64| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::JournalGap), "{e:?}");
        match e {
            lockerhub::simulator::SimError::Refused(f) => assert_eq!(f.details["expected_seq"], expected),
            other => panic!("{other:?}"),
        }
    };
    // A gap, a duplicate, numbers out of order: JournalGap, resend from 1.
    gap(sim.call("ReplayJournal", json!({"events": [ev(2, &qr)]})).await, 1);
    gap(
        sim.call("ReplayJournal", json!({"events": [ev(1, &qr), ev(1, &qr)]}))
            .await,
        1,
    );
    gap(
        sim.call("ReplayJournal", json!({"events": [ev(2, &qr), ev(1, &qr)]}))
            .await,
        1,
    );
    // Malformed: an event that does not parse, an empty call, too many events.
    for bad in [
        json!({"events": [{"seq": 1, "at": "yesterday", "kind": "pickup", "compartment": 1, "by": {"qr_token": qr}}]}),
        json!({"events": [ev(1, &qr), {"seq": 2, "at": at, "kind": "pickup", "compartment": "one"}]}),
        json!({"events": []}),
        json!({"events": (1..=101).map(|s| json!({"seq": s, "at": at, "kind": "door"})).collect::<Vec<_>>()}),
        json!({"events": [ev(1, &qr)], "extra": true}),
        // A clock that cannot be right, or a number that cannot be.
        json!({"events": [{"seq": 1, "at": "+262143-12-31T23:59:59Z", "kind": "wrong_code"}]}),
        json!({"events": [{"seq": i64::MAX, "at": at, "kind": "wrong_code"}]}),
    ] {
        let e = sim.call("ReplayJournal", bad.clone()).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::ProtocolError), "{bad}");
    }
    assert_eq!(parcel(&app, &id).await["state"], "deposited", "nothing was applied");
    // A forged token in the journal: rejected (counted as applied), the parcel stays.
    let mut forged = qr.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let r = sim
        .call(
            "ReplayJournal",
            json!({"events": [ev(1, &forged), {"seq": 2, "at": at, "kind": "door", "compartment": 1}]}),
        )
        .await
        .expect("answered");
    assert_eq!(r["applied_through"], 2);
    assert_eq!(r["results"][0]["outcome"], "rejected");
    assert_eq!(
        r["results"][1]["outcome"], "rejected",
        "kinds this server does not apply"
    );
    assert!(r["results"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("pickups, collections, deposits and wrong codes only"));
    assert_eq!(parcel(&app, &id).await["state"], "deposited");
    let f = faults(&app, &w.locker).await;
    assert_eq!(f.iter().filter(|f| f["kind"] == "journal_rejected").count(), 2, "{f:?}");
    assert_eq!(
        app.statuses(&w.locker).await[&1],
        "occupied",
        "no compartment out of service"
    );
    // A boot with an impossible journal state.
    let e = sim
        .call(
            "BootNotification",
            json!({"firmware_version": "x", "protocol_version": "1.1", "compartments": sim.snapshot(),
                   "offline": {"journal": {"next_seq": 3, "pending": 3}, "clock": at}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ProtocolError));
    let e = sim
        .call(
            "BootNotification",
            json!({"firmware_version": "x", "protocol_version": "1.1", "compartments": sim.snapshot(),
                   "offline": {"journal": {"next_seq": 3, "pending": 2}, "clock": "3000-01-01T00:00:00Z"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ProtocolError), "a clock that cannot be right");
    // An oversize journal call is over the frame limit: refused before it is parsed.
    let big: Vec<Value> = (3..=100).map(|s| ev(s, &"x".repeat(300))).collect();
    let text = json!([2, "big-1", "ReplayJournal", {"events": big}]).to_string();
    assert!(text.len() > lockerhub::protocol::MAX_FRAME_BYTES);
    let _ = sim
        .send_raw(tokio_tungstenite::tungstenite::Message::text(text), "big-1")
        .await;
    assert_eq!(parcel(&app, &id).await["state"], "deposited");
    let (s, _) = app.get("/readyz").await;
    assert_eq!(s, StatusCode::OK, "the server is up");
}

async fn lost_journal_events_are_recorded_and_the_snapshot_decides(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    let (id, _) = deposited(&app, &sim, &w).await;
    // The device lost events 1 to 7 (storage wiped) and took the parcel out meanwhile: it
    // reports journal events 8 and 9 pending, and an empty compartment.
    sim.tamper(1, false, false);
    let at = app.clock.now().and_utc().to_rfc3339();
    let boot = sim
        .call(
            "BootNotification",
            json!({"firmware_version": "x", "protocol_version": "1.1", "compartments": sim.snapshot(),
                   "offline": {"journal": {"next_seq": 10, "pending": 2}, "clock": at}}),
        )
        .await
        .expect("boots");
    assert_eq!(boot["offline"]["journal"]["applied_through"], 7);
    assert_eq!(boot["offline"]["journal"]["reconcile"], "after_replay");
    let r = sim
        .call(
            "ReplayJournal",
            json!({"events": [{"seq": 8, "at": at, "kind": "door", "compartment": 2},
                              {"seq": 9, "at": at, "kind": "door", "compartment": 2}]}),
        )
        .await
        .expect("applied");
    assert_eq!(r["applied_through"], 9);
    // With the journal in, the boot snapshot is reconciled: the parcel nobody accounts for
    // is a discrepancy for the operator, as at any boot.
    let kinds: Vec<&str> = r["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["parcel_missing"]);
    let f = faults(&app, &w.locker).await;
    assert!(f.iter().any(|f| f["kind"] == "journal_lost"), "{f:?}");
    assert_eq!(parcel(&app, &id).await["state"], "deposited", "a person decides");
    // Asked again, the lost range is answered as lost.
    let again = sim
        .call(
            "ReplayJournal",
            json!({"events": [{"seq": 7, "at": at, "kind": "door"}]}),
        )
        .await
        .unwrap();
    assert_eq!(again["results"][0]["outcome"], "lost");
}

async fn a_1_0_device_sees_nothing_of_the_offline_side(app: TestApp) {
    let w = world(&app, &[(Size::S, 1)]).await;
    let sim = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    let raw = sim
        .call(
            "BootNotification",
            json!({"firmware_version": "x", "protocol_version": "1.0", "compartments": sim.snapshot()}),
        )
        .await
        .unwrap();
    assert!(raw.get("offline").is_none(), "{raw}");
    assert_eq!(
        sim.pickup_offline_qr("lhq2.a.b"),
        Err(OfflineRefusal::NotOfflineCapable)
    );
    let e = app.get("/qr/lhq2.not!valid").await;
    assert_error(&e, StatusCode::NOT_FOUND, "not_found");
}

/// Waits (bounded) until the device's local list holds `n` pickup entries at a version above
/// `above`.
async fn list_holds(sim: &SimLocker, n: usize, above: Option<i64>) -> i64 {
    list_holds_kind(sim, "pickup", n, above).await
}

/// Waits (bounded) until the device's local list holds `n` entries of `kind` at a version
/// above `above`.
async fn list_holds_kind(sim: &SimLocker, kind: &str, n: usize, above: Option<i64>) -> i64 {
    eventually(Duration::from_secs(20), "the local list reaches the device", || async {
        let side = sim.offline.lock().unwrap();
        let held = side.list.values().filter(|e| e.kind == kind).count();
        (held == n && side.list_version > above).then(|| side.list_version.unwrap())
    })
    .await
}

async fn offline_code_pickups_use_the_local_list_and_wrong_codes_count_after_replay(app: TestApp) {
    let w = world(&app, &[(Size::S, 3)]).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    let v0 = list_holds(&sim, 0, None).await;
    let (a, _) = deposited(&app, &sim, &w).await;
    let (b, _) = deposited(&app, &sim, &w).await;
    let v2 = list_holds(&sim, 2, Some(v0)).await;
    let (code_a, _) = app.pickup_secrets(&a).await;
    let (code_b, _) = app.pickup_secrets(&b).await;
    // The list holds verifiers, never a code.
    let sent = format!("{:?}", sim.server_calls.lock().unwrap());
    assert!(sent.contains("SendLocalList") && !sent.contains(&code_a) && !sent.contains(&code_b));

    cut(&app, &sim, &w).await;
    // Right code, wrong factor; wrong code: both refused offline, and journaled.
    assert_eq!(sim.pickup_offline_code(&code_a, "9999"), Err(OfflineRefusal::WrongCode));
    assert_eq!(
        sim.pickup_offline_code("00000000", "2030"),
        Err(OfflineRefusal::WrongCode)
    );
    let na = sim
        .pickup_offline_code(&code_a, "20 30")
        .expect("the code and factor open offline");
    // The device's allowance (3 in these tests) is spent: the next wrong code starts a
    // lockout offline, as online, and then even the right code is not checked.
    assert_eq!(
        sim.pickup_offline_code("11111111", "2030"),
        Err(OfflineRefusal::WrongCode)
    );
    assert!(matches!(
        sim.pickup_offline_code("22222222", "2030"),
        Err(OfflineRefusal::LockedOut(_))
    ));
    assert!(matches!(
        sim.pickup_offline_code(&code_b, "2030"),
        Err(OfflineRefusal::LockedOut(_))
    ));

    let (sim, _) = back(&sim).await;
    let results = sim.replay_journal().await.unwrap();
    let outcomes: Vec<&str> = results.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["counted", "counted", "picked_up", "counted", "counted"]);
    let p = parcel(&app, &a).await;
    assert_eq!(p["state"], "picked_up");
    assert_eq!(app.statuses(&w.locker).await[&(na as i64)], "free");
    assert_eq!(picked_up_hooks(&app.webhooks_for(&a).await).len(), 1);
    // Going offline did not reset the limit: the wrong codes started a lockout here too.
    let (s, l) = app.get(&format!("/api/v1/lockers/{}/lockouts", w.locker)).await;
    assert_eq!(s, StatusCode::OK, "{l}");
    assert_eq!(l["items"].as_array().unwrap().len(), 1, "{l}");
    let e = sim
        .call("Pickup", json!({"code": code_b, "second_factor": "2030"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::LockedOut));
    // The picked-up parcel's entry leaves the list.
    list_holds(&sim, 1, Some(v2)).await;
}

async fn the_local_list_follows_deposits_pickups_and_resends(app: TestApp) {
    let w = world(&app, &[(Size::S, 3)]).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    let v0 = list_holds(&sim, 0, None).await;
    let (a, _) = deposited(&app, &sim, &w).await;
    let v1 = list_holds(&sim, 1, Some(v0)).await;
    let (b, _) = deposited(&app, &sim, &w).await;
    let v2 = list_holds(&sim, 2, Some(v1)).await;
    let (code_a, qr_a) = app.pickup_secrets(&a).await;
    // Picked up online: its entry is removed by a differential update.
    sim.pickup(lockerhub::protocol::messages::Pickup::QrToken(qr_a))
        .await
        .expect("online pickup");
    let v3 = list_holds(&sim, 1, Some(v2)).await;
    let calls = sim.server_calls.lock().unwrap().clone();
    let last = calls.iter().rev().find(|(a, _)| a == "SendLocalList").unwrap();
    assert_eq!(last.1["update"], "differential");
    assert_eq!(last.1["remove"].as_array().unwrap().len(), 1);
    assert_eq!(sim.pickup_offline_code(&code_a, "2030"), Err(OfflineRefusal::WrongCode));
    // A resend replaces b's entry: the old code opens nothing offline, the new one does.
    let (old_b, _) = app.pickup_secrets(&b).await;
    let (s, v) = app.post(&format!("/api/v1/parcels/{b}/resend-code"), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    list_holds(&sim, 1, Some(v3)).await;
    let tracking = parcel(&app, &b).await["tracking_number"].as_str().unwrap().to_string();
    let new_b = eventually(Duration::from_secs(20), "the new code is mailed", || async {
        // The newest mail for the parcel; the old code's until the new one arrives.
        let mail = app
            .smtp
            .wait_for(&format!("({tracking})"), Duration::from_millis(1))
            .await?;
        let code = crate::smtp::secrets_in(&mail).0;
        (code != old_b).then_some(code)
    })
    .await;
    assert_ne!(new_b, old_b);
    cut(&app, &sim, &w).await;
    assert_eq!(sim.pickup_offline_code(&old_b, "2030"), Err(OfflineRefusal::WrongCode));
    sim.pickup_offline_code(&new_b, "2030")
        .expect("the new code opens offline");
    let (sim, _) = back(&sim).await;
    let results = sim.replay_journal().await.unwrap();
    assert_eq!(results.last().unwrap()["outcome"], "picked_up");
    assert_eq!(parcel(&app, &b).await["state"], "picked_up");

    // A device that claims a list version from the future (a restored server database, a
    // device moved between servers) is never trusted: it gets the whole list.
    let (c, _) = deposited(&app, &sim, &w).await;
    let held = list_holds(&sim, 1, None).await;
    sim.offline.lock().unwrap().list_version = Some(held + 1000);
    let (sim, _) = back(&sim).await;
    eventually(
        Duration::from_secs(20),
        "a full list replaces the unknown one",
        || async {
            let side = sim.offline.lock().unwrap();
            let pickups = side.list.values().filter(|e| e.kind == "pickup").count();
            (side.list_version == Some(held) && pickups == 1).then_some(())
        },
    )
    .await;
    let calls = sim.server_calls.lock().unwrap().clone();
    let last = calls.iter().rev().find(|(a, _)| a == "SendLocalList").unwrap();
    assert_eq!(last.1["update"], "full");
    let (code_c, _) = app.pickup_secrets(&c).await;
    cut(&app, &sim, &w).await;
    sim.pickup_offline_code(&code_c, "2030").expect("the full list opens");
}

async fn open_alerts(app: &TestApp) -> Vec<Value> {
    let (s, v) = app.get("/api/v1/alerts").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

async fn a_forced_door_leaves_service_and_alerts_the_operator(app: TestApp) {
    let w = world(&app, &[(Size::S, 3)]).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    let (id, _) = deposited(&app, &sim, &w).await;
    assert!(open_alerts(&app).await.is_empty());
    let r = sim.door_alarm(1, AlarmKind::Forced).await.expect("answered");
    assert_eq!(r["outcome"], "fault");
    assert_eq!(app.statuses(&w.locker).await[&1], "out_of_service");
    assert_eq!(parcel(&app, &id).await["state"], "deposited", "the operator decides");
    let f = faults(&app, &w.locker).await;
    assert!(
        f.iter()
            .any(|f| f["kind"] == "door_forced" && f["compartment_number"] == 1),
        "{f:?}"
    );
    let alerts = open_alerts(&app).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["kind"], "door_forced");
    assert_eq!(alerts[0]["locker_id"], w.locker.as_str());
    // Acknowledged: no longer open, still listed with open=false; a second acknowledgement
    // keeps the first.
    let aid = alerts[0]["id"].as_str().unwrap().to_string();
    let (s, a) = app.post(&format!("/api/v1/alerts/{aid}/acknowledge"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert!(a["acknowledged_by"].as_str().unwrap().starts_with("admin:"));
    let (_, again) = app.post(&format!("/api/v1/alerts/{aid}/acknowledge"), json!({})).await;
    assert_eq!(again["acknowledged_at"], a["acknowledged_at"]);
    assert!(open_alerts(&app).await.is_empty());
    let (_, all) = app.get("/api/v1/alerts?open=false").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let e = app.post("/api/v1/alerts/nope/acknowledge", json!({})).await;
    assert_error(&e, StatusCode::NOT_FOUND, "not_found");
    // Bad alarms change nothing.
    let e = sim
        .call("DoorAlarm", json!({"compartment": 2, "kind": "melted"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::ProtocolError));
    let e = sim.door_alarm(99, AlarmKind::Forced).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    assert_eq!(app.statuses(&w.locker).await[&2], "free");
    // A 1.0 device's door opened without a command is a forced door too.
    let old = SimLocker::connect(&app.ws_base(), &w.locker, &w.credential, &w.layout)
        .await
        .unwrap();
    old.boot().await.unwrap();
    assert_eq!(
        old.door(3, lockerhub::protocol::messages::DoorChange::Opened)
            .await
            .unwrap(),
        "fault"
    );
    let alerts = open_alerts(&app).await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0]["kind"].as_str(), alerts[0]["compartment"].as_i64()),
        (Some("door_forced"), Some(3))
    );
}

async fn a_blocked_door_ends_its_session_and_twice_leaves_service(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    let (id, qr) = deposited(&app, &sim, &w).await;
    let open = sim.call("Pickup", json!({"qr_token": qr})).await.expect("unlocks");
    let n = open["compartment"].as_i64().unwrap() as i32;
    // The door does not open: the pickup session ends, the parcel stays, the operator is told.
    sim.door_alarm(n, AlarmKind::Blocked).await.expect("answered");
    assert_eq!(parcel(&app, &id).await["state"], "deposited");
    assert_eq!(
        app.statuses(&w.locker).await[&(n as i64)],
        "occupied",
        "still in service"
    );
    assert_eq!(open_alerts(&app).await.len(), 1);
    // The session is over: a door event for it is no longer a pickup.
    let kinds: Vec<String> = parcel(&app, &id).await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"pickup_timed_out".to_string()), "{kinds:?}");
    // Tried again, blocked again: out of service until a person sees to it.
    sim.call("Pickup", json!({"qr_token": qr}))
        .await
        .expect("unlocks again");
    sim.door_alarm(n, AlarmKind::Blocked).await.expect("answered");
    assert_eq!(app.statuses(&w.locker).await[&(n as i64)], "out_of_service");
    let alerts = open_alerts(&app).await;
    assert_eq!(alerts.len(), 2);
    assert!(alerts.iter().all(|a| a["kind"] == "door_blocked"));
}

/// The operator's endpoint: a port held until the receiver starts, and its signing secret.
fn operator_endpoint() -> (HeldPort, String, impl FnOnce(&mut lockerhub::config::Settings)) {
    let held = HeldPort::new();
    let url = format!("http://127.0.0.1:{}/alerts", held.port());
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
    let s2 = secret.clone();
    let tweak = move |s: &mut lockerhub::config::Settings| {
        s.operator_webhook_url = Some(url);
        s.operator_webhook_secret = Some(lockerhub::config::Secret::new(s2));
    };
    (held, secret, tweak)
}

mod operator_alerts_are_signed_webhooks_at_least_once {
    use crate::helpers::{stop_servers, TestApp};

    #[actix_web::test]
    async fn sqlite() {
        let (held, secret, tweak) = super::operator_endpoint();
        super::operator_alerts_are_signed_webhooks_at_least_once(TestApp::sqlite_with(tweak).await, held, secret).await;
        stop_servers().await
    }

    #[actix_web::test]
    #[cfg_attr(not(postgres_tests), ignore = "PostgreSQL: set TEST_DATABASE_URL to run")]
    async fn postgres() {
        let (held, secret, tweak) = super::operator_endpoint();
        super::operator_alerts_are_signed_webhooks_at_least_once(TestApp::postgres_with(tweak).await, held, secret)
            .await;
        stop_servers().await
    }
}

async fn alert_delivery(app: &TestApp) -> (String, i32) {
    use diesel::prelude::*;
    use lockerhub::db::schema::alerts as a;
    app.db
        .run(|c| Ok(a::table.select((a::delivery, a::attempts)).first(c)?))
        .await
        .unwrap()
}

async fn operator_alerts_are_signed_webhooks_at_least_once(app: TestApp, held: HeldPort, secret: String) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    sim.door_alarm(2, AlarmKind::Forced).await.expect("answered");
    // Nobody listens yet: the first attempt fails and is kept for a retry.
    eventually(Duration::from_secs(10), "a failed first attempt", || async {
        let (delivery, attempts) = alert_delivery(&app).await;
        (delivery == "pending" && attempts >= 1).then_some(())
    })
    .await;
    let rx = Receiver::start_on(held.release(), 0).await;
    app.advance_outboxes(Duration::from_secs(2 * 3600)).await;
    let got = rx.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1, "delivered once the endpoint answers");
    let (headers, body) = &got[0];
    let id = header(headers, "webhook-id");
    lockerhub::signing::verify(
        &[secret],
        Some(id),
        Some(header(headers, "webhook-timestamp")),
        Some(header(headers, "webhook-signature")),
        body,
        chrono::Utc::now().timestamp(),
    )
    .expect("signed with the operator secret");
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["type"], "alert.raised");
    assert_eq!(v["data"]["kind"], "door_forced");
    assert_eq!(v["data"]["id"], id);
    assert_eq!(v["data"]["compartment"], 2);
    // The body is what the OpenAPI document's `webhooks` section says.
    let (_, doc) = app.get("/api-docs/openapi.json").await;
    let schema = &doc["components"]["schemas"][lockerhub::http::webhook_docs::schema_name("alert.raised")];
    crate::helpers::conforms(&doc, schema, &v, "").unwrap();
    eventually(Duration::from_secs(10), "recorded as delivered", || async {
        (alert_delivery(&app).await.0 == "delivered").then_some(())
    })
    .await;
}

db_test!(offline_drivers_collect_returns_and_deposit_pre_advised_parcels with |s| {
    // The pre-advice's reservation outlives the 73 hours the test moves the clock.
    s.reservation_hours = 200;
});

/// A pre-advice by `c` for the world's resident at its locker; returns the parcel id and the
/// compartment reserved.
async fn pre_advised(app: &TestApp, c: &Carrier, w: &World, event_id: &str, tracking: &str) -> (String, i64) {
    let body = json!({"type": "out_for_delivery", "data": {
        "tracking_number": tracking, "locker_id": w.locker,
        "recipient": {"phone": "+15550102030"}, "size": "S"}});
    let (s, v) = event(app, c, event_id, body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["state"], "reserved", "{v}");
    (
        v["parcel_id"].as_str().unwrap().to_string(),
        v["compartment"].as_i64().unwrap(),
    )
}

async fn offline_drivers_collect_returns_and_deposit_pre_advised_parcels(app: TestApp) {
    let rx = Receiver::start(0).await;
    let w = world(&app, &[(Size::S, 3)]).await;
    let dhl = carrier(&app, "dhl", Some(&rx.url)).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    // Both carriers' courier codes reach the list (as verifiers).
    let v0 = list_holds_kind(&sim, "courier", 2, None).await;
    // A parcel deposited by DHL expires; DHL asks for a collection code.
    let open = sim
        .deposit(&dhl.id, Identify::Phone("555-010-2030".into()), Size::S, Some("JD0001"))
        .await
        .expect("deposits");
    let returned = open.deposit_id.clone();
    app.advance(Duration::from_secs(73 * 3600)).await;
    eventually(Duration::from_secs(10), "the parcel expires", || async {
        (parcel(&app, &returned).await["state"] == "expired").then_some(())
    })
    .await;
    let collect = json!({"type": "return_collection", "data": {"tracking_number": "JD0001"}});
    let (s, v) = event(&app, &dhl, "c-1", collect).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let collection_code = v["collection_code"].as_str().unwrap().to_string();
    // DHL pre-advises a parcel: a compartment is reserved, and the list gets its deposit entry.
    let (advised, reserved) = pre_advised(&app, &dhl, &w, "p-1", "JD0002").await;
    list_holds_kind(&sim, "collection", 1, Some(v0)).await;
    list_holds_kind(&sim, "deposit", 1, Some(v0)).await;
    let sent = format!("{:?}", sim.server_calls.lock().unwrap());
    assert!(!sent.contains(&collection_code) && !sent.contains(&dhl.courier_code));

    cut(&app, &sim, &w).await;
    // Offline, a driver identifies first; a wrong courier code and a wrong collection code
    // are refused and journaled, each to be counted against its own allowance.
    assert_eq!(sim.collect_offline(&collection_code), Err(OfflineRefusal::CourierFirst));
    assert_eq!(
        sim.identify_courier_offline("NOTACOURIER1"),
        Err(OfflineRefusal::WrongCode)
    );
    sim.identify_courier_offline(&dhl.courier_code)
        .expect("the courier code opens offline");
    assert_eq!(sim.collect_offline("00000000"), Err(OfflineRefusal::WrongCode));
    let collected_from = sim
        .collect_offline(&collection_code)
        .expect("the collection code opens offline");
    assert_eq!(collected_from as i64, open.compartment as i64);
    assert_eq!(sim.deposit_offline("JD9999"), Err(OfflineRefusal::NoReservation));
    let deposited_in = sim.deposit_offline("jd0002").expect("the reservation opens offline");
    assert_eq!(deposited_in as i64, reserved);
    let offline_at = app.clock.now().and_utc();

    let (sim, boot) = back(&sim).await;
    assert_eq!(boot["offline"]["journal"]["reconcile"], "after_replay");
    let journal = sim.journal();
    let results = sim.replay_journal().await.unwrap();
    let outcomes: Vec<&str> = results.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["counted", "counted", "returned", "deposited"]);
    // The return: collected at its offline time, the compartment free, DHL told once.
    let p = parcel(&app, &returned).await;
    assert_eq!(p["state"], "returned");
    assert!((ts(&p["returned_at"]) - offline_at).num_seconds().abs() <= 5, "{p}");
    let hooks = app.webhooks_for(&returned).await;
    let returns: Vec<&Value> = hooks
        .iter()
        .filter(|(t, _)| t == "parcel.returned")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(returns.len(), 1, "{hooks:?}");
    assert_eq!(returns[0]["data"]["offline"], true);
    // The deposit: deposited at its offline time; the recipient gets a code now, DHL its webhook.
    let p = parcel(&app, &advised).await;
    assert_eq!(p["state"], "deposited", "{p}");
    assert!((ts(&p["deposited_at"]) - offline_at).num_seconds().abs() <= 5, "{p}");
    let delivered: Vec<Value> = app
        .webhooks_for(&advised)
        .await
        .into_iter()
        .filter(|(t, _)| t == "parcel.delivered_to_locker")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["data"]["offline"], true);
    assert_eq!(delivered[0]["data"]["compartment"].as_i64(), Some(reserved));
    let statuses = app.statuses(&w.locker).await;
    assert_eq!(statuses[&(collected_from as i64)], "free");
    assert_eq!(statuses[&reserved], "occupied");
    // Offline or not, the bodies are what the OpenAPI document says.
    let seen = app.webhooks_match_the_document().await;
    assert!(seen.contains("parcel.returned") && seen.contains("parcel.delivered_to_locker"));
    // Both wrong codes counted where they belong (1 of 3 each: no lockout yet).
    let (_, l) = app.get(&format!("/api/v1/lockers/{}/lockouts", w.locker)).await;
    assert_eq!(l["items"].as_array().unwrap().len(), 0, "{l}");
    // The same journal again changes nothing.
    let again = sim
        .call("ReplayJournal", json!({"events": journal}))
        .await
        .expect("answered");
    let again: Vec<&str> = again["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(again, outcomes);
    assert_eq!(app.webhooks_for(&returned).await.len(), hooks.len());
    // The recipient picks up online with the code issued at the replay.
    let (code, _) = app.pickup_secrets(&advised).await;
    let opened = sim.pickup_with_factor(&code, "2030").await.expect("opens online");
    assert_eq!(opened.compartment as i64, reserved);
}

db_test!(offline_deposits_whose_reservations_lapsed_are_decided_by_rule with |s| {
    // The test pre-advises while the locker is offline for a day: still bookable here.
    s.booking_offline_grace_secs = 10 * 86_400;
});
db_test!(a_collection_code_replaced_while_offline_still_opens_and_is_recorded);

async fn offline_deposits_whose_reservations_lapsed_are_decided_by_rule(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let dhl = carrier(&app, "dhl", None).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    let (a, _) = pre_advised(&app, &dhl, &w, "p-a", "JDA001").await;
    let (b, _) = pre_advised(&app, &dhl, &w, "p-b", "JDB001").await;
    list_holds_kind(&sim, "deposit", 2, None).await;
    cut(&app, &sim, &w).await;
    sim.identify_courier_offline(&dhl.courier_code).expect("identifies");
    let na = sim.deposit_offline("JDA001").expect("a's reservation opens");
    let nb = sim.deposit_offline("JDB001").expect("b's reservation opens");
    // The server never hears: both reservations lapse (24 hours), and a new pre-advice takes
    // one of the compartments it now believes free.
    assert_eq!(
        app.advance(Duration::from_secs(25 * 3600)).await,
        2,
        "both reservations expire"
    );
    assert_eq!(parcel(&app, &a).await["state"], "expected");
    let (_, taken) = pre_advised(&app, &dhl, &w, "p-c", "JDC001").await;
    let (lapsed, unplaced, n_lapsed) = if taken == nb as i64 { (a, b, na) } else { (b, a, nb) };

    let (sim, _) = back(&sim).await;
    let results = sim.replay_journal().await.unwrap();
    assert_eq!(results.len(), 2, "{results:?}");
    // The deposit into a compartment still free stands: reservation_lapsed.
    let r = results
        .iter()
        .find(|r| r["parcel_id"] == lapsed.as_str())
        .expect("a result for the lapsed parcel");
    assert_eq!(r["outcome"], "deposited", "{results:?}");
    assert_eq!(r["conflicts"], json!(["reservation_lapsed"]));
    let p = parcel(&app, &lapsed).await;
    assert_eq!(p["state"], "deposited");
    assert_eq!(app.statuses(&w.locker).await[&(n_lapsed as i64)], "occupied");
    // The one whose compartment went to another parcel cannot be placed: rejected, a person
    // decides; its parcel stays expected and the other reservation stands.
    let other: Vec<&Value> = results.iter().filter(|r| r["outcome"] == "rejected").collect();
    assert_eq!(other.len(), 1, "{results:?}");
    assert!(other[0]["reason"].as_str().unwrap().contains("another parcel"));
    assert_eq!(other[0]["parcel_id"], unplaced.as_str());
    assert_eq!(parcel(&app, &unplaced).await["state"], "expected");
    let alerts = open_alerts(&app).await;
    let kinds: Vec<&str> = alerts.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"offline_conflict") && kinds.contains(&"journal_rejected"),
        "{kinds:?}"
    );
    let p = parcel(&app, &unplaced).await;
    let kinds: Vec<&str> = p["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"offline_deposit_unplaced"), "{kinds:?}");
}

async fn a_collection_code_replaced_while_offline_still_opens_and_is_recorded(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let dhl = carrier(&app, "dhl", None).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    let open = sim
        .deposit(&dhl.id, Identify::Phone("555-010-2030".into()), Size::S, Some("JD0003"))
        .await
        .expect("deposits");
    app.advance(Duration::from_secs(73 * 3600)).await;
    eventually(Duration::from_secs(10), "the parcel expires", || async {
        (parcel(&app, &open.deposit_id).await["state"] == "expired").then_some(())
    })
    .await;
    let collect = json!({"type": "return_collection", "data": {"tracking_number": "JD0003"}});
    let (_, v) = event(&app, &dhl, "c-1", collect.clone()).await;
    let old = v["collection_code"].as_str().unwrap().to_string();
    list_holds_kind(&sim, "collection", 1, None).await;
    cut(&app, &sim, &w).await;
    // A new code while the locker is offline: the old one still opens there.
    let (s, v) = event(&app, &dhl, "c-2", collect).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_ne!(v["collection_code"].as_str().unwrap(), old);
    sim.identify_courier_offline(&dhl.courier_code).expect("identifies");
    // An identification ends with the interaction, as online (120 s without activity).
    app.advance(Duration::from_secs(200)).await;
    assert_eq!(sim.collect_offline(&old), Err(OfflineRefusal::CourierFirst));
    sim.identify_courier_offline(&dhl.courier_code).expect("identifies");
    sim.collect_offline(&old).expect("the old code opens offline");
    let (sim, _) = back(&sim).await;
    let results = sim.replay_journal().await.unwrap();
    assert_eq!(results[0]["outcome"], "returned");
    assert_eq!(results[0]["conflicts"], json!(["code_revoked"]));
    assert_eq!(parcel(&app, &open.deposit_id).await["state"], "returned");
    assert!(open_alerts(&app).await.iter().any(|a| a["kind"] == "offline_conflict"));
    // Journal entries that do not fit their event are rejected and change nothing.
    let entry = {
        let side = sim.offline.lock().unwrap();
        side.list
            .values()
            .find(|e| e.kind == "courier")
            .map(|e| e.entry.clone())
    }
    .expect("a courier entry");
    let at = app.clock.now().and_utc().to_rfc3339();
    let sim = {
        let s = sim.reconnect().await.expect("reconnects");
        boot_claiming(&app, &s, 4).await;
        s
    };
    let r = sim
        .call(
            "ReplayJournal",
            json!({"events": [
                {"seq": 2, "at": at, "kind": "pickup", "compartment": 1, "by": {"entry": entry}},
                {"seq": 3, "at": at, "kind": "wrong_code", "code_kind": "lottery"},
                {"seq": 4, "at": at, "kind": "collection", "compartment": 1, "by": {"entry": entry}, "code_kind": "collection"}
            ]}),
        )
        .await
        .expect("answered");
    let outcomes: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["rejected", "rejected", "rejected"], "{r}");
    assert!(
        r["results"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a pickup entry"),
        "{r}"
    );
}

db_test!(
    a_deactivated_carrier_leaves_every_list_at_once,
    an_idle_list_is_refreshed_at_a_heartbeat
);

async fn a_deactivated_carrier_leaves_every_list_at_once(app: TestApp) {
    let w = world(&app, &[(Size::S, 2)]).await;
    let dhl = carrier(&app, "dhl", None).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    pre_advised(&app, &dhl, &w, "p-1", "JD0004").await;
    let v = list_holds_kind(&sim, "deposit", 1, None).await;
    list_holds_kind(&sim, "courier", 2, None).await;
    let (s, body) = app
        .patch(&format!("/api/v1/carriers/{}", dhl.id), json!({"active": false}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // Its courier entry and its reservation's entry leave the list with the next update.
    list_holds_kind(&sim, "courier", 1, Some(v)).await;
    list_holds_kind(&sim, "deposit", 0, Some(v)).await;
    cut(&app, &sim, &w).await;
    assert_eq!(
        sim.identify_courier_offline(&dhl.courier_code),
        Err(OfflineRefusal::WrongCode)
    );
    // A carrier added meanwhile reaches the list of a locker that comes back.
    let gls = carrier(&app, "gls", None).await;
    let (sim, _) = back(&sim).await;
    list_holds_kind(&sim, "courier", 2, None).await;
    cut(&app, &sim, &w).await;
    sim.identify_courier_offline(&gls.courier_code)
        .expect("the new carrier's drivers identify offline");
}

async fn an_idle_list_is_refreshed_at_a_heartbeat(app: TestApp) {
    let w = world(&app, &[(Size::S, 1)]).await;
    let sim = offline_device(&app, &w, chrono::Duration::zero()).await;
    let v = list_holds_kind(&sim, "courier", 1, None).await;
    let first = sim.offline.lock().unwrap().list.keys().next().cloned().unwrap();
    // Nothing changes at the locker for 31 days: its courier entry (30 days) is made again at
    // the first heartbeat, before a driver finds it expired.
    app.advance(Duration::from_secs(31 * 24 * 3600)).await;
    sim.call("Heartbeat", json!({})).await.expect("heartbeat");
    eventually(Duration::from_secs(20), "a new courier entry", || async {
        let side = sim.offline.lock().unwrap();
        let entries: Vec<&String> = side.list.keys().collect();
        (side.list_version > Some(v) && entries.len() == 1 && *entries[0] != first).then_some(())
    })
    .await;
}
