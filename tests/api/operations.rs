use awc::http::{Method, StatusCode};

use crate::db_test;
use crate::helpers::{assert_error, TestApp};

db_test!(probes_and_docs);

async fn probes_and_docs(app: TestApp) {
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get("x-request-id").is_some(),
        "every response carries a request id"
    );
    let (s, v) = app.get("/readyz").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "ready");

    let (s, doc) = app.get("/api-docs/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/sites",
        "/api/v1/lockers/{id}/compartments",
        "/api/v1/carriers",
        "/api/v1/parcels",
        "/readyz",
    ] {
        assert!(paths.contains_key(p), "{p} documented");
    }
    let mut ids = std::collections::HashSet::new();
    for item in paths.values() {
        for op in item.as_object().unwrap().values() {
            if let Some(id) = op.get("operationId") {
                assert!(
                    ids.insert(id.as_str().unwrap().to_string()),
                    "duplicate operationId {id}"
                );
            }
        }
    }

    assert_error(&app.get("/no/such/route").await, StatusCode::NOT_FOUND, "not_found");
    // A known path with another method is a 405 (tests/api/http_edge.rs has the details).
    assert_error(
        &app.call(Method::DELETE, "/api/v1/sites", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

/// With the database gone, readiness fails with 503 and liveness still answers.
#[actix_web::test]
#[cfg_attr(not(postgres_tests), ignore = "PostgreSQL: set TEST_DATABASE_URL to run")]
async fn readyz_reports_an_unreachable_database() {
    let mut app = TestApp::postgres().await;
    app.skip_invariants("the test drops its database: nothing is left to check");
    app.drop_database_now();
    let (s, v) = app.get("/readyz").await;
    assert_error(&(s, v), StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let (s, _) = app.get("/healthz").await;
    assert_eq!(s, StatusCode::OK);
    crate::helpers::stop_servers().await
}
