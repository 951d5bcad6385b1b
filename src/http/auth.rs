//! Bearer-key authentication for the admin API.

use std::net::IpAddr;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use super::AppState;
use crate::db::admin_keys;
use crate::domain::remote_open::Role;
use crate::error::AppError;

/// An authenticated admin; its id is recorded as the actor of admin-made events.
#[derive(Debug, Clone)]
pub struct Admin {
    pub key_id: String,
    /// The named person holding the key.
    pub holder: String,
    pub role: Role,
}

impl Admin {
    pub fn actor(&self) -> String {
        format!("admin:{}", self.key_id)
    }

    /// Refuses (403 `admin_role_required`) unless this key may manage admin keys.
    pub fn require_key_manager(&self) -> Result<(), AppError> {
        if self.role.may_manage_keys() {
            Ok(())
        } else {
            Err(AppError::Denied {
                code: "admin_role_required",
                message: "only a key with the admin role may manage admin keys".into(),
            })
        }
    }
}

/// The token in `Authorization: Bearer <token>`, if well-formed.
pub fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 512).then(|| token.to_string())
}

pub fn client_ip(req: &HttpRequest) -> IpAddr {
    req.peer_addr().map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Counts a failed credential check against the client's IP and builds the error to return.
pub fn reject(state: &AppState, ip: IpAddr, message: &str) -> AppError {
    if state.limits.check_auth_failure(ip) {
        AppError::Unauthorized(message.into())
    } else {
        AppError::RateLimited("too many failed authentication attempts; try again later".into())
    }
}

/// Middleware for the admin scope: authentication runs before any body is read or parsed,
/// so a request without a valid key never learns anything about its input.
pub async fn require_admin(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| AppError::internal("app state missing"))?
        .clone();
    let ip = client_ip(req.request());
    let Some(token) = bearer(req.request()) else {
        return Err(reject(
            &state,
            ip,
            "missing bearer token: send Authorization: Bearer <admin key>",
        )
        .into());
    };
    let found = state.db.read(move |c| Ok(admin_keys::authenticate(c, &token)?)).await?;
    match found {
        Some(key) => {
            super::edge::authenticated(req.request());
            // A viewer reads: anything but GET and HEAD is refused before the handler runs.
            let reads = matches!(
                *req.method(),
                actix_web::http::Method::GET | actix_web::http::Method::HEAD
            );
            if !reads && !key.role.may_write() {
                tracing::warn!(admin_key = %key.id, holder = %key.holder, method = %req.method(),
                    path = %req.path(), "write refused to a viewer key");
                return Err(AppError::Denied {
                    code: "read_only_key",
                    message: "this admin key has the viewer role and may only read".into(),
                }
                .into());
            }
            req.extensions_mut().insert(Admin {
                key_id: key.id,
                holder: key.holder,
                role: key.role,
            });
            next.call(req).await
        }
        None => Err(reject(&state, ip, "invalid admin key").into()),
    }
}

impl FromRequest for Admin {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Admin>()
                .cloned()
                .ok_or_else(|| AppError::Unauthorized("admin authentication required".into())),
        )
    }
}
