//! The test app: the real server on port 0, on a fresh SQLite file or a fresh PostgreSQL database.

use std::time::Duration;

use awc::http::{Method, StatusCode};
use diesel::connection::SimpleConnection;
use diesel::Connection;
use lockerhub::config::{Secret, Settings};
use lockerhub::db::{admin_keys, Db};
use lockerhub::startup::Application;
use serde_json::Value;

/// Defines `sqlite` and `postgres` tests for each named `async fn(TestApp)`. The PostgreSQL
/// one runs when `TEST_DATABASE_URL` is set (at build time: build.rs) and is reported as
/// ignored otherwise, never as passed. Each stops the
/// servers it started when it ends ([`stop_servers`]).
#[macro_export]
macro_rules! db_test {
    ($name:ident with $tweak:expr) => {
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::$name($crate::helpers::TestApp::sqlite_with($tweak).await).await;
                $crate::helpers::stop_servers().await
            }
            #[actix_web::test]
            #[cfg_attr(not(postgres_tests), ignore = "PostgreSQL: set TEST_DATABASE_URL to run")]
            async fn postgres() {
                super::$name($crate::helpers::TestApp::postgres_with($tweak).await).await;
                $crate::helpers::stop_servers().await
            }
        }
    };
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::$name($crate::helpers::TestApp::sqlite().await).await;
                $crate::helpers::stop_servers().await
            }
            #[actix_web::test]
            #[cfg_attr(not(postgres_tests), ignore = "PostgreSQL: set TEST_DATABASE_URL to run")]
            async fn postgres() {
                super::$name($crate::helpers::TestApp::postgres().await).await;
                $crate::helpers::stop_servers().await
            }
        }
    )* };
}

thread_local! {
    /// Servers started by the test running on this thread (apps, restarted apps, receivers).
    static SERVERS: std::cell::RefCell<Vec<(actix_web::dev::ServerHandle, Option<actix::Addr<lockerhub::actors::hub::Hub>>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn register_server(handle: actix_web::dev::ServerHandle, hub: Option<actix::Addr<lockerhub::actors::hub::Hub>>) {
    SERVERS.with(|s| s.borrow_mut().push((handle, hub)));
}

/// Runs the memory checks of the apps this test dropped (see `crate::invariants`), then stops
/// every server this test started. Their workers are threads of their own that outlive the
/// test's runtime: without this, each finished test leaves a server, its database pool and its
/// blocking threads behind, and the suite slows down as it goes (measured: 200 leaked servers
/// and 4,700 threads by the end of a full run).
pub async fn stop_servers() {
    let wrong = crate::invariants::memory_checks().await;
    let servers = SERVERS.with(|s| std::mem::take(&mut *s.borrow_mut()));
    for (handle, hub) in servers {
        match hub {
            Some(hub) => Application::stop(handle, hub).await,
            None => handle.stop(false).await,
        }
    }
    assert!(
        wrong.is_empty(),
        "a locker actor's memory disagrees with the database when the test ended:\n  {}",
        wrong.join("\n  ")
    );
}

pub struct TestApp {
    /// Checked when the app is dropped. It owns the test's directory and database, so that
    /// they outlive the checks.
    invariants: crate::invariants::Invariants,
    pub base: String,
    pub admin_key: String,
    pub db: Db,
    pub client: awc::Client,
    pub settings: Settings,
    /// The application's clock: `advance` it instead of sleeping.
    #[allow(dead_code)] // not every suite moves time
    pub clock: lockerhub::clock::Clock,
    /// The SMTP server this app sends mail to.
    pub smtp: crate::smtp::SmtpServer,
    handle: actix_web::dev::ServerHandle,
    /// The application's actor hub, for tests that talk to an actor directly.
    pub hub: actix::Addr<lockerhub::actors::hub::Hub>,
}

/// A per-test PostgreSQL database, dropped with the test.
pub struct PgDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut c) = diesel::PgConnection::establish(&self.admin_url) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
        }
    }
}

pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        lockerhub::telemetry::init(lockerhub::config::LogFormat::Pretty, "debug");
    }
}

