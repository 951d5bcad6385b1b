//! Remote opens: reasons, rate limits, the approval window, the audit, and what the door
//! events after a remote open do to the parcel inside; admin keys' holders, roles and revocation.

use std::time::Duration;

use awc::http::{Method, StatusCode};
use lockerhub::domain::Size;
use lockerhub::protocol::messages::Identify;
use lockerhub::protocol::ErrorCode;
use lockerhub::simulator::{Behaviour, RemoteOpenHands, SimLocker};
use serde_json::{json, Value};

use crate::db_test;
use crate::helpers::{assert_error, eventually, read, TestApp};

/// A site with one locker of `n` S compartments, one carrier, one resident.
struct World {
    locker: String,
    credential: String,
    carrier: String,
    layout: Vec<(i32, Size)>,
}

async fn world(app: &TestApp, n: i32) -> World {
    let site = app.site().await;
    let (locker, credential) = app.locker(&site, json!([{"size": "S", "count": n}])).await;
    let carrier = app.carrier("ups").await["carrier"]["id"].as_str().unwrap().to_string();
    app.recipient(&site, "Ann Lee", "+1 555 010 2030").await;
    World {
        locker,
        credential,
        carrier,
        layout: (1..=n).map(|i| (i, Size::S)).collect(),
    }
}

async fn device(app: &TestApp, w: &World, hands: RemoteOpenHands) -> SimLocker {
    let behaviour = Behaviour {
        remote_open: hands,
        ..Behaviour::default()
    };
    let sim = SimLocker::connect_with(&app.ws_base(), &w.locker, &w.credential, &w.layout, behaviour, None)
        .await
        .expect("connects");
    assert_eq!(sim.boot().await.expect("boots").status, "Accepted");
    sim
}

/// A request with another admin key.
async fn call_as(app: &TestApp, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = app.client.request(method, app.url(path)).bearer_auth(token);
    let resp = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    };
    read(resp.expect("request sent")).await
}

