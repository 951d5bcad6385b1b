use awc::http::{Method, StatusCode};
use serde_json::json;

use crate::db_test;
use crate::helpers::{assert_error, TestApp};

db_test!(recipients_crud, recipients_csv_import, recipients_csv_all_or_nothing);

async fn recipients_crud(app: TestApp) {
    let site = app.site().await;
    let (s, r) = app
        .post(
            "/api/v1/recipients",
            json!({"site_id": site, "name": "Ann Lee", "unit": "4B", "phone": "+1 (555) 010-2030",
                   "email": "Ann@Example.org", "channels": ["sms", "email"], "needs_accessible": true,
                   "vacation_until": "2030-01-02T03:04:05Z"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["phone"], "+15550102030");
    assert_eq!(r["email"], "ann@example.org");
    assert_eq!(r["channels"], "sms,email");
    assert_eq!(r["needs_accessible"], true);
    assert_eq!(r["vacation_until"], "2030-01-02T03:04:05.000Z");
    let id = r["id"].as_str().unwrap();

    // Same phone at the same site: conflict.
    assert_error(
        &app.post(
            "/api/v1/recipients",
            json!({"site_id": site, "name": "Bob", "phone": "+15550102030"}),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    // A channel without its contact detail.
    assert_error(
        &app.post(
            "/api/v1/recipients",
            json!({"site_id": site, "name": "Cy", "channels": ["push"]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        &app.post("/api/v1/recipients", json!({"site_id": "nope", "name": "Cy"}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.post(
            "/api/v1/recipients",
            json!({"site_id": site, "name": "Cy", "email": "not-an-email"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );

    // Clearing the phone drops the sms preference.
    let (s, upd) = app
        .patch(
            &format!("/api/v1/recipients/{id}"),
            json!({"phone": null, "unit": "5C"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{upd}");
    assert!(upd["phone"].is_null());
    assert_eq!(upd["channels"], "email");
    assert_eq!(upd["unit"], "5C");

    let (_, found) = app.get(&format!("/api/v1/recipients?site_id={site}&q=ann")).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    let (_, found) = app.get(&format!("/api/v1/recipients?site_id={site}&q=zed")).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 0);
    let (_, found) = app.get("/api/v1/recipients?q=%25").await;
    assert_eq!(
        found["items"].as_array().unwrap().len(),
        0,
        "LIKE wildcards are literal"
    );
    let (s, got) = app.get(&format!("/api/v1/recipients/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["name"], "Ann Lee");
}

async fn recipients_csv_import(app: TestApp) {
    let site = app.site().await;
    let csv = "name,unit,phone,email,push_target,channels,needs_accessible\n\
               Ann Lee,4B,555-010-2030,ann@example.org,,sms;email,yes\n\
               Bob Ray,5C,,bob@example.org,,,\n\
               \"Cy, Jr.\",6D,+44 20 7946 0000,,tok-1,push,no\n";
    let (s, v) = app
        .raw(
            Method::POST,
            &format!("/api/v1/sites/{site}/recipients/import"),
            Some(&app.admin_key),
            "text/csv",
            csv.into(),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["imported"], 3);
    let (_, list) = app.get(&format!("/api/v1/recipients?site_id={site}")).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["needs_accessible"], true);
    assert_eq!(items[2]["name"], "Cy, Jr.");
    assert_eq!(items[2]["channels"], "push");
}

async fn recipients_csv_all_or_nothing(app: TestApp) {
    let site = app.site().await;
    let path = format!("/api/v1/sites/{site}/recipients/import");
    let key = app.admin_key.clone();
    let bad_rows = "name,unit,phone,email\nAnn,1,555-010-2030,\n,2,,\nBob,3,bad-phone,\n";
    let got = app
        .raw(Method::POST, &path, Some(&key), "text/csv", bad_rows.into())
        .await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let msg = got.1["message"].as_str().unwrap();
    assert!(msg.contains("line 3") && msg.contains("line 4"), "{msg}");
    let dup = "name,phone\nAnn,555-010-2030\nBob,5550102030\n";
    let got = app.raw(Method::POST, &path, Some(&key), "text/csv", dup.into()).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(got.1["message"].as_str().unwrap().contains("line 3"));
    assert_error(
        &app.raw(Method::POST, &path, Some(&key), "text/csv", b"name\n".to_vec())
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        &app.raw(Method::POST, &path, Some(&key), "application/json", b"{}".to_vec())
            .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let huge = format!("name\n{}", "x\n".repeat(1_100_000));
    assert_error(
        &app.raw(Method::POST, &path, Some(&key), "text/csv", huge.into()).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_error(
        &app.raw(
            Method::POST,
            "/api/v1/sites/nope/recipients/import",
            Some(&key),
            "text/csv",
            b"name\nAnn\n".to_vec(),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // A row whose phone already exists at the site: the whole import is refused.
    app.recipient(&site, "Existing", "555-999-0000").await;
    let clash = "name,phone\nNew One,555-123-4567\nNew Two,555-999-0000\n";
    assert_error(
        &app.raw(Method::POST, &path, Some(&key), "text/csv", clash.into()).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let (_, list) = app.get(&format!("/api/v1/recipients?site_id={site}")).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "only the pre-existing recipient"
    );
}
