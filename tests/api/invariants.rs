//! What must hold when a test ends, checked when its `TestApp` is dropped (crates.io's harness
//! does the same): a test that leaves the house inconsistent fails even if every assertion it
//! makes passes.
//!
//! 1. Every compartment's status agrees with the live parcels in it.
//! 2. Every loaded locker actor holds in memory what the database says.
//! 3. No sent or dead notification still holds a plaintext pickup code or QR token.
//! 4. No thread of the test's actix system panicked.
//!
//! 1, 3 and 4 run in `Drop` (plain SQL on a pooled connection). 2 needs the actors to answer,
//! which they cannot while `Drop` blocks the test's thread (the hub runs there): `Drop` queues
//! it and [`crate::helpers::stop_servers`], which every `db_test!` awaits after the test body,
//! runs it before stopping the servers. A test that panicked checks nothing: its own failure
//! says more.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Duration;

use actix::Addr;
use diesel::prelude::*;
use lockerhub::actors::hub::Hub;
use lockerhub::actors::messages::{LoadedLockers, MemorySlots};
use lockerhub::db::schema::{compartments, notification_outbox, parcels};
use lockerhub::db::Db;
use serde_json::Value;

use crate::helpers::PgDatabase;

/// Parcel states that hold their compartment (as `status_from_parcels` reads them).
const LIVE: [&str; 3] = ["reserved", "deposited", "expired"];

pub struct Invariants {
    db: Db,
    hub: Addr<Hub>,
    /// The test's directory (its SQLite file) and PostgreSQL database: dropped after the
    /// checks, never before.
    dir: Option<tempfile::TempDir>,
    pub(crate) pg: Option<PgDatabase>,
    /// The actix system the app runs in: panics are counted per system (see `count_panics`).
    system: usize,
    /// Why this test is exempt, if it is: it corrupts state on purpose.
    pub(crate) skip: Option<&'static str>,
    /// False once the app was replaced (a restart): the new app checks the same database.
    armed: bool,
}

impl Invariants {
    pub fn new(db: Db, hub: Addr<Hub>, dir: tempfile::TempDir, pg: Option<PgDatabase>) -> Self {
        count_panics();
        Self {
            db,
            hub,
            dir: Some(dir),
            pg,
            system: actix::System::current().id(),
            skip: None,
            armed: true,
        }
    }

    /// Checks nothing when dropped, and hands the directory and database on to the app that
    /// replaces this one.
    pub fn disarm(&mut self) -> (tempfile::TempDir, Option<PgDatabase>) {
        self.armed = false;
        (self.dir.take().expect("the test directory"), self.pg.take())
    }
}

impl Drop for Invariants {
    fn drop(&mut self) {
        if !self.armed || self.skip.is_some() || std::thread::panicking() {
            return;
        }
        let mut wrong = Vec::new();
        match self.db.pool().get() {
            Ok(mut c) => {
                wrong.extend(compartments_disagree(&mut c));
                wrong.extend(plaintext_codes(&mut c));
            }
            Err(e) => wrong.push(format!("cannot read the test's database: {e}")),
        }
        wrong.extend(panics_of(self.system));
        if !wrong.is_empty() {
            panic!(
                "invariants broken when the test app was dropped (a test that corrupts state on purpose says so with `skip_invariants`):\n  {}",
                wrong.join("\n  ")
            );
        }
        PENDING.with(|p| {
            p.borrow_mut().push(Pending {
                hub: self.hub.clone(),
                db: self.db.clone(),
                _keep: (self.dir.take(), self.pg.take()),
            })
        });
    }
}

/// A memory check queued by a dropped app, with what must outlive it.
struct Pending {
    hub: Addr<Hub>,
    db: Db,
    _keep: (Option<tempfile::TempDir>, Option<PgDatabase>),
}

thread_local! {
    /// Memory checks queued by dropped apps, run by `stop_servers` (see the module doc). One
    /// that never runs drops its database when the test's thread ends.
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
}

/// Runs the memory checks the apps dropped on this thread queued; each disagreement, one per
/// line. Actors converge on their own (a reply already on its way), so a disagreement must
/// last a bounded while before it counts.
pub async fn memory_checks() -> Vec<String> {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let mut wrong = Vec::new();
    for Pending { hub, db, .. } in &pending {
        let agreed = crate::helpers::bounded(Duration::from_secs(2), || async {
            memory_disagrees(hub, db).await.is_empty().then_some(())
        })
        .await;
        if agreed.is_none() {
            wrong.extend(memory_disagrees(hub, db).await);
        }
    }
    // Only now may the databases go.
    drop(pending);
    wrong
}

