//! A deadline gets its timer because the commit that scheduled it told the timeout actor, not
//! because a scan found it: here the scan runs once at start (before anything exists) and then
//! only after an hour.

use std::time::Duration;

use lockerhub::domain::Size;
use lockerhub::protocol::messages::Identify;
use lockerhub::simulator::SimLocker;
use serde_json::json;

use crate::db_test;
use crate::helpers::{eventually, TestApp};

/// A short clock hour (50 ms: the 72-hour dwell window is 3.6 s) so the timers this test
/// checks fire while it runs; the scan an hour apart.
fn no_scan(s: &mut lockerhub::config::Settings) {
    s.hour_ms = 50;
    s.deadline_scan_ms = 3_600_000;
}

db_test!(a_committed_deadline_is_scheduled_without_a_scan with super::no_scan);

async fn a_committed_deadline_is_scheduled_without_a_scan(app: TestApp) {
    let site = app.site().await;
    let (locker, credential) = app.locker(&site, json!([{"size": "S", "count": 1}])).await;
    let carrier = app.carrier("ups").await["carrier"]["id"].as_str().unwrap().to_string();
    app.recipient(&site, "Ann", "+15550102030").await;
    let sim = SimLocker::connect(&app.ws_base(), &locker, &credential, &[(1, Size::S)])
        .await
        .unwrap();
    sim.boot().await.unwrap();
    assert_eq!(
        app.scheduled_deadlines().await,
        0,
        "nothing scheduled before the deposit"
    );

    let open = sim
        .deposit(&carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    // The deposit's commit scheduled its reminders and its expiry (all within the horizon):
    // the timeout actor is told after the commit, asynchronously.
    let scheduled = eventually(Duration::from_secs(5), "the deposit's deadlines get timers", || async {
        let n = app.scheduled_deadlines().await;
        (n > 0).then_some(n)
    })
    .await;
    assert_eq!(scheduled, 3, "two reminders and the dwell expiry");
    // Those timers fire on their own: the parcel expires with nothing else prodding.
    eventually(
        Duration::from_secs(15),
        "the dwell expiry fires from its timer",
        || async {
            let (_, p) = app.get(&format!("/api/v1/parcels/{}", open.deposit_id)).await;
            (p["state"] == "expired").then_some(())
        },
    )
    .await;
    assert_eq!(
        app.scheduled_deadlines().await,
        0,
        "every timer fired and was forgotten"
    );
}
