//! The device WebSocket endpoint: `GET /ws/v1/lockers/{id}` with the locker's credential.

use std::time::Duration;

use actix_web::{get, web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use base64::Engine;

use super::auth::{bearer, client_ip, reject};
use super::AppState;
use crate::actors::messages::GetLocker;
use crate::actors::session::LockerSession;
use crate::db::lockers;
use crate::error::AppError;
use crate::protocol::MAX_BOOT_FRAME_BYTES;

/// The credential from `Authorization: Bearer <credential>` or `Basic base64(<locker id>:<credential>)`.
fn device_credential(req: &HttpRequest, locker_id: &str) -> Option<String> {
    if let Some(t) = bearer(req) {
        return Some(t);
    }
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let (user, pass) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    (user == locker_id && !pass.is_empty()).then(|| pass.to_string())
}

/// Authenticates the device before upgrading; a wrong credential never gets a WebSocket.
/// Served outside the request-tracing middleware (see `startup`), so a refusal is logged here.
#[get("/ws/v1/lockers/{id}")]
pub async fn connect(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let locker_id = id.into_inner();
    let result = upgrade(&req, stream, &state, locker_id.clone()).await;
    if let Err(e) = &result {
        tracing::info!(locker = %locker_id, ip = %client_ip(&req), error = %e, "device connection refused");
    }
    result
}

async fn upgrade(
    req: &HttpRequest,
    stream: web::Payload,
    state: &AppState,
    locker_id: String,
) -> Result<HttpResponse, AppError> {
    let ip = client_ip(req);
    let Some(credential) = device_credential(req, &locker_id) else {
        return Err(reject(state, ip, "missing device credential"));
    };
    let lid = locker_id.clone();
    let credential_hash = crate::credentials::hash_token(&credential);
    let ok = state
        .db
        .read(move |c| Ok(lockers::authenticate_device(c, &lid, &credential)?.is_some()))
        .await?;
    if !ok {
        return Err(reject(state, ip, "invalid locker id or device credential"));
    }
    super::edge::authenticated(req);
    let locker = state
        .hub
        .send(GetLocker {
            locker_id: locker_id.clone(),
        })
        .await
        .map_err(|e| AppError::Unavailable(format!("hub: {e}")))?;
    let s = &state.settings;
    let session = LockerSession::new(
        locker_id,
        locker,
        credential_hash,
        Duration::from_secs(s.device_heartbeat_secs),
        Duration::from_secs(s.device_timeout_secs),
    )
    .on_clock(state.clock.clone());
    // The WebSocket layer refuses, from the frame header, anything beyond the largest frame of
    // any kind (a boot); the session holds every other action to 16 KiB (protocol::frame_limit).
    ws::WsResponseBuilder::new(session, req, stream)
        .frame_size(MAX_BOOT_FRAME_BYTES)
        .protocols(&["lockerhub.v1"])
        .start()
        .map_err(|e| AppError::bad_request(format!("WebSocket handshake failed: {e}")))
}