async fn memory_disagrees(hub: &Addr<Hub>, db: &Db) -> Vec<String> {
    // A hub already shut down (a test of shutdown) has nothing in memory to compare.
    let Ok(lockers) = hub.send(LoadedLockers).await else {
        return Vec::new();
    };
    let mut wrong = Vec::new();
    for (locker, addr) in lockers {
        // An actor that stopped holds nothing; its successor reloads from the database.
        let Ok(memory) = addr.send(MemorySlots).await else {
            continue;
        };
        let id = locker.clone();
        let stored: Vec<(i32, String)> = match db
            .run(move |c| {
                Ok(compartments::table
                    .filter(compartments::locker_id.eq(&id))
                    .select((compartments::number, compartments::status))
                    .load(c)?)
            })
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                wrong.push(format!("cannot read locker {locker}'s compartments: {e}"));
                continue;
            }
        };
        let stored: BTreeMap<i32, String> = stored.into_iter().collect();
        let memory: BTreeMap<i32, String> = memory.into_iter().map(|(n, s)| (n, s.as_str().to_string())).collect();
        for n in stored
            .keys()
            .chain(memory.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let (m, d) = (memory.get(n), stored.get(n));
            if m != d {
                wrong.push(format!(
                    "locker {locker} compartment {n}: memory says {m:?}, the database says {d:?}"
                ));
            }
        }
    }
    wrong
}

/// Every compartment's status against the live parcels in it. Out of service may hold
/// parcels (a fault does not move them); otherwise: any deposited or expired parcel means
/// occupied, else any reserved one means reserved, else free.
fn compartments_disagree(c: &mut lockerhub::db::DbConn) -> Vec<String> {
    let rows: Vec<(String, String, i32, String)> = compartments::table
        .select((
            compartments::id,
            compartments::locker_id,
            compartments::number,
            compartments::status,
        ))
        .load(c)
        .expect("read compartments");
    let live: Vec<(Option<String>, String, String)> = parcels::table
        .filter(parcels::state.eq_any(LIVE))
        .filter(parcels::compartment_id.is_not_null())
        .select((parcels::compartment_id, parcels::id, parcels::state))
        .load(c)
        .expect("read parcels");
    let mut inside: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for (comp, parcel, state) in live {
        inside
            .entry(comp.unwrap_or_default())
            .or_default()
            .push((parcel, state));
    }
    let mut wrong = Vec::new();
    for (id, locker, number, status) in rows {
        let held = inside.get(&id).map(Vec::as_slice).unwrap_or_default();
        if status == "out_of_service" {
            continue;
        }
        let expected = if held.iter().any(|(_, s)| s != "reserved") {
            "occupied"
        } else if held.is_empty() {
            "free"
        } else {
            "reserved"
        };
        if status != expected {
            wrong.push(format!(
                "compartment status disagrees with its parcels: locker {locker} compartment {number} is {status}, holding {held:?} (expected {expected})"
            ));
        }
    }
    wrong
}

/// Sent and dead notifications are redacted: nothing will send them again.
fn plaintext_codes(c: &mut lockerhub::db::DbConn) -> Vec<String> {
    let rows: Vec<(String, String, String)> = notification_outbox::table
        .filter(notification_outbox::status.eq_any(["sent", "dead"]))
        .select((
            notification_outbox::id,
            notification_outbox::status,
            notification_outbox::payload,
        ))
        .load(c)
        .expect("read notifications");
    let mut wrong = Vec::new();
    for (id, status, payload) in rows {
        let v: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
        for field in ["pickup_code", "qr_token"] {
            if let Some(s) = v.get(field).and_then(Value::as_str) {
                if s != "[redacted]" {
                    wrong.push(format!(
                        "{status} notification {id} still holds its {field} in plaintext"
                    ));
                }
            }
        }
    }
    wrong
}

/// Panics seen per actix system: the test's thread, the server's workers and the hub's
/// arbiters all belong to the system the test started. A panic on a thread outside any
/// system (the blocking pool that runs database work) cannot be attributed to a test and is
/// not counted here; it surfaces as that request's 500 instead.
fn panics() -> &'static Mutex<HashMap<usize, Vec<String>>> {
    static PANICS: OnceLock<Mutex<HashMap<usize, Vec<String>>>> = OnceLock::new();
    PANICS.get_or_init(Mutex::default)
}

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(system) = actix::System::try_current() {
                let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
                if let Ok(mut p) = panics().lock() {
                    p.entry(system.id()).or_default().push(format!("{thread}: {info}"));
                }
            }
            previous(info);
        }));
    });
}

