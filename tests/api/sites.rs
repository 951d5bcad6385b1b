use awc::http::StatusCode;
use serde_json::json;

use crate::db_test;
use crate::helpers::{assert_error, TestApp};

db_test!(sites_crud, sites_paginate, sites_reject_bad_fields);

async fn sites_crud(app: TestApp) {
    let (s, site) = app
        .post(
            "/api/v1/sites",
            json!({"name": " Elm Court ", "address": "1 Elm St", "time_zone": "Europe/Berlin", "dwell_hours": 48}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{site}");
    assert_eq!(site["name"], "Elm Court");
    assert_eq!(site["dwell_hours"], 48);
    let id = site["id"].as_str().unwrap();

    let (s, got) = app.get(&format!("/api/v1/sites/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["time_zone"], "Europe/Berlin");
    assert!(got["created_at"].as_str().unwrap().ends_with('Z'));

    let (s, upd) = app
        .patch(
            &format!("/api/v1/sites/{id}"),
            json!({"address": "2 Elm St", "dwell_hours": null}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{upd}");
    assert_eq!(upd["address"], "2 Elm St");
    assert_eq!(upd["dwell_hours"], serde_json::Value::Null);
    assert_eq!(upd["name"], "Elm Court", "untouched fields stay");

    let (s, list) = app.get("/api/v1/sites").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["next"].is_null());
}

async fn sites_paginate(app: TestApp) {
    for i in 0..5 {
        let (s, _) = app
            .post(
                "/api/v1/sites",
                json!({"name": format!("S{i}"), "address": "x", "time_zone": "UTC"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..5 {
        let path = match &after {
            Some(a) => format!("/api/v1/sites?limit=2&after={a}"),
            None => "/api/v1/sites?limit=2".to_string(),
        };
        let (s, page) = app.get(&path).await;
        assert_eq!(s, StatusCode::OK);
        for item in page["items"].as_array().unwrap() {
            names.push(item["name"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(
        names,
        vec!["S0", "S1", "S2", "S3", "S4"],
        "every item once, in creation order"
    );
    assert_error(
        &app.get("/api/v1/sites?limit=0").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        &app.get("/api/v1/sites?limit=1000").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        &app.get("/api/v1/sites?limit=abc").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        &app.get("/api/v1/sites?after=nope").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
}

async fn sites_reject_bad_fields(app: TestApp) {
    for (body, code) in [
        (
            json!({"name": "", "address": "x", "time_zone": "UTC"}),
            "validation_failed",
        ),
        (
            json!({"name": "x", "address": "x", "time_zone": "Mars/Olympus"}),
            "validation_failed",
        ),
        (
            json!({"name": "x", "address": "x", "time_zone": "UTC", "dwell_hours": 0}),
            "validation_failed",
        ),
        (json!({"name": "x", "address": "x"}), "invalid_body"),
        (
            json!({"name": "x", "address": "x", "time_zone": "UTC", "colour": "red"}),
            "invalid_body",
        ),
    ] {
        let got = app.post("/api/v1/sites", body.clone()).await;
        let status = if code == "invalid_body" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        assert_error(&got, status, code);
    }
    let (_, list) = app.get("/api/v1/sites").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "nothing was created");
}