pub fn base_settings(dir: &std::path::Path) -> Settings {
    Settings {
        port: 0,
        workers: 1,
        data_dir: dir.to_path_buf(),
        db_pool_size: 4,
        // Suites send many deliberately wrong keys; the limit has its own test.
        auth_failures_per_minute: 10_000,
        // The outbox scan is only a safety net for what a crash left behind: every suite runs
        // with it an hour apart, so each webhook and notification a test sees was sent because
        // its commit woke the actor, never because a scan found it. Retries are an hour apart
        // too: a test that wants one moves the app's clock (`advance_outboxes`), never waits.
        outbox_poll_ms: 3_600_000,
        notification_retry_base_ms: 3_600_000,
        // Every test app gets its own SMTP server (see TestApp::start); "test-smtp" means that one.
        smtp_host: Some("test-smtp".into()),
        smtp_tls: lockerhub::config::SmtpTls::None,
        webhook_retry_base_ms: 3_600_000,
        pickup_attempts: 3,
        // Suites deposit by phone many times per locker; the lookup allowance has its own test.
        directory_lookups_per_hour: 10_000,
        // Suites written before the second factor pick up with the code alone; the second
        // factor's own tests (guessing.rs) require it, as production does by default.
        pickup_second_factor: lockerhub::config::SecondFactor::Optional,
        device_call_timeout_secs: 1,
        // Local code list verifiers at a small Argon2id cost (production: 19 MiB, 2 passes), as
        // tests shorten the hour: the same code runs, only cheaper.
        offline_list_kdf_m_kib: 256,
        offline_list_kdf_t: 1,
        secret_key: Some(Secret::new("11".repeat(32))),
        ..Settings::default()
    }
}

impl TestApp {
    pub async fn sqlite() -> TestApp {
        Self::sqlite_with(|_| {}).await
    }

