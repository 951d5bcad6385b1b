use awc::http::StatusCode;
use serde_json::json;

use crate::db_test;
use crate::helpers::{assert_error, TestApp};

db_test!(carriers_crud_and_secrets, carriers_reject_bad_fields);

async fn carriers_crud_and_secrets(app: TestApp) {
    let (s, v) = app
        .post(
            "/api/v1/carriers",
            json!({"code": "UPS", "name": "United Parcel Service", "webhook_url": "https://hooks.example.org/ups", "webhook_concurrency": 8}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["carrier"]["code"], "ups");
    assert_eq!(v["carrier"]["webhook_concurrency"], 8);
    assert_eq!(v["carrier"]["webhook_rate_per_sec"], 10);
    let secrets = &v["secrets"];
    assert!(secrets["api_key"].as_str().unwrap().starts_with("lhc_"));
    assert!(secrets["webhook_secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(secrets["courier_code"].as_str().unwrap().len(), 12);
    let id = v["carrier"]["id"].as_str().unwrap();

    let (s, got) = app.get(&format!("/api/v1/carriers/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    let text = got.to_string();
    for secret in ["api_key", "webhook_secret", "courier_code"] {
        assert!(
            !text.contains(secrets[secret].as_str().unwrap()),
            "{secret} is never shown again"
        );
    }
    assert!(got.get("api_key_hash").is_none() && got.get("webhook_secret_enc").is_none());

    // Stored only as hash / ciphertext.
    let (api_key, webhook_secret) = (
        secrets["api_key"].as_str().unwrap().to_string(),
        secrets["webhook_secret"].as_str().unwrap().to_string(),
    );
    let key = app.settings.server_key().unwrap();
    let id2 = id.to_string();
    let row = app
        .db
        .run(move |c| Ok(lockerhub::db::carriers::get(c, &id2)?))
        .await
        .unwrap();
    assert_ne!(row.api_key_hash, api_key);
    assert!(!row.webhook_secret_enc.contains(&webhook_secret));
    assert_eq!(key.decrypt(&row.webhook_secret_enc).unwrap(), webhook_secret);

    let (s, upd) = app
        .patch(
            &format!("/api/v1/carriers/{id}"),
            json!({"webhook_url": null, "active": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(upd["webhook_url"].is_null());
    assert_eq!(upd["active"], false);
    let (_, list) = app.get("/api/v1/carriers").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    assert_error(
        &app.post("/api/v1/carriers", json!({"code": "ups", "name": "Again"}))
            .await,
        StatusCode::CONFLICT,
        "conflict",
    );
}

async fn carriers_reject_bad_fields(app: TestApp) {
    for body in [
        json!({"code": "u", "name": "x"}),
        json!({"code": "ups!", "name": "x"}),
        json!({"code": "ups", "name": " "}),
        json!({"code": "ups", "name": "x", "webhook_url": "ftp://x.org"}),
        json!({"code": "ups", "name": "x", "webhook_url": "not a url"}),
        json!({"code": "ups", "name": "x", "webhook_concurrency": 0}),
        json!({"code": "ups", "name": "x", "webhook_rate_per_sec": 100000}),
    ] {
        assert_error(
            &app.post("/api/v1/carriers", body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    assert_error(
        &app.post("/api/v1/carriers", json!({"code": 5, "name": "x"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    let (_, list) = app.get("/api/v1/carriers").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    assert_error(
        &app.patch("/api/v1/carriers/nope", json!({"name": "x"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}
