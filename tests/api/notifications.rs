//! Recipient notifications over real SMTP and real HTTP gateways.

use std::time::Duration;

use awc::http::StatusCode;
use lockerhub::domain::Size;
use lockerhub::protocol::messages::{Identify, Pickup};
use lockerhub::protocol::ErrorCode;
use lockerhub::simulator::SimLocker;
use serde_json::{json, Value};

use crate::db_test;
use crate::helpers::{header, Receiver, TestApp};
use crate::smtp::{secrets_in, SmtpServer};

struct World {
    site: String,
    locker: String,
    carrier: String,
    sim: SimLocker,
}

async fn world(app: &TestApp) -> World {
    let (s, site) = app
        .post(
            "/api/v1/sites",
            json!({"name": "Elm Court", "address": "1 Elm St, Springfield", "time_zone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let site = site["id"].as_str().unwrap().to_string();
    let (locker, credential) = app.locker(&site, json!([{"size": "S", "count": 4}])).await;
    let carrier = app.carrier("ups").await["carrier"]["id"].as_str().unwrap().to_string();
    let layout: Vec<(i32, Size)> = (1..=4).map(|n| (n, Size::S)).collect();
    let sim = SimLocker::connect(&app.ws_base(), &locker, &credential, &layout)
        .await
        .unwrap();
    sim.boot().await.unwrap();
    World {
        site,
        locker,
        carrier,
        sim,
    }
}

async fn resident(app: &TestApp, site: &str, body: Value) -> String {
    let mut body = body;
    body["site_id"] = json!(site);
    let (s, v) = app.post("/api/v1/recipients", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// The parcel's notification log, once `until` holds for it (bounded: the notification actor
/// sends on its own).
async fn log_of(app: &TestApp, parcel: &str, until: impl Fn(&Value) -> bool) -> Value {
    crate::helpers::eventually(
        Duration::from_secs(10),
        "the notification log reaches the expected state",
        || async {
            let (s, v) = app.get(&format!("/api/v1/parcels/{parcel}/notifications")).await;
            assert_eq!(s, StatusCode::OK);
            until(&v).then_some(v)
        },
    )
    .await
}

db_test!(
    email_carries_the_code_that_opens_the_locker,
    resend_issues_a_new_code_and_revokes_the_old,
);

async fn email_carries_the_code_that_opens_the_locker(app: TestApp) {
    let w = world(&app).await;
    resident(
        &app,
        &w.site,
        json!({"name": "Ann <Lee>", "unit": "4B", "phone": "+15550102030", "email": "ann@example.org"}),
    )
    .await;
    let open = w
        .sim
        .deposit(
            &w.carrier,
            Identify::Phone("5550102030".into()),
            Size::S,
            Some("1Z999AA10000000001"),
        )
        .await
        .unwrap();
    let mail = app
        .smtp
        .wait_for("1Z999AA10000000001", Duration::from_secs(20))
        .await
        .expect("mail");
    assert!(mail.to.iter().any(|t| t.contains("ann@example.org")));
    let text = mail.decoded();
    assert!(
        text.contains("Subject: Your parcel from UPS is ready at Lobby"),
        "{text}"
    );
    assert!(text.contains("multipart/alternative"));
    assert!(text.contains("text/plain") && text.contains("text/html"));
    assert!(text.contains("1 Elm St, Springfield"), "the site and its address");
    assert!(text.contains("How to pick up"));
    assert!(text.contains("Ann &lt;Lee&gt;"), "values are escaped in HTML");
    // The deadline is shown in the site's time zone (Berlin: CET or CEST).
    assert!(text.contains(" CET") || text.contains(" CEST"), "{text}");
    let (code, qr) = secrets_in(&mail);
    // The QR link renders an SVG of the token.
    let mut resp = app.client.get(app.url(&format!("/qr/{qr}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("image/svg"));
    assert!(String::from_utf8_lossy(&resp.body().await.unwrap()).contains("<svg"));
    // The code from the mail opens the locker.
    let picked = w.sim.pickup(Pickup::Code(code.clone())).await.unwrap();
    assert_eq!(picked.parcel_id, open.deposit_id);
    // The log shows the email, with the code redacted.
    let log = log_of(&app, &open.deposit_id, |v| v[0]["status"] == "sent").await;
    assert_eq!(log[0]["channel"], "email");
    assert_eq!(log[0]["payload"]["transport"], "smtp");
    assert!(!log.to_string().contains(&code), "codes never leave through the API");
    assert!(!log.to_string().contains(&qr));
}

async fn resend_issues_a_new_code_and_revokes_the_old(app: TestApp) {
    let w = world(&app).await;
    resident(
        &app,
        &w.site,
        json!({"name": "Ann", "phone": "+15550102030", "email": "ann@example.org"}),
    )
    .await;
    let open = w
        .sim
        .deposit(
            &w.carrier,
            Identify::Phone("5550102030".into()),
            Size::S,
            Some("1Z999AA10000000001"),
        )
        .await
        .unwrap();
    let (old, _) = app.pickup_secrets(&open.deposit_id).await;
    let (s, v) = app
        .post(&format!("/api/v1/parcels/{}/resend-code", open.deposit_id), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let new = crate::helpers::eventually(Duration::from_secs(5), "a second mail for the parcel", || async {
        let mails = app.smtp.mails.lock().unwrap().clone();
        mails
            .iter()
            .skip(1)
            .rev()
            .find(|m| m.decoded().contains("1Z999AA10000000001"))
            .map(|m| secrets_in(m).0)
    })
    .await;
    assert_ne!(new, old, "a new code was mailed");
    let e = w.sim.call("Pickup", json!({"code": old})).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidCode), "the old code is revoked");
    w.sim.pickup(Pickup::Code(new)).await.unwrap();
    let (s, _) = app
        .post(&format!("/api/v1/parcels/{}/resend-code", open.deposit_id), json!({}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "a picked-up parcel gets no new code");
    let (s, _) = app.post("/api/v1/parcels/nope/resend-code", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Notification retries ten app-clock minutes apart (doubling): they go out when the test moves
/// the clock past their backoff ([`retry_after`]), never on a real-time timer.
const RETRY_BASE: Duration = Duration::from_secs(600);

fn retry_by_hand(s: &mut lockerhub::config::Settings) {
    s.notification_retry_base_ms = RETRY_BASE.as_millis() as u64;
}

/// Waits until the parcel's first notification has `n` attempts recorded (so its retry's due
/// time is committed), then moves the app clock past that retry's longest backoff (the base,
/// doubled per attempt, plus 20% jitter).
async fn retry_after(app: &TestApp, parcel: &str, n: u32) {
    log_of(app, parcel, |v| v[0]["attempts"] == n).await;
    app.advance_outboxes(RETRY_BASE.mul_f64(1.2) * 2u32.pow(n - 1)).await;
}

db_test!(failing_smtp_is_retried with super::retry_by_hand);

async fn failing_smtp_is_retried(app: TestApp) {
    let w = world(&app).await;
    resident(
        &app,
        &w.site,
        json!({"name": "Ann", "phone": "+15550102030", "email": "ann@example.org", "channels": ["email"]}),
    )
    .await;
    app.smtp.fail_temporarily.store(2, std::sync::atomic::Ordering::SeqCst);
    let open = w
        .sim
        .deposit(
            &w.carrier,
            Identify::Phone("5550102030".into()),
            Size::S,
            Some("1Z999AA10000000001"),
        )
        .await
        .unwrap();
    for n in 1..=2 {
        retry_after(&app, &open.deposit_id, n).await;
    }
    assert!(app
        .smtp
        .wait_for("1Z999AA10000000001", Duration::from_secs(20))
        .await
        .is_some());
    let log = log_of(&app, &open.deposit_id, |v| v[0]["status"] == "sent").await;
    assert_eq!(log[0]["attempts"], 3, "two temporary failures, then sent");
    assert_eq!(log[0]["channel"], "email");
    let tries: Vec<(&str, &str)> = log[0]["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["channel"].as_str().unwrap(), a["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        tries,
        [
            ("email", "transient_failure"),
            ("email", "transient_failure"),
            ("email", "sent")
        ],
        "{log}"
    );
    assert!(
        log[0]["attempt_log"][0]["error"].as_str().unwrap().contains("451"),
        "{log}"
    );
    assert_eq!(app.smtp.mails.lock().unwrap().len(), 1, "sent once after the success");
}

db_test!(sms_and_push_reach_their_gateways with |s| {
    s.sms_url = Some("http://127.0.0.1:1/unused".into());
    s.push_url = Some("http://127.0.0.1:1/unused".into());
});

async fn sms_and_push_reach_their_gateways(app: TestApp) {
    // Gateways are started here and the carrier-style settings pointed at them by restart.
    let sms = Receiver::start(0).await;
    let push = Receiver::start(0).await;
    let mut settings = app.settings.clone();
    settings.sms_url = Some(sms.url.clone());
    settings.sms_username = Some("AC123".into());
    settings.sms_password = Some(lockerhub::config::Secret::new("tok"));
    settings.push_url = Some(push.url.clone());
    let app = app.restart_with(settings).await;
    let w = world(&app).await;
    resident(
        &app,
        &w.site,
        json!({"name": "Sam", "phone": "+15550100001", "channels": ["sms"]}),
    )
    .await;
    resident(
        &app,
        &w.site,
        json!({"name": "Pat", "phone": "+15550100002", "push_target": "device-token-1", "channels": ["push"]}),
    )
    .await;
    w.sim
        .deposit(
            &w.carrier,
            Identify::Phone("5550100001".into()),
            Size::S,
            Some("1Z999AA10000000001"),
        )
        .await
        .unwrap();
    w.sim
        .deposit(
            &w.carrier,
            Identify::Phone("5550100002".into()),
            Size::S,
            Some("1Z999AA10000000002"),
        )
        .await
        .unwrap();
    let got = sms.wait_for(1, Duration::from_secs(20)).await;
    let (h, body) = &got[0];
    assert!(header(h, "content-type").starts_with("application/x-www-form-urlencoded"));
    assert!(
        header(h, "authorization").starts_with("Basic "),
        "Twilio-style basic auth"
    );
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(field("To"), "+15550100001");
    assert_eq!(field("From"), "lockerhub");
    let sms_text = field("Body");
    assert!(sms_text.contains("Pickup code "), "{sms_text}");
    let code: String = sms_text
        .split("Pickup code ")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(code.len(), 8);
    w.sim.pickup(Pickup::Code(code)).await.unwrap();

    let got = push.wait_for(1, Duration::from_secs(20)).await;
    let v: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(v["target"], "device-token-1");
    assert!(v["title"].as_str().unwrap().contains("UPS"));
    assert!(v["body"].as_str().unwrap().contains("Pickup code"));
}

db_test!(permanent_failure_falls_back_to_the_next_channel with |s| s.sms_url = Some("http://127.0.0.1:1/unused".into()));

/// A deposit for a resident whose mailbox refuses mail for good (550) and who also takes SMS,
/// sent to a real receiver. Returns the restarted app, its world, the SMS receiver and the parcel.
async fn deposit_for_a_bounced_mailbox(app: TestApp) -> (TestApp, World, Receiver, String) {
    let sms = Receiver::start(0).await;
    let mut settings = app.settings.clone();
    settings.sms_url = Some(sms.url.clone());
    let app = app.restart_with(settings).await;
    let w = world(&app).await;
    resident(
        &app,
        &w.site,
        json!({"name": "Ann", "phone": "+15550102030", "email": "gone@example.org", "channels": ["email", "sms"]}),
    )
    .await;
    app.smtp.fail_permanently.store(1, std::sync::atomic::Ordering::SeqCst);
    let open = w
        .sim
        .deposit(
            &w.carrier,
            Identify::Phone("5550102030".into()),
            Size::S,
            Some("1Z999AA10000000001"),
        )
        .await
        .unwrap();
    (app, w, sms, open.deposit_id)
}

async fn permanent_failure_falls_back_to_the_next_channel(app: TestApp) {
    let (app, _w, sms, parcel) = deposit_for_a_bounced_mailbox(app).await;
    let got = sms.wait_for(1, Duration::from_secs(20)).await;
    let (_, log) = app.get(&format!("/api/v1/parcels/{}/notifications", parcel)).await;
    assert_eq!(
        got.len(),
        1,
        "the SMS went out after the mailbox was refused: {log} mails={} fail={} port={} settings_port={}",
        app.smtp.mails.lock().unwrap().len(),
        app.smtp.fail_permanently.load(std::sync::atomic::Ordering::SeqCst),
        app.smtp.port,
        app.settings.smtp_port
    );
    let log = log_of(&app, &parcel, |v| v[0]["status"] == "sent").await;
    assert_eq!(log[0]["channel"], "sms");
    assert!(log[0]["last_error"].is_null());
    assert!(app.smtp.mails.lock().unwrap().is_empty());
}

/// With no transport configured, notifications go to the log and the database.
#[actix_web::test]
async fn default_install_uses_the_log_transport() {
    let app = TestApp::sqlite_with(|s| s.smtp_host = None).await;
    let w = world(&app).await;
    resident(
        &app,
        &w.site,
        json!({"name": "Ann", "phone": "+15550102030", "email": "ann@example.org"}),
    )
    .await;
    let open = w
        .sim
        .deposit(&w.carrier, Identify::Phone("5550102030".into()), Size::S, None)
        .await
        .unwrap();
    let log = log_of(&app, &open.deposit_id, |v| v[0]["status"] == "sent").await;
    assert_eq!(log[0]["payload"]["transport"], "log");
    assert!(
        log[0]["payload"]["rendered"]["text"]
            .as_str()
            .unwrap()
            .contains("Your pickup code: [redacted]")
            || log[0]["payload"]["rendered"]["text"]
                .as_str()
                .unwrap()
                .contains("Your pickup code")
    );
    assert_eq!(log[0]["payload"]["pickup_code"], "[redacted]");
    assert!(app.smtp.mails.lock().unwrap().is_empty());
}

/// What was pending when the server stopped is delivered after a restart.
#[actix_web::test]
async fn pending_notifications_survive_a_restart_sqlite() {
    pending_notifications_survive_a_restart(TestApp::sqlite().await).await;
    crate::helpers::stop_servers().await
}

#[actix_web::test]
#[cfg_attr(not(postgres_tests), ignore = "PostgreSQL: set TEST_DATABASE_URL to run")]
async fn pending_notifications_survive_a_restart_postgres() {
    pending_notifications_survive_a_restart(TestApp::postgres().await).await;
    crate::helpers::stop_servers().await
}

async fn pending_notifications_survive_a_restart(app: TestApp) {
    let held = crate::helpers::HeldPort::new();
    let port = held.port();
    let mut settings = app.settings.clone();
    settings.smtp_host = Some("127.0.0.1".into());
    settings.smtp_port = port; // nothing listens yet
    retry_by_hand(&mut settings);
    let app = app.restart_with(settings).await;
    let w = world(&app).await;
    resident(
        &app,
        &w.site,
        json!({"name": "Ann", "phone": "+15550102030", "email": "ann@example.org", "channels": ["email"]}),
    )
    .await;
    let open = w
        .sim
        .deposit(
            &w.carrier,
            Identify::Phone("5550102030".into()),
            Size::S,
            Some("1Z999AA10000000007"),
        )
        .await
        .unwrap();
    // Nobody listens yet: the notification has failed an attempt and waits for a retry.
    let path = format!("/api/v1/parcels/{}/notifications", open.deposit_id);
    let log = crate::helpers::eventually(Duration::from_secs(10), "a failed attempt", || async {
        let (_, log) = app.get(&path).await;
        (log[0]["attempts"].as_i64() >= Some(1)).then_some(log)
    })
    .await;
    assert_eq!(log[0]["status"], "pending", "{log}");
    let app = app.restart().await;
    let smtp = SmtpServer::start_on(held.release()).await;
    // The retry is due ten minutes after the failure, on the restarted app's clock.
    app.advance_outboxes(RETRY_BASE.mul_f64(1.2)).await;
    let mail = smtp
        .wait_for("1Z999AA10000000007", Duration::from_secs(30))
        .await
        .expect("delivered after restart");
    let (code, _) = secrets_in(&mail);
    let _ = app;
    w.sim.reconnect().await.ok();
    assert_eq!(code.len(), 8);
}

/// A property can override templates, per site.
#[actix_web::test]
async fn templates_can_be_overridden_per_site() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().to_path_buf();
    let app = TestApp::sqlite_with(|s| s.templates_dir = Some(tdir.clone())).await;
    let w = world(&app).await;
    std::fs::create_dir(dir.path().join(&w.site)).unwrap();
    std::fs::write(
        dir.path().join(&w.site).join("deposited.subject.txt"),
        "Elm Court parcel for {{recipient_name}}",
    )
    .unwrap();
    resident(
        &app,
        &w.site,
        json!({"name": "Ann", "phone": "+15550102030", "email": "ann@example.org"}),
    )
    .await;
    w.sim
        .deposit(
            &w.carrier,
            Identify::Phone("5550102030".into()),
            Size::S,
            Some("1Z999AA10000000001"),
        )
        .await
        .unwrap();
    let mail = app
        .smtp
        .wait_for("1Z999AA10000000001", Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        mail.decoded().contains("Subject: Elm Court parcel for Ann"),
        "{}",
        mail.decoded()
    );
    let _ = w.locker;
}

db_test!(a_bounce_and_its_sms_fallback_both_show_in_the_log with |s| s.sms_url = Some("http://127.0.0.1:1/unused".into()));

/// The notification log shows every attempt with its channel and error, not only the last one.
async fn a_bounce_and_its_sms_fallback_both_show_in_the_log(app: TestApp) {
    let (app, _w, sms, parcel) = deposit_for_a_bounced_mailbox(app).await;
    sms.wait_for(1, Duration::from_secs(20)).await;
    let log = log_of(&app, &parcel, |v| v[0]["status"] == "sent").await;
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log[0]["channel"], "sms");
    let tries = log[0]["attempt_log"].as_array().unwrap();
    assert_eq!(tries.len(), 2, "{log}");
    assert_eq!(tries[0]["channel"], "email");
    assert_eq!(tries[0]["outcome"], "permanent_failure");
    let bounce = tries[0]["error"].as_str().unwrap();
    assert!(bounce.contains("550"), "the bounce says why: {bounce}");
    assert_eq!(tries[1]["channel"], "sms");
    assert_eq!(tries[1]["outcome"], "sent");
    assert!(tries[1]["error"].is_null());
    assert!(tries[0]["attempted_at"].as_str().unwrap() <= tries[1]["attempted_at"].as_str().unwrap());
    // Codes stay out of the log.
    let (_, raw) = app.get(&format!("/api/v1/parcels/{}/notifications", parcel)).await;
    let code = log[0]["payload"]["pickup_code"].as_str().unwrap();
    assert_eq!(code, "[redacted]", "{raw}");
    // The log's body is in the OpenAPI document.
    let (_, doc) = app.get("/api-docs/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["LogEntry"].to_string().contains("attempt_log"),
        "{}",
        schemas["LogEntry"]
    );
    for field in ["channel", "outcome", "error", "attempted_at"] {
        assert!(
            schemas["Attempt"]["properties"].get(field).is_some(),
            "{}",
            schemas["Attempt"]
        );
    }
}
