//! The write path's statements are prepared once per connection. diesel caches a prepared
//! statement only when it judges the query safe to cache, and it never judges an `UPDATE` so;
//! every parcel's updates were parsed and planned again. Watched through diesel's
//! instrumentation on the connection that writes (SQLite's writer; on PostgreSQL the pool is
//! cut to one connection for this test), while parcels go in and out through a simulated
//! locker. A deposit's deadlines are one multi-row insert, and a device call's answer is stored
//! without looking its id up first.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use diesel::connection::{Connection, InstrumentationEvent};
use lockerhub::domain::Size;
use lockerhub::protocol::messages::{Identify, Pickup};
use lockerhub::simulator::SimLocker;
use serde_json::json;

use crate::db_test;
use crate::helpers::TestApp;

db_test!(the_write_path_prepares_each_statement_once with |s| s.db_pool_size = 1);

/// How often each statement text ran, and how often it was prepared into the cache.
#[derive(Default)]
struct Seen {
    ran: BTreeMap<String, usize>,
    cached: BTreeMap<String, usize>,
}

/// What a transaction or savepoint runs as plain SQL (`batch_execute`): never prepared.
fn plain(sql: &str) -> bool {
    ["BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK", "PRAGMA"]
        .iter()
        .any(|p| sql.trim_start().to_ascii_uppercase().starts_with(p))
}

fn is_write(sql: &str) -> bool {
    ["INSERT", "UPDATE", "DELETE"].iter().any(|w| sql.starts_with(w))
}

async fn watch(app: &TestApp, seen: Option<Arc<Mutex<Seen>>>) {
    app.db
        .run(move |c| {
            match seen {
                Some(seen) => c.set_instrumentation(move |e: InstrumentationEvent<'_>| {
                    let mut seen = seen.lock().unwrap();
                    match e {
                        InstrumentationEvent::StartQuery { query, .. } => {
                            let text = query.to_string();
                            let sql = text.split(" -- binds: ").next().unwrap_or_default().to_string();
                            *seen.ran.entry(sql).or_default() += 1;
                        }
                        InstrumentationEvent::CacheQuery { sql, .. } => {
                            *seen.cached.entry(sql.to_string()).or_default() += 1;
                        }
                        _ => {}
                    }
                }),
                None => c.set_instrumentation(|_: InstrumentationEvent<'_>| {}),
            }
            Ok(())
        })
        .await
        .expect("set the writing connection's instrumentation");
}

async fn the_write_path_prepares_each_statement_once(app: TestApp) {
    let site = app.site().await;
    let (locker, credential) = app.locker(&site, json!([{"size": "S", "count": 4}])).await;
    let carrier = app.carrier("ups").await["carrier"]["id"].as_str().unwrap().to_string();
    app.recipient(&site, "Ann Lee", "+1 555 010 2030").await;
    let layout: Vec<(i32, Size)> = (1..=4).map(|n| (n, Size::S)).collect();
    let sim = SimLocker::connect(&app.ws_base(), &locker, &credential, &layout)
        .await
        .expect("connects");
    assert_eq!(sim.boot().await.expect("boots").status, "Accepted");

    let seen = Arc::new(Mutex::new(Seen::default()));
    watch(&app, Some(seen.clone())).await;
    for _ in 0..3 {
        let open = sim
            .start_deposit(&carrier, Identify::Phone("555-010-2030".into()), Size::S, None)
            .await
            .expect("deposit starts");
        assert_eq!(sim.put_parcel(open.compartment).await.unwrap(), "deposited");
        let (code, _) = app.pickup_secrets(&open.deposit_id).await;
        let picked = sim.pickup(Pickup::Code(code)).await.expect("pickup opens");
        assert_eq!(picked.compartment, open.compartment);
    }
    watch(&app, None).await;

    let seen = seen.lock().unwrap();
    // Writes only: each of these texts runs for the first time on this connection in the
    // watched window (the world's rows are written by other statements), so a cached one shows
    // exactly one preparation. A read may have been prepared before the window (admin
    // authentication), and would show none either way.
    let repeated: Vec<(&String, &usize)> = seen
        .ran
        .iter()
        .filter(|(sql, n)| **n >= 3 && !plain(sql) && is_write(sql))
        .collect();
    let updates = repeated.iter().filter(|(sql, _)| sql.starts_with("UPDATE")).count();
    let inserts = repeated.iter().filter(|(sql, _)| sql.starts_with("INSERT")).count();
    assert!(
        updates >= 5 && inserts >= 5,
        "the parcel, compartment, deadline and outbox writes ran for every parcel: {:#?}",
        seen.ran
    );
    // A deposit's dwell expiry and reminders go in as one statement.
    assert!(
        repeated
            .iter()
            .any(|(sql, _)| sql.starts_with("INSERT INTO") && sql.contains("deadlines") && sql.contains("), (")),
        "a parcel's deadlines are inserted together: {:#?}",
        seen.ran
    );
    // A call that stores its answer (a deposit's start and close, a pickup and its close) does
    // not look its id up before it runs: one upsert stores the answer and leaves a stored
    // answer to the same call alone (the rare retry then rolls back). Only the door openings,
    // which the locker's memory answers, look the id up afterwards, so that a stored answer
    // wins; on SQLite they read through the pool and do not show here. Before, every one of
    // the six calls per parcel looked its id up.
    let lookups: usize = seen
        .ran
        .iter()
        .filter(|(sql, _)| sql.starts_with("SELECT") && sql.contains("device_calls") && sql.contains("answer"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        lookups <= 2 * 3,
        "{lookups} lookups of a call id for 3 parcels: {:#?}",
        seen.ran
    );
    assert!(
        repeated.iter().any(|(sql, _)| sql.starts_with("INSERT INTO")
            && sql.contains("device_calls")
            && sql.contains("ON CONFLICT")),
        "device answers are stored by an upsert: {:#?}",
        seen.ran
    );
    let uncached: Vec<&String> = repeated
        .iter()
        .filter(|(sql, _)| seen.cached.get(*sql) != Some(&1))
        .map(|(sql, _)| *sql)
        .collect();
    assert!(
        uncached.is_empty(),
        "statements run for every parcel but not prepared exactly once: {uncached:#?}\ncached: {:#?}",
        seen.cached
    );
}
