//! Webhooks and notifications leave because their commit woke the actor, not because a scan
//! found them: every suite runs with the outbox scan an hour apart (helpers::base_settings),
//! and this test says so explicitly and reports how long the first attempt takes.

use std::time::{Duration, Instant};

use lockerhub::domain::Size;
use lockerhub::protocol::messages::Identify;
use lockerhub::simulator::SimLocker;
use serde_json::json;

use crate::carrier_api::carrier;
use crate::db_test;
use crate::helpers::{Receiver, TestApp};

db_test!(commits_wake_the_outbox_actors with |s| s.outbox_poll_ms = 3_600_000);

async fn commits_wake_the_outbox_actors(app: TestApp) {
    assert_eq!(
        app.settings.outbox_poll_ms, 3_600_000,
        "the safety-net scan never runs here"
    );
    let rx = Receiver::start(0).await;
    let ups = carrier(&app, "ups", Some(&rx.url)).await;
    let site = app.site().await;
    let (locker, credential) = app.locker(&site, json!([{"size": "S", "count": 10}])).await;
    let (s, v) = app
        .post(
            "/api/v1/recipients",
            json!({"site_id": site, "name": "Ann Lee", "unit": "1A", "email": "ann@example.org",
                   "phone": "+15550102030", "channels": ["email"]}),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let layout: Vec<(i32, Size)> = (1..=10).map(|n| (n, Size::S)).collect();
    let sim = SimLocker::connect(&app.ws_base(), &locker, &credential, &layout)
        .await
        .unwrap();
    sim.boot().await.unwrap();

    let mut webhook_ms = Vec::new();
    let mut mail_ms = Vec::new();
    for i in 0..10 {
        let tracking = format!("1Z999AA1000000010{i}");
        sim.deposit(&ups.id, Identify::Phone("5550102030".into()), Size::S, Some(&tracking))
            .await
            .expect("deposit");
        // The deposit is committed before the device is answered: from here, both messages
        // are the actors' to send. Bounded waits (the scan would take an hour); the latency
        // comes from when each receiver recorded its arrival, not from how often we look.
        let t = Instant::now();
        let hook = crate::helpers::eventually(Duration::from_secs(10), "the webhook left without a scan", || async {
            rx.arrivals.lock().unwrap().get(i).copied()
        })
        .await;
        let mail = app
            .smtp
            .wait_for(&tracking, Duration::from_secs(10))
            .await
            .expect("the notification left without a scan");
        webhook_ms.push(hook.saturating_duration_since(t).as_secs_f64() * 1e3);
        mail_ms.push(mail.received_at.saturating_duration_since(t).as_secs_f64() * 1e3);
    }
    // Reported, not asserted (speed is measured in benchmarks): the closing note quotes it.
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "commit to first attempt, 10 deposits: webhook max {:.1} ms, mail received max {:.1} ms",
        max(&webhook_ms),
        max(&mail_ms)
    );
}
