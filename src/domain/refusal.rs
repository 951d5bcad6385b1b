//! Why the domain said no. Every rule that refuses returns one of these, with a stable code;
//! the layers above map it onto their wire (a device `CallError`, an HTTP status), never the
//! other way round.

use super::parcel::ParcelState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The parcel, recipient, carrier or compartment is not known here.
    NotFound(String),
    /// The input is well-formed on the wire but not a valid value (a phone number, a tracking
    /// number).
    InvalidInput(String),
    /// The request does not fit the current state (a deposit already in progress, a parcel
    /// reserved at another locker).
    InvalidState(String),
    /// No free compartment fits.
    NoCompartment(String),
    /// The parcel state machine forbids this change.
    InvalidTransition { from: ParcelState, to: ParcelState },
    /// The parcel is no longer in the state this change was decided from: something else
    /// changed it first.
    StateChanged { expected: ParcelState },
}

impl Refusal {
    /// The stable code: documented, logged, and matched by clients.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::InvalidInput(_) => "invalid_input",
            Self::InvalidState(_) => "invalid_state",
            Self::NoCompartment(_) => "no_compartment",
            Self::InvalidTransition { .. } => "invalid_transition",
            Self::StateChanged { .. } => "state_changed",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::NotFound(m) | Self::InvalidInput(m) | Self::InvalidState(m) | Self::NoCompartment(m) => m.clone(),
            Self::InvalidTransition { from, to } => {
                format!("a {} parcel cannot become {}", from.as_str(), to.as_str())
            }
            Self::StateChanged { expected } => {
                format!("the parcel is no longer {}: it changed meanwhile", expected.as_str())
            }
        }
    }

    /// Machine-readable detail for the wire: the states of a refused transition.
    pub fn details(&self) -> serde_json::Value {
        match self {
            Self::InvalidTransition { from, to } => serde_json::json!({
                "refusal": self.code(), "from": from.as_str(), "to": to.as_str()
            }),
            Self::StateChanged { expected } => serde_json::json!({
                "refusal": self.code(), "expected": expected.as_str()
            }),
            _ => serde_json::json!({}),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}