    pub async fn sqlite_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_file = dir.path().join("test.db");
        std::fs::copy(crate::template::sqlite(), &db_file).expect("copy the SQLite template");
        let mut settings = base_settings(dir.path());
        settings.database_url = Some(Secret::new(format!("sqlite://{}", db_file.display())));
        tweak(&mut settings);
        Self::start(settings, dir, None).await
    }

    pub async fn postgres() -> TestApp {
        Self::postgres_with(|_| {}).await
    }

    /// A test app on a fresh PostgreSQL database, copied from the migrated template. Only
    /// PostgreSQL tests call it, and they are ignored unless `TEST_DATABASE_URL` was set when
    /// they were built.
    pub async fn postgres_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let admin_url = std::env::var("TEST_DATABASE_URL")
            .expect("TEST_DATABASE_URL: PostgreSQL tests run only when it is set (see build.rs)");
        let name = format!("lh_test_{}", uuid::Uuid::new_v4().simple());
        let template = crate::template::postgres(&admin_url);
        let mut c = diesel::PgConnection::establish(&admin_url).expect("TEST_DATABASE_URL must be reachable");
        c.batch_execute(&format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""))
            .expect("create test database");
        let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = base_settings(dir.path());
        settings.database_url = Some(Secret::new(url.to_string()));
        tweak(&mut settings);
        Self::start(settings, dir, Some(PgDatabase { admin_url, name })).await
    }

    async fn start(settings: Settings, dir: tempfile::TempDir, pg: Option<PgDatabase>) -> TestApp {
        Self::start_with_smtp(settings, dir, pg, None).await
    }

    async fn start_with_smtp(
        mut settings: Settings,
        dir: tempfile::TempDir,
        pg: Option<PgDatabase>,
        smtp: Option<crate::smtp::SmtpServer>,
    ) -> TestApp {
        init_logs();
        let smtp = match smtp {
            Some(s) => s,
            None => crate::smtp::SmtpServer::start().await,
        };
        if settings.smtp_host.as_deref() == Some("test-smtp") {
            settings.smtp_host = Some("127.0.0.1".into());
            settings.smtp_port = smtp.port;
        }
        let app = Application::build(settings.clone()).await.expect("app builds");
        let port = app.port();
        let db = app.state().db.clone();
        let clock = app.state().clock.clone();
        let handle = app.handle();
        let hub = app.state().hub.clone();
        register_server(handle.clone(), Some(hub.clone()));
        actix_web::rt::spawn(app.run_until_stopped());
        let admin_key = db
            .run(|c| Ok(admin_keys::create(c, "test")?.1))
            .await
            .expect("admin key");
        let client = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
        TestApp {
            invariants: crate::invariants::Invariants::new(db.clone(), hub.clone(), dir, pg),
            base: format!("http://127.0.0.1:{port}"),
            admin_key,
            db,
            client,
            settings,
            clock,
            smtp,
            handle,
            hub,
        }
    }

    /// Stops this server as a crash would (no drain, every actor gone) and starts a new one on
    /// the same database and settings.
    /// Time spent down is not slept through: a test that needs it moves the new app's clock
    /// or writes the time that passed into the rows (deadlines.rs).
    pub async fn restart(self) -> TestApp {
        Application::stop(self.handle.clone(), self.hub.clone()).await;
        let TestApp {
            mut invariants,
            settings,
            admin_key,
            smtp,
            ..
        } = self;
        // The stopped app's actors are gone: the new app checks the same database.
        let (dir, pg) = invariants.disarm();
        let mut app = Self::start_with_smtp(settings, dir, pg, Some(smtp)).await;
        app.admin_key = admin_key;
        app.invariants.skip = invariants.skip;
        app
    }

    /// Exempts this test from the checks made when the app is dropped (`crate::invariants`),
    /// for a test that breaks them on purpose (say which and why in `reason`).
    #[allow(dead_code)] // only the few tests that corrupt state on purpose
    pub fn skip_invariants(&mut self, reason: &'static str) {
        self.invariants.skip = Some(reason);
    }

    /// Like [`TestApp::restart`], with changed settings.
    pub async fn restart_with(mut self, settings: Settings) -> TestApp {
        self.settings = settings;
        self.restart().await
    }

    /// Moves the application's clock forward by `by`, then fires every deadline that is due
    /// by it, and every loaded locker's device-side timers (door sessions, server calls, silent
    /// sessions), and returns once they have fired (how many there were). Tests call this instead
    /// of sleeping until a timer would fire.
    #[allow(dead_code)] // not every suite moves time
    pub async fn advance(&self, by: Duration) -> usize {
        // First let the timeout actor take in every commit's `DeadlinesQueued` that is already
        // on its way (a round trip through the hub and that actor, behind them in both
        // mailboxes): it decides which deadlines are near by the clock as it was, so none of
        // them gets a timer that the moved clock makes due at once.
        self.scheduled_deadlines().await;
        self.clock.advance(by);
        let deadlines = self
            .hub
            .send(lockerhub::actors::messages::FireDueDeadlines)
            .await
            .expect("the hub answers");
        deadlines + self.fire_due_timers().await
    }

    /// Moves the application's clock forward by `by` and wakes the carrier and notification
    /// actors, so a retry whose backoff has passed on the app's clock goes out now, not when
    /// its real-time timer would fire.
    #[allow(dead_code)] // not every suite retries
    pub async fn advance_outboxes(&self, by: Duration) {
        use lockerhub::actors::messages::{KickCarriers, OutboxQueued};
        self.clock.advance(by);
        self.hub
            .send(KickCarriers { carrier_id: None })
            .await
            .expect("the hub answers");
        let notifier = lockerhub::db::wake::Wakeups {
            carriers: Default::default(),
            notifications: true,
            deadlines: Default::default(),
            alerts: true,
        };
        self.hub.send(OutboxQueued(notifier)).await.expect("the hub answers");
    }

    /// Drops this test's PostgreSQL database under the running server (an outage).
    pub fn drop_database_now(&self) {
        let pg = self.invariants.pg.as_ref().expect("a PostgreSQL test app");
        let mut c = diesel::PgConnection::establish(&pg.admin_url).expect("admin connection");
        c.batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", pg.name))
            .expect("drop database");
    }

    pub fn ws_base(&self) -> String {
        self.base.replacen("http://", "ws://", 1)
    }

    /// The pickup code and QR token, as the recipient gets them: from the email.
    pub async fn pickup_secrets(&self, parcel_id: &str) -> (String, String) {
        let (s, p) = self.get(&format!("/api/v1/parcels/{parcel_id}")).await;
        assert_eq!(s, StatusCode::OK, "{p}");
        let tracking = p["tracking_number"].as_str().unwrap().to_string();
        let mail = self
            .smtp
            .wait_for(&format!("({tracking})"), Duration::from_secs(20))
            .await
            .expect("the pickup code arrives by email");
        crate::smtp::secrets_in(&mail)
    }

    /// Checks every webhook queued so far against the schema the OpenAPI document gives for its
    /// type (`webhooks`, docs: src/http/webhook_docs.rs); returns the types seen.
    pub async fn webhooks_match_the_document(&self) -> std::collections::BTreeSet<String> {
        use diesel::prelude::*;
        use lockerhub::db::schema::webhook_outbox as w;
        let (s, doc) = self.get("/api-docs/openapi.json").await;
        assert_eq!(s, StatusCode::OK);
        let rows: Vec<(String, String)> = self
            .db
            .run(|c| Ok(w::table.select((w::event_type, w::payload)).load(c)?))
            .await
            .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for (kind, payload) in rows {
            let body: Value = serde_json::from_str(&payload).unwrap();
            assert!(
                doc["webhooks"].get(&kind).is_some(),
                "webhook {kind} is not in the document"
            );
            let name = lockerhub::http::webhook_docs::schema_name(&kind);
            let schema = &doc["components"]["schemas"][&name];
            if let Err(e) = conforms(&doc, schema, &body, "") {
                panic!("webhook {kind} does not match its schema: {e}\n{body}");
            }
            seen.insert(kind);
        }
        seen
    }

    /// Webhook outbox events for a parcel, oldest first: (event type, payload).
    pub async fn webhooks_for(&self, parcel_id: &str) -> Vec<(String, Value)> {
        use diesel::prelude::*;
        use lockerhub::db::schema::webhook_outbox as w;
        let pid = parcel_id.to_string();
        let rows: Vec<(String, String)> = self
            .db
            .run(move |c| {
                Ok(w::table
                    .filter(w::parcel_id.eq(&pid))
                    .order(w::id.asc())
                    .select((w::event_type, w::payload))
                    .load(c)?)
            })
            .await
            .unwrap();
        rows.into_iter()
            .map(|(t, p)| (t, serde_json::from_str(&p).unwrap()))
            .collect()
    }

    /// Compartment statuses of a locker by number, through the admin API.
    pub async fn statuses(&self, locker_id: &str) -> std::collections::BTreeMap<i64, String> {
        let (s, v) = self.get(&format!("/api/v1/lockers/{locker_id}/compartments")).await;
        assert_eq!(s, StatusCode::OK);
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| (c["number"].as_i64().unwrap(), c["status"].as_str().unwrap().to_string()))
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with the admin key; `body` is sent as JSON when given.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = self.client.request(method, self.url(path)).bearer_auth(&self.admin_key);
        let resp = match body {
            Some(b) => req.send_json(&b).await,
            None => req.send().await,
        };
        read(resp.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// Sends raw bytes with a content type and optional bearer token.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, self.url(path))
            .insert_header(("content-type", content_type));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        read(req.send_body(body).await.expect("request sent")).await
    }

    /// Creates a site, returning its id.
    pub async fn site(&self) -> String {
        let (s, v) = self
            .post(
                "/api/v1/sites",
                serde_json::json!({"name": "Elm Court", "address": "1 Elm St", "time_zone": "America/New_York"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// Creates a locker with a layout, returning (locker id, device credential).
    pub async fn locker(&self, site_id: &str, layout: Value) -> (String, String) {
        let (s, v) = self
            .post(
                "/api/v1/lockers",
                serde_json::json!({"site_id": site_id, "name": "Lobby", "layout": layout}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        (
            v["locker"]["id"].as_str().unwrap().to_string(),
            v["device_credential"].as_str().unwrap().to_string(),
        )
    }

    /// Creates a carrier, returning the whole creation response.
    pub async fn carrier(&self, code: &str) -> Value {
        let (s, v) = self
            .post(
                "/api/v1/carriers",
                serde_json::json!({"code": code, "name": code.to_uppercase()}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    /// Creates a recipient at a site, returning its id.
    pub async fn recipient(&self, site_id: &str, name: &str, phone: &str) -> String {
        let (s, v) = self
            .post(
                "/api/v1/recipients",
                serde_json::json!({"site_id": site_id, "name": name, "unit": "4B", "phone": phone, "email": "r@example.org"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["id"].as_str().unwrap().to_string()
    }
}

pub async fn read<S>(mut resp: awc::ClientResponse<S>) -> (StatusCode, Value)
where
    S: futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    let status = resp.status();
    let bytes = resp.body().limit(16 * 1024 * 1024).await.expect("body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("non-JSON body for {status}: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, value)
}

/// Asserts an error response has our JSON shape and the given status and code.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1["error"], code, "body: {}", got.1);
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message missing: {}",
        got.1
    );
}

/// One request a receiver got: its headers and body.
pub type Received = (Vec<(String, String)>, Vec<u8>);

/// A webhook receiver: a real HTTP server that records what it gets and can fail on purpose.
pub struct Receiver {
    pub url: String,
    pub got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    /// When each request in `got` arrived: tests measure latency from these.
    #[allow(dead_code)] // only the latency report
    pub arrivals: std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
    /// Requests still to answer with 500.
    pub fail_next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// While true, each request is recorded and then held unanswered (a slow receiver) until
    /// the test releases it: [`Receiver::hold`], [`Receiver::release`].
    held: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub async fn start(fail_next: usize) -> Receiver {
        Self::start_on(0, fail_next).await
    }

    pub async fn start_on(port: u16, fail_next: usize) -> Receiver {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let fail = Arc::new(AtomicUsize::new(fail_next));
        let held = Arc::new(tokio::sync::watch::Sender::new(false));
        let arrivals: Arc<Mutex<Vec<std::time::Instant>>> = Arc::default();
        let (g, f, dl, at) = (got.clone(), fail.clone(), held.clone(), arrivals.clone());
        let server = HttpServer::new(move || {
            let (g, f, dl, at) = (g.clone(), f.clone(), dl.clone(), at.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (g, f, dl, at) = (g.clone(), f.clone(), dl.clone(), at.clone());
                async move {
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
                        .collect();
                    {
                        // One lock order (got, then arrivals): the two lists stay aligned.
                        let mut g = g.lock().unwrap();
                        g.push((headers, body.to_vec()));
                        at.lock().unwrap().push(std::time::Instant::now());
                    }
                    // Recorded first, answered once released.
                    let _ = dl.subscribe().wait_for(|held| !*held).await;
                    let failing = f
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if failing {
                        HttpResponse::InternalServerError().body("try again")
                    } else {
                        HttpResponse::NoContent().finish()
                    }
                }
            }))
        })
        .workers(2)
        .bind(("127.0.0.1", port))
        .expect("bind receiver");
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        register_server(handle.clone(), None);
        actix_web::rt::spawn(server);
        Receiver {
            url: format!("http://127.0.0.1:{port}/hooks"),
            got,
            arrivals,
            fail_next: fail,
            held,
            handle,
        }
    }

    /// From now on, requests are recorded but not answered until [`Receiver::release`].
    #[allow(dead_code)] // only the slow-receiver tests
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Answers every held request, and the ones that follow at once.
    #[allow(dead_code)] // only the slow-receiver tests
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }

    /// Waits until `n` requests have arrived (bounded), then returns them all: fewer if they
    /// never came, for the caller's assertion to show.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let got = || self.got.lock().unwrap().clone();
        bounded(within, || async { Some(got()).filter(|g| g.len() >= n) })
            .await
            .unwrap_or_else(got)
    }
}

/// Waits until `check` yields a value, polling every 20 ms, for at most `within`; panics with
/// `what` if it never does. For what is truly asynchronous (a webhook arriving, a socket
/// closing): the deadline bounds a failure, it is never what a test waits for.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    bounded(within, check)
        .await
        .unwrap_or_else(|| panic!("not within {within:?}: {what}"))
}

/// [`eventually`] for callers that report a timeout themselves: `None` if `check` yielded
/// nothing within `within`. The one polling loop of the test suite.
pub async fn bounded<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port nothing listens on right now.
/// A loopback port held for a server a test starts later: bound but not listening, so that a
/// connection to it is refused as if nobody listened, and no other socket (another test's
/// server, an outgoing connection) can take it meanwhile. `release` gives it up just before the
/// server binds it.
pub struct HeldPort(socket2::Socket);

impl HeldPort {
    pub fn new() -> HeldPort {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        HeldPort(s)
    }

    pub fn port(&self) -> u16 {
        self.0.local_addr().unwrap().as_socket().unwrap().port()
    }

    pub fn release(self) -> u16 {
        self.port()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

impl TestApp {
    /// Fires the device-side timers due by the app clock in every loaded locker actor (door
    /// sessions, server calls awaiting the device, silent sessions); how many fired.
    pub async fn fire_due_timers(&self) -> usize {
        self.hub
            .send(lockerhub::actors::messages::FireDueTimers)
            .await
            .expect("the hub answers")
    }

    /// How many deadlines have a timer waiting in the timeout actor right now.
    #[allow(dead_code)] // not every suite looks at the timeout actor
    pub async fn scheduled_deadlines(&self) -> usize {
        self.hub
            .send(lockerhub::actors::messages::ScheduledDeadlines)
            .await
            .expect("the hub answers")
    }
}

/// Whether `v` conforms to `schema`, for the JSON Schema the document's webhooks use: `$ref`,
/// `type` (one or a list), `enum`, `properties`, `required`, `additionalProperties: false`,
/// `format: date-time`. Err says where and why not.
pub fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], v, at);
    }
    let type_ok = |t: &str| match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => false,
    };
    match &schema["type"] {
        Value::String(t) if !type_ok(t) => return Err(format!("{at}: {v} is not {t}")),
        Value::Array(ts) if !ts.iter().any(|t| t.as_str().is_some_and(type_ok)) => {
            return Err(format!("{at}: {v} is none of {ts:?}"))
        }
        _ => {}
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(v) {
            return Err(format!("{at}: {v} is not one of {options:?}"));
        }
    }
    if schema["format"] == "date-time" {
        if let Some(t) = v.as_str() {
            chrono::DateTime::parse_from_rfc3339(t).map_err(|e| format!("{at}: {t}: {e}"))?;
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema["properties"].as_object();
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or_default();
            if !obj.contains_key(r) {
                return Err(format!("{at}: {r} is missing"));
            }
        }
        for (k, field) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => conforms(doc, s, field, &format!("{at}.{k}"))?,
                None if schema["additionalProperties"] == false => {
                    return Err(format!("{at}: {k} is not in the schema"))
                }
                None => {}
            }
        }
    }
    Ok(())
}

#[test]
fn conforms_refuses_what_a_schema_does_not_allow() {
    let doc = serde_json::json!({"components": {"schemas": {"T": {"type": "object",
        "properties": {"a": {"type": ["integer", "null"]}, "t": {"type": "string", "format": "date-time"},
                       "k": {"type": "string", "enum": ["x"]}},
        "required": ["a"], "additionalProperties": false}}}});
    let s = serde_json::json!({"$ref": "#/components/schemas/T"});
    assert!(conforms(
        &doc,
        &s,
        &serde_json::json!({"a": 1, "k": "x", "t": "2026-11-24T09:15:02Z"}),
        ""
    )
    .is_ok());
    assert!(conforms(&doc, &s, &serde_json::json!({"a": null}), "").is_ok());
    for bad in [
        serde_json::json!({}),
        serde_json::json!({"a": "1"}),
        serde_json::json!({"a": 1, "b": 2}),
        serde_json::json!({"a": 1, "k": "y"}),
        serde_json::json!({"a": 1, "t": "yesterday"}),
    ] {
        assert!(conforms(&doc, &s, &bad, "").is_err(), "{bad}");
    }
}
