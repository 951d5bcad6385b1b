//! Acknowledged means durable: the real binary is killed with SIGKILL while lockers deposit
//! parcels through the SQLite writer's group commits, started again on the same files, and
//! every deposit a locker was told about is there, each in its own compartment.
//!
//! A process kill cannot show what a power cut would lose (`synchronous = FULL` is for that,
//! see `writer::commits_are_synchronous_full_by_default`); it shows that no answer leaves the
//! server before the commit that holds its change.

use std::collections::HashSet;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use awc::http::StatusCode;
use lockerhub::domain::Size;
use lockerhub::protocol::messages::Identify;
use lockerhub::simulator::SimLocker;
use serde_json::{json, Value};

use crate::cli::{create_admin_key, lockerhub};
use crate::helpers::{eventually, free_port, read};

const LOCKERS: usize = 4;
const COMPARTMENTS: i32 = 24;
/// Deposits acknowledged before the kill; more are in flight when it lands.
const BEFORE_KILL: usize = 24;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(dir: &std::path::Path) -> Server {
    let port = free_port();
    let child = lockerhub(dir)
        .arg("serve")
        .env("LOCKERHUB_PORT", port.to_string())
        .env("LOCKERHUB_PICKUP_SECOND_FACTOR", "optional")
        .env("LOCKERHUB_NOTIFICATIONS_PAUSED", "true")
        .spawn()
        .expect("server starts");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = awc::Client::default();
    let url = format!("{}/readyz", server.base);
    eventually(Duration::from_secs(60), "the server answers /readyz", || {
        let req = client.get(&url).send();
        async move { req.await.ok().filter(|r| r.status() == StatusCode::OK).map(drop) }
    })
    .await;
    server
}

async fn post(client: &awc::Client, server: &Server, key: &str, path: &str, body: Value) -> Value {
    let resp = client
        .post(format!("{}{path}", server.base))
        .bearer_auth(key)
        .send_json(&body)
        .await
        .expect("request");
    let (s, v) = read(resp).await;
    assert_eq!(s, StatusCode::CREATED, "{path}: {v}");
    v
}

async fn get(client: &awc::Client, server: &Server, key: &str, path: &str) -> Value {
    let resp = client
        .get(format!("{}{path}", server.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    let (s, v) = read(resp).await;
    assert_eq!(s, StatusCode::OK, "{path}: {v}");
    v
}

#[actix_web::test]
async fn a_kill_during_deposits_loses_no_acknowledged_deposit() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_admin_key(dir.path());
    let server = start(dir.path()).await;
    let client = awc::Client::default();

    let site = post(
        &client,
        &server,
        &key,
        "/api/v1/sites",
        json!({"name": "Elm Court", "address": "1 Elm St", "time_zone": "America/New_York"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let carrier = post(
        &client,
        &server,
        &key,
        "/api/v1/carriers",
        json!({"code": "ups", "name": "UPS"}),
    )
    .await["carrier"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    post(
        &client,
        &server,
        &key,
        "/api/v1/recipients",
        json!({"site_id": site, "name": "Ann Lee", "unit": "4B", "phone": "+1 555 010 2030", "email": "r@example.org"}),
    )
    .await;
    let layout: Vec<(i32, Size)> = (1..=COMPARTMENTS).map(|n| (n, Size::S)).collect();
    let mut lockers = Vec::new();
    for _ in 0..LOCKERS {
        let v = post(
            &client,
            &server,
            &key,
            "/api/v1/lockers",
            json!({"site_id": site, "name": "Lobby", "layout": [{"size": "S", "count": COMPARTMENTS}]}),
        )
        .await;
        let id = v["locker"]["id"].as_str().unwrap().to_string();
        let credential = v["device_credential"].as_str().unwrap().to_string();
        let ws = server.base.replacen("http://", "ws://", 1);
        let sim = SimLocker::connect(&ws, &id, &credential, &layout)
            .await
            .expect("connects");
        sim.boot().await.expect("boots");
        lockers.push((id, sim));
    }

    // Every locker deposits one parcel after another; what a locker is told was deposited
    // goes into the ledger.
    let acked: Arc<Mutex<Vec<(String, String, i32)>>> = Arc::default();
    let mut tasks = Vec::new();
    for (id, sim) in lockers {
        let (acked, carrier) = (acked.clone(), carrier.clone());
        tasks.push(actix_web::rt::spawn(async move {
            for _ in 0..COMPARTMENTS {
                let identify = Identify::Phone("5550102030".into());
                match sim.deposit(&carrier, identify, Size::S, None).await {
                    Ok(open) => acked
                        .lock()
                        .unwrap()
                        .push((open.deposit_id, id.clone(), open.compartment)),
                    // The kill: what was in flight has no answer, so no promise was made.
                    Err(_) => return,
                }
            }
        }));
    }
    eventually(Duration::from_secs(120), "deposits are acknowledged", || {
        let n = acked.lock().unwrap().len();
        async move { (n >= BEFORE_KILL).then_some(()) }
    })
    .await;
    let mut server = server;
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let ledger = acked.lock().unwrap().clone();
    assert!(ledger.len() >= BEFORE_KILL);

    let server = start(dir.path()).await;
    let mut places = HashSet::new();
    for (parcel, locker, compartment) in &ledger {
        let v = get(&client, &server, &key, &format!("/api/v1/parcels/{parcel}")).await;
        assert_eq!(v["state"], "deposited", "acknowledged deposit {parcel}: {v}");
        assert_eq!(v["locker_id"], locker.as_str());
        assert!(
            places.insert((locker.clone(), *compartment)),
            "two acknowledged parcels in compartment {compartment} of {locker}"
        );
    }
    for locker in ledger.iter().map(|(_, l, _)| l).collect::<HashSet<_>>() {
        let comps = get(
            &client,
            &server,
            &key,
            &format!("/api/v1/lockers/{locker}/compartments"),
        )
        .await;
        for (_, l, n) in ledger.iter().filter(|(_, l, _)| l == locker) {
            let c = comps
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["number"] == *n)
                .unwrap_or_else(|| panic!("compartment {n} of {l}: {comps}"));
            assert_eq!(c["status"], "occupied", "compartment {n} of {l}: {c}");
        }
    }
}
