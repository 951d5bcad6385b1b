use awc::http::{Method, StatusCode};
use serde_json::json;

use crate::db_test;
use crate::helpers::{assert_error, TestApp};

db_test!(
    locker_with_layout,
    compartments_bulk_and_duplicates,
    compartment_service_status,
    sections_partition,
    locker_credential_rotates
);

async fn locker_with_layout(app: TestApp) {
    let site = app.site().await;
    let (s, v) = app
        .post(
            "/api/v1/lockers",
            json!({"site_id": site, "name": "Lobby", "location": "Ground floor",
                   "layout": [{"size": "S", "count": 10}, {"size": "M", "count": 6}, {"size": "L", "count": 2, "accessible": true}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let cred = v["device_credential"].as_str().unwrap();
    assert!(cred.starts_with("lhd_"));
    assert!(
        v["locker"].get("credential_hash").is_none(),
        "hash never leaves the server"
    );
    let comps = v["compartments"].as_array().unwrap();
    assert_eq!(comps.len(), 18);
    assert_eq!(comps[0]["number"], 1);
    assert_eq!(comps[0]["size"], "S");
    assert_eq!(comps[16]["size"], "L");
    assert_eq!(comps[16]["accessible"], true);
    assert!(comps.iter().all(|c| c["status"] == "free"));

    let id = v["locker"]["id"].as_str().unwrap();
    let (s, got) = app.get(&format!("/api/v1/lockers/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["connected"], false);
    let (s, list) = app.get(&format!("/api/v1/lockers?site_id={site}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, none) = app.get("/api/v1/lockers?site_id=other").await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let (s, upd) = app
        .patch(
            &format!("/api/v1/lockers/{id}"),
            json!({"name": "Mailroom", "active": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(upd["name"], "Mailroom");
    assert_eq!(upd["active"], false);

    assert_error(
        &app.post("/api/v1/lockers", json!({"site_id": "no-such-site", "name": "x"}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.post(
            "/api/v1/lockers",
            json!({"site_id": site, "name": "x", "layout": [{"size": "XXL", "count": 1}]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_error(
        &app.post(
            "/api/v1/lockers",
            json!({"site_id": site, "name": "x", "layout": [{"size": "S", "count": 5000}]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (_, list) = app.get("/api/v1/lockers").await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "failed creates left nothing behind"
    );
}

async fn compartments_bulk_and_duplicates(app: TestApp) {
    let site = app.site().await;
    let (id, _) = app.locker(&site, json!([{"size": "S", "count": 2}])).await;
    let path = format!("/api/v1/lockers/{id}/compartments");
    let (s, added) = app.post(&path, json!({"layout": [{"size": "XL", "count": 2}]})).await;
    assert_eq!(s, StatusCode::CREATED, "{added}");
    let numbers: Vec<i64> = added
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, vec![3, 4], "layouts continue the numbering");

    let (s, added) = app
        .post(&path, json!({"compartments": [{"number": 10, "size": "M"}]}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{added}");

    // A number that exists, or one listed twice: 409 and nothing inserted.
    assert_error(
        &app.post(
            &path,
            json!({"compartments": [{"number": 11, "size": "M"}, {"number": 3, "size": "S"}]}),
        )
        .await,
        StatusCode::CONFLICT,
        "duplicate_compartment",
    );
    assert_error(
        &app.post(
            &path,
            json!({"compartments": [{"number": 12, "size": "M"}, {"number": 12, "size": "S"}]}),
        )
        .await,
        StatusCode::CONFLICT,
        "duplicate_compartment",
    );
    assert_error(
        &app.post(&path, json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        &app.post(&path, json!({"compartments": [{"number": 0, "size": "M"}]}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    // Exactly one of the two, not empty (the schema's one property and minItems; found by
    // schemathesis): an empty layout beside compartments is refused, nothing is added.
    for body in [
        json!({"compartments": [{"number": 20, "size": "L"}], "layout": []}),
        json!({"compartments": [{"number": 20, "size": "L"}], "layout": [{"size": "S", "count": 1}]}),
        json!({"compartments": []}),
        json!({"layout": []}),
    ] {
        assert_error(
            &app.post(&path, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        );
    }
    let (_, all) = app.get(&path).await;
    let numbers: Vec<i64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 10]);
    assert_error(
        &app.get("/api/v1/lockers/nope/compartments").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

async fn compartment_service_status(app: TestApp) {
    let site = app.site().await;
    let (id, _) = app.locker(&site, json!([{"size": "S", "count": 2}])).await;
    let (s, c) = app
        .patch(
            &format!("/api/v1/lockers/{id}/compartments/2"),
            json!({"in_service": false}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["status"], "out_of_service");
    assert!(c["fault"].as_str().is_some());
    let (s, c) = app
        .patch(
            &format!("/api/v1/lockers/{id}/compartments/2"),
            json!({"in_service": true, "size": "M"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["status"], "free");
    assert_eq!(c["size"], "M");
    assert!(c["fault"].is_null());
    assert_error(
        &app.patch(
            &format!("/api/v1/lockers/{id}/compartments/99"),
            json!({"in_service": false}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.patch(
            &format!("/api/v1/lockers/{id}/compartments/abc"),
            json!({"in_service": false}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    );
    assert_error(
        &app.patch(
            &format!("/api/v1/lockers/{id}/compartments/1"),
            json!({"status": "free"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
}

async fn sections_partition(app: TestApp) {
    let site = app.site().await;
    let (id, _) = app.locker(&site, json!([{"size": "S", "count": 4}])).await;
    let ups = app.carrier("ups").await;
    let ups_id = ups["carrier"]["id"].as_str().unwrap();
    let path = format!("/api/v1/lockers/{id}/sections/{ups_id}");
    let (s, sec) = app.put(&path, json!({"compartments": [1, 2], "exclusive": true})).await;
    assert_eq!(s, StatusCode::OK, "{sec}");
    assert_eq!(sec["exclusive"], true);
    let section_id = sec["id"].as_str().unwrap().to_string();
    let (_, comps) = app.get(&format!("/api/v1/lockers/{id}/compartments")).await;
    let in_section: Vec<i64> = comps
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["section_id"] == section_id.as_str())
        .map(|c| c["number"].as_i64().unwrap())
        .collect();
    assert_eq!(in_section, vec![1, 2]);

    // Re-partition: the section now holds 3 and 4 only.
    let (s, _) = app.put(&path, json!({"compartments": [3, 4]})).await;
    assert_eq!(s, StatusCode::OK);
    let (_, comps) = app.get(&format!("/api/v1/lockers/{id}/compartments")).await;
    let in_section: Vec<i64> = comps
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["section_id"] == section_id.as_str())
        .map(|c| c["number"].as_i64().unwrap())
        .collect();
    assert_eq!(in_section, vec![3, 4]);
    let (_, secs) = app.get(&format!("/api/v1/lockers/{id}/sections")).await;
    assert_eq!(secs.as_array().unwrap().len(), 1);
    assert_eq!(secs[0]["exclusive"], false);

    // Which compartments exist is the locker's state: a conflict, not a malformed body.
    assert_error(
        &app.put(&path, json!({"compartments": [9]})).await,
        StatusCode::CONFLICT,
        "unknown_compartment",
    );
    assert_error(
        &app.put(
            &format!("/api/v1/lockers/{id}/sections/nope"),
            json!({"compartments": [1]}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let (s, _) = app.call(Method::DELETE, &path, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, comps) = app.get(&format!("/api/v1/lockers/{id}/compartments")).await;
    assert!(comps.as_array().unwrap().iter().all(|c| c["section_id"].is_null()));
    assert_error(
        &app.call(Method::DELETE, &path, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

async fn locker_credential_rotates(app: TestApp) {
    let site = app.site().await;
    let (id, old) = app.locker(&site, json!([])).await;
    let (s, v) = app.post(&format!("/api/v1/lockers/{id}/credential"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let new = v["device_credential"].as_str().unwrap();
    assert_ne!(new, old);
    let (db_old, db_new, id2) = (old.clone(), new.to_string(), id.clone());
    let (a, b) = app
        .db
        .run(move |c| {
            Ok((
                lockerhub::db::lockers::authenticate_device(c, &id2, &db_old)?.is_some(),
                lockerhub::db::lockers::authenticate_device(c, &id2, &db_new)?.is_some(),
            ))
        })
        .await
        .unwrap();
    assert!(!a && b, "old credential revoked, new one works");
    assert_error(
        &app.post("/api/v1/lockers/nope/credential", json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}
