//! The rules for opening a compartment remotely and for the admin keys that may do it.
//!
//! A remote open bypasses every code a recipient or carrier must present, so it is the most
//! dangerous thing the admin API can do: each one needs a reason, is recorded, and beyond a
//! few opens of one locker in a window a second person must approve it.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// What an admin key may do. `viewer` only reads; `operator` may change things and open
/// doors; `admin` may also manage admin keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "operator" => Some(Self::Operator),
            "viewer" => Some(Self::Viewer),
            _ => None,
        }
    }

    /// Whether this role may send requests that change something (anything but GET/HEAD).
    pub fn may_write(self) -> bool {
        self != Self::Viewer
    }

    /// Whether this role may create, list and revoke admin keys.
    pub fn may_manage_keys(self) -> bool {
        self == Self::Admin
    }
}

/// Most characters in a reason or a holder's name.
pub const MAX_REASON_CHARS: usize = 200;
pub const MAX_HOLDER_CHARS: usize = 100;

/// Why a door is opened: 1–200 characters after trimming, no control characters. Parse,
/// don't validate: holding a `Reason` means it is acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() {
            return Err("reason is required: say why the compartment is opened (1-200 characters)".into());
        }
        if s.chars().count() > MAX_REASON_CHARS {
            return Err(format!("reason must be at most {MAX_REASON_CHARS} characters"));
        }
        if s.chars().any(char::is_control) {
            return Err("reason must not contain control characters".into());
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The named person who holds a key: 1–100 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder(String);

impl Holder {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        if s.is_empty() || s.chars().count() > MAX_HOLDER_CHARS || s.chars().any(char::is_control) {
            return Err(format!(
                "holder must be the name of the person holding the key (1-{MAX_HOLDER_CHARS} characters)"
            ));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Two keys belong to the same person when their holders match ignoring case and spacing:
    /// "Ann Lee" and " ann  lee" cannot approve each other's opens.
    pub fn same_person(a: &str, b: &str) -> bool {
        let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        norm(a) == norm(b)
    }
}

/// Where a remote open attempt stands. `opening` and `approved` last only while the device
/// is asked; the others are final except `pending_approval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Sent to the device, answer awaited.
    Opening,
    Opened,
    /// Refused before reaching the device (rate limit, no reason, no such compartment).
    Refused,
    /// The device refused or was not connected.
    Failed,
    /// The device did not answer in time: the door may or may not have opened.
    Unknown,
    PendingApproval,
    /// Approved by a second person; being sent to the device.
    Approved,
    Rejected,
    /// Nobody approved it within the approval TTL.
    Expired,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Self::Opening,
        Self::Opened,
        Self::Refused,
        Self::Failed,
        Self::Unknown,
        Self::PendingApproval,
        Self::Approved,
        Self::Rejected,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opening => "opening",
            Self::Opened => "opened",
            Self::Refused => "refused",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
            Self::PendingApproval => "pending_approval",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The outcomes that count toward a locker's window: commands that reached (or may have
    /// reached) the device. Refusals, failures and unapproved requests open nothing.
    pub const COUNTED: [Outcome; 4] = [Self::Opening, Self::Approved, Self::Opened, Self::Unknown];
}

/// Whether one more open of a locker that already had `recent` counted opens in the window
/// must wait for a second person's approval.
pub fn needs_approval(recent: i64, max_per_window: u32) -> bool {
    recent >= i64::from(max_per_window)
}

/// Why an approval or rejection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionRefused {
    /// The request is not waiting for a decision (already decided, or never needed one).
    NotPending,
    /// Its approval window has passed; it is now `expired`.
    Expired,
    /// The approver holds the key that asked (or another key held by the same person).
    SameHolder,
}

/// Checks that the holder of `approver_holder` may approve an open requested by
/// `requester_holder` that is in `outcome` and lapses at `expires_at`, at time `now`.
/// A rejection (`approving == false`) needs no second person: withdrawing a request never
/// opens a door.
pub fn check_decision(
    outcome: Outcome,
    expires_at: Option<NaiveDateTime>,
    now: NaiveDateTime,
    requester_holder: &str,
    approver_holder: &str,
    approving: bool,
) -> Result<(), DecisionRefused> {
    if outcome == Outcome::Expired || (outcome == Outcome::PendingApproval && expires_at.is_some_and(|t| t <= now)) {
        return Err(DecisionRefused::Expired);
    }
    if outcome != Outcome::PendingApproval {
        return Err(DecisionRefused::NotPending);
    }
    if approving && Holder::same_person(requester_holder, approver_holder) {
        return Err(DecisionRefused::SameHolder);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0)
            .unwrap()
            .naive_utc()
    }

    #[test]
    fn reasons_are_bounded() {
        assert!(Reason::parse("  ").is_err());
        assert!(Reason::parse(&"x".repeat(201)).is_err());
        assert!(Reason::parse("a\u{7}b").is_err());
        assert_eq!(Reason::parse(" jammed door ").unwrap().as_str(), "jammed door");
        assert!(Reason::parse(&"é".repeat(200)).is_ok(), "characters, not bytes");
    }

    #[test]
    fn holders_compare_as_people() {
        assert!(Holder::same_person("Ann Lee", " ann   LEE"));
        assert!(!Holder::same_person("Ann Lee", "Bob Roe"));
        assert!(Holder::parse("").is_err());
    }

    #[test]
    fn window_and_decisions() {
        assert!(!needs_approval(2, 3));
        assert!(needs_approval(3, 3));
        let ok = check_decision(Outcome::PendingApproval, Some(t(900)), t(10), "Ann", "Bob", true);
        assert_eq!(ok, Ok(()));
        assert_eq!(
            check_decision(Outcome::PendingApproval, Some(t(900)), t(10), "Ann", "ann", true),
            Err(DecisionRefused::SameHolder)
        );
        assert_eq!(
            check_decision(Outcome::PendingApproval, Some(t(900)), t(10), "Ann", "ann", false),
            Ok(()),
            "the requester may withdraw"
        );
        assert_eq!(
            check_decision(Outcome::PendingApproval, Some(t(900)), t(900), "Ann", "Bob", true),
            Err(DecisionRefused::Expired)
        );
        assert_eq!(
            check_decision(Outcome::Expired, Some(t(900)), t(1000), "Ann", "Bob", true),
            Err(DecisionRefused::Expired)
        );
        assert_eq!(
            check_decision(Outcome::Opened, None, t(0), "Ann", "Bob", true),
            Err(DecisionRefused::NotPending)
        );
    }

    #[test]
    fn names_round_trip() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        for r in [Role::Admin, Role::Operator, Role::Viewer] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
    }
}
