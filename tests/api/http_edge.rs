//! The HTTP edge: body timeouts, the per-address cap on unauthenticated connections, 405s,
//! and the OpenAPI document as the contract (issue 10, items 10 and 11).

use std::time::{Duration, Instant};

use actix_web::rt::net::TcpStream;
use awc::http::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db_test;
use crate::helpers::{assert_error, eventually, TestApp};

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// Sends `head` (and the start of a body) on a new connection and leaves it open.
async fn open(app: &TestApp, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr(app)).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write");
    s
}

/// Reads what the server answers, until it closes or `within` passes; returns the text and
/// whether the connection was closed.
async fn read_answer(s: &mut TcpStream, within: Duration) -> (String, bool) {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&got).into_owned(), false);
        }
        match actix_web::rt::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

/// The status of a one-shot request on a new connection (closed after the answer).
async fn status_of(app: &TestApp, request: &str) -> Option<u16> {
    let mut s = open(app, request).await;
    let (text, _) = read_answer(&mut s, Duration::from_secs(5)).await;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
const SLOW_EVENT: &str = "POST /carrier/v1/events HTTP/1.1\r\nHost: test\r\n\
    Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":";

db_test!(slow_carrier_event_body_is_cut_off with |s| s.request_body_timeout_ms = 300);

/// A carrier callback whose body never finishes is answered 408 and closed once the body
/// timeout passes, as on every other route, instead of holding its connection for ever.
async fn slow_carrier_event_body_is_cut_off(app: TestApp) {
    let started = Instant::now();
    let mut s = open(&app, SLOW_EVENT).await;
    let (text, closed) = read_answer(&mut s, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "answered 408, got {text:?}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(closed, "the connection is closed after the 408");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before the timeout"
    );

    // The admin API gets the same timeout for a slow body behind a valid key.
    let head = format!(
        "POST /api/v1/sites HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        app.admin_key
    );
    let mut s = open(&app, &head).await;
    let (text, closed) = read_answer(&mut s, Duration::from_secs(10)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "answered 408, got {text:?}");
    assert!(closed);

    // A body that arrives in time is unaffected.
    let (status, _) = app.get("/api/v1/sites").await;
    assert_eq!(status, StatusCode::OK);
}

db_test!(unauthenticated_connections_are_capped_per_address with |s| {
    s.max_unauthenticated_connections_per_ip = 3;
    s.request_body_timeout_ms = 60_000;
});

/// With a cap of 3, three slow anonymous callbacks from one address are all it may hold:
/// the fourth connection is refused (429, closed), even for /healthz; once one of the three
/// closes, a new connection is served again. Authenticated connections do not count.
async fn unauthenticated_connections_are_capped_per_address(app: TestApp) {
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(open(&app, SLOW_EVENT).await);
    }
    eventually(Duration::from_secs(10), "the fourth connection is refused", || async {
        (status_of(&app, HEALTHZ).await == Some(429)).then_some(())
    })
    .await;
    let mut s = open(&app, HEALTHZ).await;
    let (text, closed) = read_answer(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 429"), "{text}");
    assert!(text.contains("too many unauthenticated connections"), "{text}");
    assert!(closed, "a refused connection is closed");

    drop(slow.pop());
    eventually(
        Duration::from_secs(10),
        "a connection is served after one closed",
        || async { (status_of(&app, HEALTHZ).await == Some(200)).then_some(()) },
    )
    .await;
    drop(slow);

    // Three keep-alive connections that authenticated leave the address's quota free.
    let authed = format!(
        "GET /api/v1/sites HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\r\n",
        app.admin_key
    );
    let mut kept = Vec::new();
    for _ in 0..3 {
        let mut s = open(&app, &authed).await;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.expect("an answer");
        assert_eq!(&buf, b"HTTP/1.1 200");
        kept.push(s);
    }
    for _ in 0..3 {
        assert_eq!(status_of(&app, HEALTHZ).await, Some(200));
    }
    drop(kept);
}

db_test!(other_methods_on_known_paths_are_405);

/// A known path with a method it does not have is 405 with `Allow`, not 404.
async fn other_methods_on_known_paths_are_405(app: TestApp) {
    let resp = app
        .client
        .request(Method::TRACE, app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers().get("allow").unwrap(), "GET");

    let resp = app
        .client
        .request(Method::DELETE, app.url("/api/v1/sites"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers().get("allow").unwrap(), "GET, POST");
    let resp = app
        .client
        .request(Method::PUT, app.url("/api/v1/sites/some-id"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers().get("allow").unwrap(), "GET, PATCH");

    assert_error(&app.get("/no/such/route").await, StatusCode::NOT_FOUND, "not_found");
}

db_test!(the_openapi_document_is_the_contract);

/// Every documented operation exists, documents what the edge can answer, states the bounds
/// the server checks, and the creates link to their reads.
async fn the_openapi_document_is_the_contract(app: TestApp) {
    let (s, doc) = app.get("/api-docs/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let concrete = path.replace("{number}", "1").replace('{', "x").replace('}', "");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = matches!(method, Method::POST | Method::PUT | Method::PATCH).then(|| json!({}));
            let (status, answer) = app.call(method.clone(), &concrete, body).await;
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND
                    && answer["message"].as_str().is_some_and(|m| m.starts_with("no route")));
            assert!(
                !unrouted,
                "{method} {path} is documented but not served: {status} {answer}"
            );

            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("429"), "{method} {path} documents 429");
            if op.get("security").is_some() {
                assert!(responses.contains_key("401"), "{method} {path} documents 401");
            }
            if op.get("requestBody").is_some() {
                for code in ["400", "408", "413", "415", "422"] {
                    assert!(responses.contains_key(code), "{method} {path} documents {code}");
                }
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    assert!(responses.contains_key("404"), "{method} {path} documents 404");
                }
                if p["name"] == "limit" {
                    assert_eq!(p["schema"]["minimum"], 1, "{method} {path}");
                    assert_eq!(p["schema"]["maximum"], 200, "{method} {path}");
                }
            }
            assert!(
                responses.keys().all(|k| k != "default"),
                "no catch-all on {method} {path}"
            );
        }
    }
    let schemas = &doc["components"]["schemas"];
    let name = &schemas["CreateSite"]["properties"]["name"];
    assert_eq!(name["minLength"], 1);
    assert_eq!(name["maxLength"], 200);
    assert!(name["pattern"].is_string());
    assert!(
        schemas["CreateSite"]["properties"]["time_zone"]["enum"]
            .as_array()
            .is_some_and(|z| z.contains(&json!("America/New_York"))),
        "time zones are an enum of IANA names"
    );
    // A flat object: an `allOf` of parts that each forbid the other's fields admits no body.
    let recipient = &schemas["CreateRecipient"];
    assert!(recipient["properties"]["site_id"].is_object() && recipient["properties"]["name"].is_object());
    assert!(recipient["allOf"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|part| part.get("$ref").is_none()));
    let link = &doc["paths"]["/api/v1/sites"]["post"]["responses"]["201"]["links"]["GetSite"];
    assert_eq!(link["operationId"], "sites_get_one");
    assert_eq!(link["parameters"]["id"], "$response.body#/id");
    assert!(
        doc["paths"]["/qr/{token}"]["get"].is_object(),
        "the QR image is where it is served"
    );
}

