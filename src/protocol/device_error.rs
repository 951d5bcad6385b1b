//! The device side of an operation's outcome: a refusal becomes an error frame with a
//! protocol error code; a server failure becomes `InternalError`, which the device may retry.

use super::frame::{ErrorCode, FrameError};
use crate::domain::refusal::Refusal;
use crate::error::{AppError, Failure, OpError};

/// What a locker operation can end in besides success: a refusal the device is told about
/// (no compartment, wrong code…), or a server failure it may retry with the same message id.
#[derive(Debug)]
pub enum DeviceError {
    Refused(FrameError),
    Failed(AppError),
    /// Not a failure: the call is a retry of one whose answer was stored with its change, found
    /// by the transaction that would have run it again. Nothing runs; the stored answer (its
    /// result payload) is sent again. The transaction ends without writing.
    Replayed(serde_json::Value),
    /// Not a failure either: the call ran again, and storing its answer found the same call's
    /// answer stored before. Its transaction rolls back; the stored answer is then read and
    /// sent as [`Self::Replayed`] (`LockerActor::stored_answer_wins`).
    AnsweredBefore,
}

impl DeviceError {
    pub fn refuse(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Refused(FrameError::new(code, message))
    }

    pub fn to_frame_error(&self) -> FrameError {
        match self {
            Self::Refused(e) => e.clone(),
            Self::Failed(e) => {
                tracing::error!(error = %e, "locker operation failed");
                FrameError::new(ErrorCode::InternalError, "server error; retry with the same message id")
            }
            // Sent as the result it is (`LockerActor::run_call`); never an error frame.
            Self::Replayed(_) | Self::AnsweredBefore => {
                tracing::error!("a replayed answer reached the error path");
                FrameError::new(ErrorCode::InternalError, "server error; retry with the same message id")
            }
        }
    }
}

impl From<Refusal> for DeviceError {
    fn from(r: Refusal) -> Self {
        let code = match &r {
            Refusal::NotFound(_) => ErrorCode::NotFound,
            Refusal::InvalidInput(_) => ErrorCode::ProtocolError,
            Refusal::NoCompartment(_) => ErrorCode::NoCompartment,
            Refusal::InvalidState(_) | Refusal::InvalidTransition { .. } | Refusal::StateChanged { .. } => {
                ErrorCode::InvalidState
            }
        };
        Self::Refused(FrameError::new(code, r.message()).with_details(r.details()))
    }
}

impl From<OpError> for DeviceError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Refused(r) => r.into(),
            OpError::Failed(e) => Self::Failed(e),
        }
    }
}

impl From<AppError> for DeviceError {
    fn from(e: AppError) -> Self {
        Self::Failed(e)
    }
}

impl From<diesel::result::Error> for DeviceError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Failed(e.into())
    }
}

impl Failure for DeviceError {
    fn is_server_failure(&self) -> bool {
        matches!(self, DeviceError::Failed(e) if e.is_server_failure())
    }
}

impl DeviceError {
    /// Adds `retry_after_secs` to a refusal's details.
    pub fn with_retry(self, after: std::time::Duration) -> Self {
        match self {
            DeviceError::Refused(e) => {
                DeviceError::Refused(e.with_details(serde_json::json!({"retry_after_secs": after.as_secs().max(1)})))
            }
            other => other,
        }
    }
}
