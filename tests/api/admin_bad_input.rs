//! Every admin endpoint refuses missing or wrong keys, malformed JSON, oversize bodies and
//! unknown ids with a JSON 4xx, and changes nothing.

use awc::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::db_test;
use crate::helpers::{assert_error, TestApp};

db_test!(every_endpoint_refuses_bad_input);

struct Ids {
    site: String,
    locker: String,
    carrier: String,
    recipient: String,
}

/// (method, path, a valid JSON body if the endpoint takes one)
fn endpoints(ids: &Ids) -> Vec<(Method, String, Option<Value>)> {
    let Ids {
        site,
        locker,
        carrier,
        recipient,
    } = ids;
    vec![
        (
            Method::POST,
            "/api/v1/sites".into(),
            Some(json!({"name": "n", "address": "a", "time_zone": "UTC"})),
        ),
        (Method::GET, "/api/v1/sites".into(), None),
        (Method::GET, format!("/api/v1/sites/{site}"), None),
        (
            Method::PATCH,
            format!("/api/v1/sites/{site}"),
            Some(json!({"name": "n2"})),
        ),
        (
            Method::POST,
            "/api/v1/lockers".into(),
            Some(json!({"site_id": site, "name": "L"})),
        ),
        (Method::GET, "/api/v1/lockers".into(), None),
        (Method::GET, format!("/api/v1/lockers/{locker}"), None),
        (
            Method::PATCH,
            format!("/api/v1/lockers/{locker}"),
            Some(json!({"name": "L2"})),
        ),
        (Method::POST, format!("/api/v1/lockers/{locker}/credential"), None),
        (
            Method::POST,
            format!("/api/v1/lockers/{locker}/compartments"),
            Some(json!({"layout": [{"size": "S", "count": 1}]})),
        ),
        (Method::GET, format!("/api/v1/lockers/{locker}/compartments"), None),
        (
            Method::PATCH,
            format!("/api/v1/lockers/{locker}/compartments/1"),
            Some(json!({"accessible": true})),
        ),
        (Method::GET, format!("/api/v1/lockers/{locker}/sections"), None),
        (
            Method::PUT,
            format!("/api/v1/lockers/{locker}/sections/{carrier}"),
            Some(json!({"compartments": [1]})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/lockers/{locker}/sections/{carrier}"),
            None,
        ),
        (
            Method::POST,
            "/api/v1/carriers".into(),
            Some(json!({"code": "dhl", "name": "DHL"})),
        ),
        (Method::GET, "/api/v1/carriers".into(), None),
        (Method::GET, format!("/api/v1/carriers/{carrier}"), None),
        (
            Method::PATCH,
            format!("/api/v1/carriers/{carrier}"),
            Some(json!({"name": "X"})),
        ),
        (
            Method::POST,
            "/api/v1/recipients".into(),
            Some(json!({"site_id": site, "name": "R"})),
        ),
        (Method::GET, "/api/v1/recipients".into(), None),
        (Method::GET, format!("/api/v1/recipients/{recipient}"), None),
        (
            Method::PATCH,
            format!("/api/v1/recipients/{recipient}"),
            Some(json!({"name": "R2"})),
        ),
        (Method::POST, format!("/api/v1/sites/{site}/recipients/import"), None),
        (Method::GET, "/api/v1/parcels".into(), None),
        (
            Method::GET,
            "/api/v1/parcels/00000000-0000-7000-8000-000000000000".into(),
            None,
        ),
    ]
}

/// Everything an endpoint could have changed, as one comparable value.
async fn snapshot(app: &TestApp, ids: &Ids) -> Value {
    let mut all = Vec::new();
    for path in [
        "/api/v1/sites".to_string(),
        "/api/v1/lockers".to_string(),
        "/api/v1/carriers".to_string(),
        "/api/v1/recipients".to_string(),
        "/api/v1/parcels".to_string(),
        format!("/api/v1/lockers/{}/compartments", ids.locker),
        format!("/api/v1/lockers/{}/sections", ids.locker),
    ] {
        let (s, v) = app.get(&path).await;
        assert_eq!(s, StatusCode::OK);
        all.push(v);
    }
    Value::Array(all)
}

async fn every_endpoint_refuses_bad_input(app: TestApp) {
    let site = app.site().await;
    let (locker, old_credential) = app.locker(&site, json!([{"size": "S", "count": 2}])).await;
    let carrier = app.carrier("ups").await["carrier"]["id"].as_str().unwrap().to_string();
    let recipient = app.recipient(&site, "Ann", "555-010-2030").await;
    let ids = Ids {
        site,
        locker,
        carrier,
        recipient,
    };
    let before = snapshot(&app, &ids).await;
    let oversize = format!("{{\"name\": \"{}\"}}", "x".repeat(app.settings.max_body_bytes + 10));

    for (method, path, body) in endpoints(&ids) {
        let what = format!("{method} {path}");
        // No key, a wrong key, a malformed header.
        let got = app
            .raw(method.clone(), &path, None, "application/json", b"{}".to_vec())
            .await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");
        let got = app
            .raw(
                method.clone(),
                &path,
                Some("lhk_wrong"),
                "application/json",
                b"{}".to_vec(),
            )
            .await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized");

        if body.is_some() {
            let key = Some(app.admin_key.as_str());
            let got = app
                .raw(method.clone(), &path, key, "application/json", b"{not json".to_vec())
                .await;
            assert_error(&got, StatusCode::BAD_REQUEST, "malformed_json");
            let got = app
                .raw(method.clone(), &path, key, "application/json", b"[1, 2]".to_vec())
                .await;
            // serde_json reports some wrong-typed values (a number for an enum) as syntax errors.
            assert_eq!(got.0, StatusCode::BAD_REQUEST, "{what}: {}", got.1);
            assert!(
                matches!(got.1["error"].as_str(), Some("invalid_body" | "malformed_json")),
                "{what}: {}",
                got.1
            );
            let got = app.raw(method.clone(), &path, key, "text/plain", b"{}".to_vec()).await;
            assert_error(&got, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
            let got = app
                .raw(
                    method.clone(),
                    &path,
                    key,
                    "application/json",
                    oversize.clone().into_bytes(),
                )
                .await;
            assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
        }

        // Unknown ids: replace every real id in the path.
        let unknown = path
            .replace(&ids.site, "00000000-0000-7000-8000-00000000000a")
            .replace(&ids.locker, "00000000-0000-7000-8000-00000000000b")
            .replace(&ids.carrier, "00000000-0000-7000-8000-00000000000c")
            .replace(&ids.recipient, "00000000-0000-7000-8000-00000000000d");
        if unknown != path || path.starts_with("/api/v1/parcels/") {
            let got = match (&method, &body) {
                (&Method::POST, None) if unknown.ends_with("/import") => {
                    app.raw(
                        method.clone(),
                        &unknown,
                        Some(&app.admin_key),
                        "text/csv",
                        b"name\nA\n".to_vec(),
                    )
                    .await
                }
                _ => app.call(method.clone(), &unknown, body.clone()).await,
            };
            assert_error(&got, StatusCode::NOT_FOUND, "not_found");
        }
        assert_eq!(snapshot(&app, &ids).await, before, "{what} changed something");
    }
    // Bodies that refer to unknown ids.
    assert_error(
        &app.post(
            "/api/v1/lockers",
            json!({"site_id": "00000000-0000-7000-8000-00000000000a", "name": "L"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(snapshot(&app, &ids).await, before);
    // The device credential was never rotated by the refused requests.
    let (l, c) = (ids.locker.clone(), old_credential);
    let still = app
        .db
        .run(move |db| Ok(lockerhub::db::lockers::authenticate_device(db, &l, &c)?.is_some()))
        .await
        .unwrap();
    assert!(still);
}

#[actix_web::test]
async fn auth_failures_are_rate_limited_sqlite() {
    auth_failures_are_rate_limited(TestApp::sqlite_with(|s| s.auth_failures_per_minute = 5).await).await;
    crate::helpers::stop_servers().await
}

#[actix_web::test]
#[cfg_attr(not(postgres_tests), ignore = "PostgreSQL: set TEST_DATABASE_URL to run")]
async fn auth_failures_are_rate_limited_postgres() {
    auth_failures_are_rate_limited(TestApp::postgres_with(|s| s.auth_failures_per_minute = 5).await).await;
    crate::helpers::stop_servers().await
}

async fn auth_failures_are_rate_limited(app: TestApp) {
    let limit = app.settings.auth_failures_per_minute;
    let mut statuses = Vec::new();
    for _ in 0..limit + 3 {
        let got = app
            .raw(
                Method::GET,
                "/api/v1/sites",
                Some("lhk_guess"),
                "application/json",
                vec![],
            )
            .await;
        statuses.push(got.0);
    }
    assert!(statuses[..limit as usize]
        .iter()
        .all(|s| *s == StatusCode::UNAUTHORIZED));
    assert_eq!(*statuses.last().unwrap(), StatusCode::TOO_MANY_REQUESTS);
    // The real key still works: the limit is on failures, not on the admin.
    let (s, _) = app.get("/api/v1/sites").await;
    assert_eq!(s, StatusCode::OK);
}