db_test!(bodies_hold_to_the_documented_bounds);

/// What the document allows is accepted (a whole number written `24.0` is an integer), and
/// what it forbids is refused, on update as on create.
async fn bodies_hold_to_the_documented_bounds(app: TestApp) {
    let (s, site) = app
        .post(
            "/api/v1/sites",
            json!({"name": "Elm", "address": "1 Elm St", "time_zone": "Europe/Berlin", "dwell_hours": 24.0}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{site}");
    assert_eq!(site["dwell_hours"], 24);
    let site_id = site["id"].as_str().unwrap();
    assert_error(
        &app.post(
            "/api/v1/sites",
            json!({"name": "Elm", "address": "1 Elm St", "time_zone": "Europe/Berlin", "dwell_hours": 24.5}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_error(
        &app.post(
            "/api/v1/sites",
            json!({"name": " \u{85} ", "address": "1 Elm St", "time_zone": "Europe/Berlin"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    let (s, locker) = app
        .post(
            "/api/v1/lockers",
            json!({"site_id": site_id, "name": "Lobby", "layout": [{"size": "S", "count": 2.0}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{locker}");
    let locker_id = locker["locker"]["id"].as_str().unwrap();
    assert_error(
        &app.call(
            Method::PATCH,
            &format!("/api/v1/lockers/{locker_id}"),
            Some(json!({"location": "x".repeat(501)})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    let (s, r) = app
        .post(
            "/api/v1/recipients",
            json!({"site_id": site_id, "name": "Ann", "unit": "4B"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let rid = r["id"].as_str().unwrap();
    assert_error(
        &app.call(
            Method::PATCH,
            &format!("/api/v1/recipients/{rid}"),
            Some(json!({"unit": "9".repeat(51)})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    // Whether the recipient has a phone is its state, not a rule of the body.
    assert_error(
        &app.call(
            Method::PATCH,
            &format!("/api/v1/recipients/{rid}"),
            Some(json!({"channels": ["sms"]})),
        )
        .await,
        StatusCode::CONFLICT,
        "channel_without_contact",
    );
    let (s, page) = app.get("/api/v1/sites?limit=200").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_error(
        &app.get("/api/v1/sites?limit=201").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
}
