//! The one error type. Every failure a client can see maps to a status and a stable code,
//! rendered as `{"error": "<code>", "message": "…"}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Malformed request: bad JSON, wrong types, bad query string.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Well-formed but semantically invalid input.
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// Authenticated, but this key may not do this (a viewer writing, the same person approving).
    #[error("{message}")]
    Denied { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The path exists, the method does not (the response carries `Allow`).
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A conflict whose body names what is in the way, in `details`.
    #[error("{message}")]
    ConflictWith {
        code: &'static str,
        message: String,
        details: serde_json::Value,
    },
    #[error("request body is larger than the {0}-byte limit")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    RateLimited(String),
    /// Over a documented allowance; `Retry-After` says when the next request may succeed.
    #[error("{message}")]
    Throttled {
        message: String,
        retry_after: std::time::Duration,
    },
    /// The client did not send its request (body) in time.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Unavailable(String),
    /// Work refused before it was attempted, because the server is saturated (the SQLite
    /// writer's queue is full): nothing ran, so nothing needs rebuilding, unlike `Unavailable`.
    /// The wire says the same as for `Unavailable`: 503 `unavailable`, retry.
    #[error("{0}")]
    Overloaded(String),
    /// A device did not answer in time; what happened is unknown.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// Logged in full, shown to the client only as "internal error".
    #[error("{0}")]
    Internal(String),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code.
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
    /// What the refusal is about, for the errors that say more (e.g. `compartments_in_use`
    /// lists the parcels in the way).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

impl AppError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest {
            code: "bad_request",
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Validation(message.into())
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound(what.into())
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            code: "conflict",
            message: message.into(),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }

    /// A 4xx: the request was refused, the server did not fail.
    pub fn status_is_client_error(&self) -> bool {
        actix_web::ResponseError::status_code(self).is_client_error()
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Conflict { code, .. }
            | Self::ConflictWith { code, .. }
            | Self::Denied { code, .. } => code,
            Self::Validation(_) => "validation_failed",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RateLimited(_) | Self::Throttled { .. } => "rate_limited",
            Self::RequestTimeout(_) => "request_timeout",
            Self::Unavailable(_) | Self::Overloaded(_) => "unavailable",
            Self::OutcomeUnknown(_) => "outcome_unknown",
            Self::Internal(_) => "internal",
        }
    }

    /// What the client is told; internal details stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => "internal error".into(),
            Self::Unavailable(_) | Self::Overloaded(_) => "service temporarily unavailable".into(),
            other => other.to_string(),
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::Denied { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } | Self::ConflictWith { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited(_) | Self::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable(_) | Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::OutcomeUnknown(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            Self::Unavailable(detail) | Self::Overloaded(detail) => tracing::warn!(error = %detail, "unavailable"),
            _ => {}
        }
        let mut resp = HttpResponse::build(self.status_code());
        if let Self::Unauthorized(_) = self {
            resp.insert_header(("WWW-Authenticate", "Bearer"));
        }
        let details = match self {
            Self::ConflictWith { details, .. } => Some(details.clone()),
            _ => None,
        };
        if let Self::Throttled { retry_after, .. } = self {
            // Whole seconds, rounded up: retrying at the stated time succeeds.
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            resp.insert_header(("Retry-After", secs.max(1).to_string()));
        }
        resp.json(ErrorBody {
            error: self.code().into(),
            message: self.public_message(),
            details,
        })
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match e {
            E::NotFound => Self::not_found("not found"),
            E::DatabaseError(K::UniqueViolation, info) => {
                Self::conflict(format!("already exists ({})", info.message()))
            }
            E::DatabaseError(K::ForeignKeyViolation, _) => Self::invalid("refers to something that does not exist"),
            E::DatabaseError(K::CheckViolation, info) => Self::invalid(info.message().to_string()),
            E::DatabaseError(K::ClosedConnection | K::UnableToSendCommand, info) => {
                Self::Unavailable(info.message().to_string())
            }
            other => Self::internal(format!("database: {other}")),
        }
    }
}

impl From<r2d2::Error> for AppError {
    fn from(e: r2d2::Error) -> Self {
        Self::Unavailable(format!("database pool: {e}"))
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// What an operation below the actors and handlers can end in besides success: a refusal by
/// the domain's rules, or a failure of the server. Each edge maps it onto its own wire.
#[derive(Debug)]
pub enum OpError {
    Refused(crate::domain::refusal::Refusal),
    Failed(AppError),
}

impl From<crate::domain::refusal::Refusal> for OpError {
    fn from(r: crate::domain::refusal::Refusal) -> Self {
        Self::Refused(r)
    }
}

impl From<AppError> for OpError {
    fn from(e: AppError) -> Self {
        Self::Failed(e)
    }
}

impl From<diesel::result::Error> for OpError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Failed(e.into())
    }
}

impl From<crate::domain::refusal::Refusal> for AppError {
    fn from(r: crate::domain::refusal::Refusal) -> Self {
        use crate::domain::refusal::Refusal as R;
        match &r {
            R::NotFound(m) => AppError::NotFound(m.clone()),
            R::InvalidInput(m) => AppError::Validation(m.clone()),
            R::InvalidState(_) | R::NoCompartment(_) => AppError::Conflict {
                code: r.code(),
                message: r.message(),
            },
            R::InvalidTransition { .. } | R::StateChanged { .. } => AppError::ConflictWith {
                code: r.code(),
                message: r.message(),
                details: r.details(),
            },
        }
    }
}

impl From<OpError> for AppError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Refused(r) => r.into(),
            OpError::Failed(e) => e,
        }
    }
}

/// Which errors mean the server failed (the locker actor restarts from the database) rather
/// than refused.
pub trait Failure {
    fn is_server_failure(&self) -> bool;
}

impl Failure for AppError {
    fn is_server_failure(&self) -> bool {
        matches!(self, AppError::Internal(_) | AppError::Unavailable(_))
    }
}