/// Creates an admin key through the API; returns (id, secret).
async fn key(app: &TestApp, holder: &str, role: &str) -> (String, String) {
    let (s, v) = app
        .post("/api/v1/admin-keys", json!({"holder": holder, "role": role}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["key"]["holder"], holder.trim());
    assert_eq!(v["key"]["role"], role);
    (
        v["key"]["id"].as_str().unwrap().to_string(),
        v["secret"].as_str().unwrap().to_string(),
    )
}

fn open_path(w: &World, n: i32) -> String {
    format!("/api/v1/lockers/{}/compartments/{n}/open", w.locker)
}

async fn audit(app: &TestApp, w: &World) -> Vec<Value> {
    let (s, v) = app.get(&format!("/api/v1/lockers/{}/remote-opens", w.locker)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["items"].as_array().unwrap().clone()
}

fn outcomes(items: &[Value]) -> Vec<&str> {
    items.iter().map(|r| r["outcome"].as_str().unwrap()).collect()
}

fn calls(sim: &SimLocker) -> usize {
    sim.server_calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(a, _)| a == "OpenCompartment")
        .count()
}

/// A parcel deposited by phone into the locker; returns (parcel id, compartment).
async fn deposited(sim: &SimLocker, w: &World) -> (String, i32) {
    let open = sim
        .deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .expect("deposited");
    (open.deposit_id, open.compartment)
}

async fn parcel(app: &TestApp, id: &str) -> Value {
    let (s, v) = app.get(&format!("/api/v1/parcels/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn event_kinds(p: &Value) -> Vec<String> {
    p["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

db_test!(
    every_attempt_is_audited_and_a_reason_is_required,
    beyond_the_window_a_second_person_must_approve,
    a_parcel_taken_out_after_a_remote_open_is_removed,
    viewer_keys_only_read,
    revocation_takes_effect_at_once,
);
db_test!(each_admin_key_has_a_rate_limit with |s| {
    s.remote_open_per_key_burst = 2;
    s.remote_open_window_max = 100;
});
db_test!(each_locker_has_a_rate_limit with |s| {
    s.remote_open_per_locker_burst = 2;
    s.remote_open_window_max = 100;
});
db_test!(pending_approvals_survive_a_restart_and_expire with |s| s.remote_open_window_max = 0);

async fn every_attempt_is_audited_and_a_reason_is_required(app: TestApp) {
    let w = world(&app, 3).await;
    let sim = device(&app, &w, RemoteOpenHands::LeaveOpen).await;
    let (pid, n) = deposited(&sim, &w).await;

    for body in [json!({}), json!({"reason": "   "}), json!({"reason": "x".repeat(201)})] {
        assert_error(
            &app.post(&open_path(&w, n), body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    assert_eq!(calls(&sim), 0, "no reason, no open");
    assert_error(
        &app.post(&open_path(&w, 9), json!({"reason": "inspection"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let (s, v) = app.post(&open_path(&w, n), json!({"reason": " smell of gas "})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "opened");
    assert_eq!(v["remote_open"]["outcome"], "opened");
    assert_eq!(v["remote_open"]["reason"], "smell of gas");
    assert_eq!(v["remote_open"]["parcel_id"], pid.as_str());
    assert_eq!(calls(&sim), 1);
    // Closed with the parcel still inside: the parcel stays deposited.
    assert_eq!(sim.close_remote_door(n, false).await.unwrap(), "none");
    let p = parcel(&app, &pid).await;
    assert_eq!(p["state"], "deposited");
    let kinds = event_kinds(&p);
    assert!(kinds.contains(&"remote_opened".to_string()), "{kinds:?}");
    assert_eq!(kinds.last().unwrap(), "remote_door_closed");
    assert_eq!(app.statuses(&w.locker).await[&(n as i64)], "occupied");

    let items = audit(&app, &w).await;
    assert_eq!(
        outcomes(&items),
        vec!["refused", "refused", "refused", "refused", "opened"]
    );
    assert!(items[0]["detail"].as_str().unwrap().contains("reason"));
    assert_eq!(items[3]["detail"], "no such compartment");
    assert_eq!(items[3]["compartment"], 9);
    let (_, keys) = app.get("/api/v1/admin-keys").await;
    let me = keys["items"][0]["id"].as_str().unwrap().to_string();
    for r in &items {
        assert_eq!(r["admin_key_id"], me.as_str());
        assert_eq!(r["holder"], "test");
        assert!(r["requested_at"].is_string());
    }
    let open_id = items[4]["id"].as_str().unwrap();
    let (s, one) = app
        .get(&format!("/api/v1/lockers/{}/remote-opens/{open_id}", w.locker))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["outcome"], "opened");
    let (s, by_parcel) = app.get(&format!("/api/v1/parcels/{pid}/remote-opens")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(outcomes(by_parcel["items"].as_array().unwrap()), vec!["opened"]);
    assert_error(
        &app.get(&format!("/api/v1/lockers/{}/remote-opens/nope", w.locker))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // A locker that is not connected: recorded as failed.
    sim.disconnect().await;
    assert_error(
        &app.post(&open_path(&w, 1), json!({"reason": "inspection"})).await,
        StatusCode::CONFLICT,
        "locker_offline",
    );
    assert_eq!(outcomes(&audit(&app, &w).await).last().copied(), Some("failed"));
}

async fn each_admin_key_has_a_rate_limit(app: TestApp) {
    let w = world(&app, 3).await;
    let sim = device(&app, &w, RemoteOpenHands::CloseUntouched).await;
    for n in [1, 2] {
        let (s, v) = app.post(&open_path(&w, n), json!({"reason": "inspection"})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let resp = app
        .client
        .post(app.url(&open_path(&w, 3)))
        .bearer_auth(&app.admin_key)
        .send_json(&json!({"reason": "inspection"}))
        .await
        .unwrap();
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=360).contains(&retry), "{retry}");
    let got = read(resp).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(calls(&sim), 2);
    // Another person's key has its own allowance.
    let (_, other) = key(&app, "Bob Roe", "operator").await;
    let (s, v) = call_as(
        &app,
        &other,
        Method::POST,
        &open_path(&w, 3),
        Some(json!({"reason": "inspection"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let items = audit(&app, &w).await;
    assert_eq!(outcomes(&items), vec!["opened", "opened", "refused", "opened"]);
    assert!(items[2]["detail"].as_str().unwrap().contains("admin key"));
}

async fn each_locker_has_a_rate_limit(app: TestApp) {
    let w = world(&app, 3).await;
    let sim = device(&app, &w, RemoteOpenHands::CloseUntouched).await;
    for n in [1, 2] {
        let (s, v) = app.post(&open_path(&w, n), json!({"reason": "inspection"})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // A different key does not help: the locker's allowance is spent.
    let (_, other) = key(&app, "Bob Roe", "operator").await;
    let got = call_as(
        &app,
        &other,
        Method::POST,
        &open_path(&w, 3),
        Some(json!({"reason": "inspection"})),
    )
    .await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(calls(&sim), 2);
    let items = audit(&app, &w).await;
    assert_eq!(outcomes(&items), vec!["opened", "opened", "refused"]);
    assert!(items[2]["detail"].as_str().unwrap().contains("locker"));
}

async fn beyond_the_window_a_second_person_must_approve(app: TestApp) {
    let w = world(&app, 6).await;
    let sim = device(&app, &w, RemoteOpenHands::CloseUntouched).await;
    for n in 1..=3 {
        let (s, v) = app.post(&open_path(&w, n), json!({"reason": "inspection"})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, v) = app.post(&open_path(&w, 4), json!({"reason": "inspection"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "pending_approval");
    assert!(v["remote_open"]["expires_at"].is_string());
    assert_eq!(calls(&sim), 3, "nothing is opened while it waits");
    let pending = v["remote_open"]["id"].as_str().unwrap().to_string();
    let approve = format!("/api/v1/lockers/{}/remote-opens/{pending}/approve", w.locker);

    // Not by the person who asked, whichever of their keys they use.
    assert_error(
        &app.post(&approve, json!({})).await,
        StatusCode::FORBIDDEN,
        "same_holder",
    );
    let (_, same_person) = key(&app, " TEST ", "operator").await;
    let got = call_as(&app, &same_person, Method::POST, &approve, None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "same_holder");
    assert_eq!(calls(&sim), 3);

    let (bob_id, bob) = key(&app, "Bob Roe", "operator").await;
    let (s, v) = call_as(&app, &bob, Method::POST, &approve, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "opened");
    assert_eq!(v["remote_open"]["outcome"], "opened");
    assert_eq!(v["remote_open"]["decided_by"], bob_id.as_str());
    assert_eq!(v["remote_open"]["decided_by_holder"], "Bob Roe");
    assert_eq!(calls(&sim), 4);
    let got = call_as(&app, &bob, Method::POST, &approve, None).await;
    assert_error(&got, StatusCode::CONFLICT, "not_pending");

    // Another one waits too, and the person who asked may withdraw it.
    let (s, v) = app.post(&open_path(&w, 5), json!({"reason": "inspection"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let id = v["remote_open"]["id"].as_str().unwrap();
    let (s, v) = app
        .post(
            &format!("/api/v1/lockers/{}/remote-opens/{id}/reject", w.locker),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["remote_open"]["outcome"], "rejected");
    let got = call_as(
        &app,
        &bob,
        Method::POST,
        &format!("/api/v1/lockers/{}/remote-opens/{id}/approve", w.locker),
        None,
    )
    .await;
    assert_error(&got, StatusCode::CONFLICT, "not_pending");
    assert_eq!(calls(&sim), 4);
    assert_eq!(
        outcomes(&audit(&app, &w).await),
        vec!["opened", "opened", "opened", "opened", "rejected"]
    );
}

async fn pending_approvals_survive_a_restart_and_expire(app: TestApp) {
    let w = world(&app, 3).await;
    let sim = device(&app, &w, RemoteOpenHands::CloseUntouched).await;
    let (_, bob) = key(&app, "Bob Roe", "operator").await;
    let mut ids = Vec::new();
    for n in [1, 2] {
        let (s, v) = app.post(&open_path(&w, n), json!({"reason": "inspection"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        ids.push(v["remote_open"]["id"].as_str().unwrap().to_string());
    }
    assert_eq!(calls(&sim), 0);
    sim.disconnect().await;
    let app = app.restart().await;
    let sim = device(&app, &w, RemoteOpenHands::CloseUntouched).await;
    assert_eq!(
        outcomes(&audit(&app, &w).await),
        vec!["pending_approval", "pending_approval"]
    );

    let approve = |id: &str| format!("/api/v1/lockers/{}/remote-opens/{id}/approve", w.locker);
    let (s, v) = call_as(&app, &bob, Method::POST, &approve(&ids[0]), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(calls(&sim), 1);

    app.clock.advance(Duration::from_secs(901));
    let got = call_as(&app, &bob, Method::POST, &approve(&ids[1]), None).await;
    assert_error(&got, StatusCode::CONFLICT, "approval_expired");
    assert_eq!(calls(&sim), 1);
    assert_eq!(outcomes(&audit(&app, &w).await), vec!["opened", "expired"]);
}

async fn a_parcel_taken_out_after_a_remote_open_is_removed(app: TestApp) {
    let w = world(&app, 2).await;
    let sim = device(&app, &w, RemoteOpenHands::LeaveOpen).await;
    let (pid, n) = deposited(&sim, &w).await;
    let (code, _) = app.pickup_secrets(&pid).await;

    let (s, v) = app.post(&open_path(&w, n), json!({"reason": "parcel leaking"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(sim.close_remote_door(n, true).await.unwrap(), "none");

    let p = parcel(&app, &pid).await;
    assert_eq!(p["state"], "removed");
    let closed = p["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(closed["kind"], "remote_door_closed");
    assert_eq!(closed["to_state"], "removed");
    assert_eq!(app.statuses(&w.locker).await[&(n as i64)], "free");
    let hooks = app.webhooks_for(&pid).await;
    let removed = &hooks.last().unwrap();
    assert_eq!(removed.0, "parcel.removed");
    assert_eq!(removed.1["data"]["compartment"], n);
    assert!(removed.1["data"]["removed_at"].is_string());
    assert!(app.webhooks_match_the_document().await.contains("parcel.removed"));
    // The code no longer opens anything.
    let err = sim.call("Pickup", json!({"code": code})).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidCode));
    // The recipient is told.
    eventually(Duration::from_secs(20), "the removal notice is sent", || async {
        let (_, log) = app.get(&format!("/api/v1/parcels/{pid}/notifications")).await;
        log.as_array()?
            .iter()
            .any(|n| n["kind"] == "removed" && n["status"] == "sent")
            .then_some(())
    })
    .await;
    let (_, by_parcel) = app.get(&format!("/api/v1/parcels/{pid}/remote-opens")).await;
    assert_eq!(by_parcel["items"][0]["reason"], "parcel leaking");
}

async fn viewer_keys_only_read(app: TestApp) {
    let w = world(&app, 1).await;
    let (_, viewer) = key(&app, "Val Viewer", "viewer").await;
    let (s, _) = call_as(&app, &viewer, Method::GET, "/api/v1/sites", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call_as(
        &app,
        &viewer,
        Method::GET,
        &format!("/api/v1/lockers/{}/remote-opens", w.locker),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let got = call_as(
        &app,
        &viewer,
        Method::POST,
        &open_path(&w, 1),
        Some(json!({"reason": "inspection"})),
    )
    .await;
    assert_error(&got, StatusCode::FORBIDDEN, "read_only_key");
    let got = call_as(
        &app,
        &viewer,
        Method::POST,
        "/api/v1/sites",
        Some(json!({"name": "X", "address": "Y", "time_zone": "UTC"})),
    )
    .await;
    assert_error(&got, StatusCode::FORBIDDEN, "read_only_key");
    let got = call_as(&app, &viewer, Method::GET, "/api/v1/admin-keys", None).await;
    assert_error(&got, StatusCode::FORBIDDEN, "admin_role_required");
    // Operators run the building but do not hand out keys.
    let (_, operator) = key(&app, "Olga Op", "operator").await;
    let got = call_as(
        &app,
        &operator,
        Method::POST,
        "/api/v1/admin-keys",
        Some(json!({"holder": "Eve", "role": "admin"})),
    )
    .await;
    assert_error(&got, StatusCode::FORBIDDEN, "admin_role_required");
    assert_error(
        &app.post("/api/v1/admin-keys", json!({"holder": "", "role": "viewer"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(
        app.post("/api/v1/admin-keys", json!({"holder": "Eve", "role": "root"}))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        audit(&app, &w).await.len(),
        0,
        "a viewer's attempt never reaches the audit"
    );
}

async fn revocation_takes_effect_at_once(app: TestApp) {
    let (_, keys) = app.get("/api/v1/admin-keys").await;
    let me = keys["items"][0]["id"].as_str().unwrap().to_string();
    let (op_id, op) = key(&app, "Olga Op", "operator").await;
    let (s, _) = call_as(&app, &op, Method::GET, "/api/v1/sites", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app.post(&format!("/api/v1/admin-keys/{op_id}/revoke"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["revoked_at"].is_string());
    assert_eq!(v["revoked_by"], me.as_str());
    assert_eq!(v["created_by"], me.as_str());
    let got = call_as(&app, &op, Method::GET, "/api/v1/sites", None).await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_error(
        &app.post(&format!("/api/v1/admin-keys/{op_id}/revoke"), json!({})).await,
        StatusCode::CONFLICT,
        "already_revoked",
    );
    // The last admin-role key stays: someone must be able to make keys.
    assert_error(
        &app.post(&format!("/api/v1/admin-keys/{me}/revoke"), json!({})).await,
        StatusCode::CONFLICT,
        "last_admin",
    );
    assert_error(
        &app.get("/api/v1/admin-keys/0190f0f0-0000-7000-8000-000000000000").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (new_id, new_admin) = key(&app, "Ada Admin", "admin").await;
    let (s, one) = app.get(&format!("/api/v1/admin-keys/{new_id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["holder"], "Ada Admin");
    assert!(one.get("secret").is_none() && one.get("key_hash").is_none());
    let (s, _) = call_as(
        &app,
        &new_admin,
        Method::POST,
        &format!("/api/v1/admin-keys/{me}/revoke"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_error(
        &app.get("/api/v1/sites").await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let (s, list) = call_as(&app, &new_admin, Method::GET, "/api/v1/admin-keys", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
}
