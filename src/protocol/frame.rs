//! Framing: `[2, id, action, payload]`, `[3, id, payload]`, `[4, id, code, description, details]`.

use serde_json::{json, Value};

/// Protocol and domain error codes carried by error frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not a valid frame: not JSON, not an array, wrong element types.
    FormatViolation,
    /// A valid frame whose payload does not fit the action, or a call out of order.
    ProtocolError,
    /// Unknown action.
    NotImplemented,
    /// The server failed; the device may retry with the same message id.
    InternalError,
    /// No free compartment fits.
    NoCompartment,
    /// The tracking number, recipient, carrier or deposit is unknown here.
    NotFound,
    /// A wrong pickup or collection code.
    InvalidCode,
    /// Too many wrong codes: locked out for a while.
    LockedOut,
    /// The request does not fit the current state (e.g. a compartment already in use).
    InvalidState,
    /// A journal replay that does not continue where the server is (1.1): resend from
    /// `details.expected_seq`.
    JournalGap,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FormatViolation => "FormatViolation",
            Self::ProtocolError => "ProtocolError",
            Self::NotImplemented => "NotImplemented",
            Self::InternalError => "InternalError",
            Self::NoCompartment => "NoCompartment",
            Self::NotFound => "NotFound",
            Self::InvalidCode => "InvalidCode",
            Self::LockedOut => "LockedOut",
            Self::InvalidState => "InvalidState",
            Self::JournalGap => "JournalGap",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::FormatViolation,
            Self::ProtocolError,
            Self::NotImplemented,
            Self::InternalError,
            Self::NoCompartment,
            Self::NotFound,
            Self::InvalidCode,
            Self::LockedOut,
            Self::InvalidState,
            Self::JournalGap,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// An error answer to a call.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub description: String,
    pub details: Value,
}

impl FrameError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            details: json!({}),
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Call { id: String, action: String, payload: Value },
    Result { id: String, payload: Value },
    Error { id: String, error: FrameError },
}

/// Message ids: 1–64 printable ASCII characters.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic())
}

impl Frame {
    /// Parses one text frame. On failure, returns the error frame to send back: with the
    /// message id when one could be read, else `-1`.
    pub fn parse(text: &str) -> Result<Frame, Frame> {
        let fail = |id: &str, msg: &str| Frame::Error {
            id: id.to_string(),
            error: FrameError::new(ErrorCode::FormatViolation, msg),
        };
        let value: Value = serde_json::from_str(text).map_err(|e| fail("-1", &format!("not JSON: {e}")))?;
        let Value::Array(items) = value else {
            return Err(fail("-1", "a frame is a JSON array"));
        };
        let id = match items.get(1) {
            Some(Value::String(s)) if valid_id(s) => s.clone(),
            _ => {
                return Err(fail(
                    "-1",
                    "element 1 must be a message id string of 1-64 printable characters",
                ))
            }
        };
        match (items.first().and_then(Value::as_u64), items.len()) {
            (Some(2), 4) => {
                let Some(action) = items[2].as_str() else {
                    return Err(fail(&id, "element 2 of a call must be the action name"));
                };
                if !items[3].is_object() {
                    return Err(fail(&id, "the payload must be a JSON object"));
                }
                Ok(Frame::Call {
                    id,
                    action: action.to_string(),
                    payload: items[3].clone(),
                })
            }
            (Some(3), 3) => Ok(Frame::Result {
                id,
                payload: items[2].clone(),
            }),
            (Some(4), 5) => {
                let code = items[2]
                    .as_str()
                    .and_then(ErrorCode::parse)
                    .unwrap_or(ErrorCode::InternalError);
                let description = items[3].as_str().unwrap_or_default().to_string();
                Ok(Frame::Error {
                    id,
                    error: FrameError {
                        code,
                        description,
                        details: items[4].clone(),
                    },
                })
            }
            _ => Err(fail(
                &id,
                "expected [2,id,action,payload], [3,id,payload] or [4,id,code,description,details]",
            )),
        }
    }

    pub fn to_text(&self) -> String {
        match self {
            Frame::Call { id, action, payload } => json!([2, id, action, payload]),
            Frame::Result { id, payload } => json!([3, id, payload]),
            Frame::Error { id, error } => json!([4, id, error.code.as_str(), error.description, error.details]),
        }
        .to_string()
    }

    pub fn id(&self) -> &str {
        match self {
            Frame::Call { id, .. } | Frame::Result { id, .. } | Frame::Error { id, .. } => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for f in [
            Frame::Call {
                id: "1".into(),
                action: "Heartbeat".into(),
                payload: json!({}),
            },
            Frame::Result {
                id: "a-b".into(),
                payload: json!({"x": 1}),
            },
            Frame::Error {
                id: "9".into(),
                error: FrameError::new(ErrorCode::NoCompartment, "full"),
            },
        ] {
            assert_eq!(Frame::parse(&f.to_text()).unwrap(), f);
        }
    }

    #[test]
    fn malformed_frames_get_error_frames() {
        for (text, id) in [
            ("not json", "-1"),
            ("{}", "-1"),
            ("[2]", "-1"),
            ("[2, 5, \"Heartbeat\", {}]", "-1"),
            ("[2, \"\", \"Heartbeat\", {}]", "-1"),
            ("[2, \"7\", \"Heartbeat\"]", "7"),
            ("[2, \"7\", 3, {}]", "7"),
            ("[2, \"7\", \"Heartbeat\", []]", "7"),
            ("[9, \"7\", \"Heartbeat\", {}]", "7"),
        ] {
            match Frame::parse(text) {
                Err(Frame::Error { id: got, error }) => {
                    assert_eq!(got, id, "{text}");
                    assert_eq!(error.code, ErrorCode::FormatViolation);
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
