use awc::http::StatusCode;

use crate::db_test;
use crate::helpers::{assert_error, TestApp};

db_test!(parcel_search_validates);

async fn parcel_search_validates(app: TestApp) {
    let (s, v) = app.get("/api/v1/parcels?state=deposited").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["items"].as_array().unwrap().len(), 0);
    assert_error(
        &app.get("/api/v1/parcels?state=lost").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        &app.get("/api/v1/parcels?colour=red").await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    );
    assert_error(
        &app.get("/api/v1/parcels?tracking_number=a%20b").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_error(
        &app.get("/api/v1/parcels/nope").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}