fn panics_of(system: usize) -> Vec<String> {
    let p = panics().lock().map(|p| p.get(&system).cloned()).unwrap_or_default();
    p.unwrap_or_default()
        .into_iter()
        .map(|p| format!("a thread of this test's app panicked: {p}"))
        .collect()
}

/// Each check above can fail: these tests break one invariant on purpose (behind the
/// actors' backs, on SQLite) and expect the drop to say so.
mod they_fail {
    use super::*;
    use crate::helpers::{stop_servers, TestApp};
    use serde_json::json;

    async fn app_with_locker() -> (TestApp, String) {
        let app = TestApp::sqlite().await;
        let site = app.site().await;
        let (locker, _) = app.locker(&site, json!([{"size": "S", "count": 2}])).await;
        // Start the locker actor and wait until it has loaded its memory (it answers after).
        let actor = app
            .hub
            .send(lockerhub::actors::messages::GetLocker {
                locker_id: locker.clone(),
            })
            .await
            .unwrap();
        assert_eq!(actor.send(MemorySlots).await.unwrap().len(), 2);
        (app, locker)
    }

    fn sql(app: &TestApp, statement: String) {
        use diesel::connection::SimpleConnection;
        // A connection of its own: on SQLite the app's pool only reads (its writer owns writes).
        let url =
            lockerhub::db::DatabaseUrl::parse(&app.settings.database_location(), std::time::Duration::from_secs(5))
                .unwrap();
        let pool = lockerhub::db::connect(&url, 1, std::time::Duration::from_secs(5)).unwrap();
        pool.get().unwrap().batch_execute(&statement).unwrap();
    }

    #[actix_web::test]
    #[should_panic(expected = "compartment status disagrees with its parcels: locker")]
    async fn a_compartment_occupied_by_nothing() {
        let (app, locker) = app_with_locker().await;
        sql(
            &app,
            format!("UPDATE compartments SET status = 'occupied' WHERE locker_id = '{locker}' AND number = 1"),
        );
        drop(app);
        stop_servers().await;
    }

    #[actix_web::test]
    #[should_panic(expected = "compartment 2: memory says Some(\"free\"), the database says Some(\"out_of_service\")")]
    async fn memory_that_disagrees_with_the_database() {
        let (app, locker) = app_with_locker().await;
        // Out of service is consistent with any parcels, so only the memory check can object.
        sql(
            &app,
            format!("UPDATE compartments SET status = 'out_of_service' WHERE locker_id = '{locker}' AND number = 2"),
        );
        drop(app);
        stop_servers().await;
    }

    #[actix_web::test]
    #[should_panic(expected = "still holds its pickup_code in plaintext")]
    async fn a_sent_notification_with_its_code() {
        let (app, _) = app_with_locker().await;
        // The outbox row's parcel need not exist for this check: foreign keys are a
        // per-connection setting in SQLite, turned off on this one.
        let path = app
            .settings
            .database_url
            .as_ref()
            .unwrap()
            .expose()
            .replace("sqlite://", "");
        let mut c = diesel::SqliteConnection::establish(&path).unwrap();
        use diesel::connection::SimpleConnection;
        c.batch_execute(
            "PRAGMA foreign_keys = OFF; INSERT INTO notification_outbox (id, parcel_id, kind, payload, status, attempts, next_attempt_at, created_at) \
             VALUES ('n1', 'p1', 'deposited', '{\"pickup_code\": \"12345678\"}', 'sent', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
        )
        .unwrap();
        drop(app);
        stop_servers().await;
    }

    #[actix_web::test]
    #[should_panic(expected = "a thread of this test's app panicked")]
    async fn a_panic_on_one_of_the_apps_threads() {
        let (app, _) = app_with_locker().await;
        let system = actix::System::current();
        let thread = std::thread::Builder::new()
            .name("app-thread".into())
            .spawn(move || {
                actix::System::set_current(system);
                panic!("deliberate, to prove the panic count");
            })
            .unwrap();
        assert!(thread.join().is_err());
        drop(app);
        stop_servers().await;
    }
}
