//! The short second factor a recipient types after a keypad pickup code (docs/security.md §3):
//! the last 4 digits of the phone number on file, or, for a recipient with no phone number, the
//! unit. It is something the recipient already knows, so honest pickups need no new secret, and
//! it makes a guessed code useless unless it is paired with that parcel's recipient.

/// Digits of the phone number that form the factor.
pub const PHONE_DIGITS: usize = 4;

/// The factor expected for a recipient, normalised, or `None` when there is nothing to ask.
pub fn expected(phone: Option<&str>, unit: &str) -> Option<String> {
    let digits: String = phone.unwrap_or_default().chars().filter(char::is_ascii_digit).collect();
    if digits.len() >= PHONE_DIGITS {
        return Some(digits[digits.len() - PHONE_DIGITS..].to_string());
    }
    let unit = normalise(unit);
    (!unit.is_empty()).then_some(unit)
}

/// What the recipient typed, compared without spaces, dashes or case.
pub fn normalise(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .take(32)
        .collect()
}

/// Whether `given` is this recipient's factor. A recipient with neither a phone nor a unit has
/// no factor, and then anything (or nothing) is accepted.
pub fn matches(phone: Option<&str>, unit: &str, given: Option<&str>) -> bool {
    match expected(phone, unit) {
        None => true,
        Some(want) => given.is_some_and(|g| {
            let g = normalise(g);
            subtle::ConstantTimeEq::ct_eq(g.as_bytes(), want.as_bytes()).into()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_digits_or_unit() {
        assert_eq!(expected(Some("+1 555-010-2030"), "4B").as_deref(), Some("2030"));
        assert_eq!(expected(None, " 4-b ").as_deref(), Some("4B"));
        assert_eq!(expected(Some("12"), ""), None);
        assert_eq!(expected(None, ""), None);
        assert!(matches(Some("5550102030"), "4B", Some("2030")));
        assert!(!matches(Some("5550102030"), "4B", Some("4B")));
        assert!(!matches(Some("5550102030"), "4B", None));
        assert!(matches(None, "4b", Some("4B")));
        assert!(matches(None, "", None));
    }
}
