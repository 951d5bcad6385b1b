//! Parse-don't-validate newtypes for what arrives at the edges. Holding one means it is valid.

use std::fmt;

/// A trimmed, non-empty, bounded free-text field (names, addresses, units).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

impl Text {
    pub fn parse(field: &str, raw: &str, max: usize) -> Result<Self, String> {
        let t = raw.trim();
        if t.is_empty() {
            return Err(format!("{field} must not be empty"));
        }
        // As sent, surrounding spaces included: the document's `maxLength` is of the raw value.
        if raw.chars().count() > max {
            return Err(format!("{field} must be at most {max} characters"));
        }
        if t.chars().any(|c| c.is_control()) {
            return Err(format!("{field} must not contain control characters"));
        }
        Ok(Self(t.to_string()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A phone number normalised to `+` and digits, so the same number typed two ways matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let plus = raw.starts_with('+');
        let mut digits = String::new();
        for c in raw.trim_start_matches('+').chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '(' | ')' | '.' => {}
                _ => return Err(format!("phone {raw:?} has an invalid character {c:?}")),
            }
        }
        if !(7..=15).contains(&digits.len()) {
            return Err(format!("phone {raw:?} must have 7 to 15 digits"));
        }
        Ok(Self(if plus { format!("+{digits}") } else { digits }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address: one `@`, a dotted domain, no spaces. Deliverability is the mail server's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let e = raw.trim();
        let valid = e.len() <= 254
            && e.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
            })
            && !e.chars().any(|c| c.is_whitespace() || c.is_control());
        if valid {
            Ok(Self(e.to_ascii_lowercase()))
        } else {
            Err(format!("email {e:?} is not a valid address"))
        }
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An IANA time zone name, checked against the tz database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl TimeZone {
    pub fn parse(raw: &str) -> Result<Self, String> {
        raw.trim()
            .parse::<chrono_tz::Tz>()
            .map(Self)
            .map_err(|_| format!("time_zone {raw:?} is not an IANA time zone such as Europe/Berlin"))
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// A carrier tracking number: 4–64 letters, digits or dashes, upper-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingNumber(String);

impl TrackingNumber {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let t = raw.trim();
        if !(4..=64).contains(&t.len()) || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!(
                "tracking number {t:?} must be 4 to 64 letters, digits or dashes"
            ));
        }
        Ok(Self(t.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A carrier's short code ("ups", "fedex"): lowercase letters, digits, dashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierCode(String);

impl CarrierCode {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let c = raw.trim().to_ascii_lowercase();
        if !(2..=32).contains(&c.len()) || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-') {
            return Err(format!(
                "carrier code {raw:?} must be 2 to 32 letters, digits or dashes"
            ));
        }
        Ok(Self(c))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A notification channel a recipient can prefer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Push,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Push => "push",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "email" => Some(Self::Email),
            "sms" => Some(Self::Sms),
            "push" => Some(Self::Push),
            _ => None,
        }
    }

    /// Stored as an ordered comma list: first is most preferred.
    pub fn join(list: &[Channel]) -> String {
        list.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",")
    }

    pub fn split(stored: &str) -> Vec<Channel> {
        stored.split(',').filter_map(Channel::parse).collect()
    }
}

/// An http(s) URL for webhooks and gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(String);

impl HttpUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let u = url::Url::parse(raw.trim()).map_err(|e| format!("url {raw:?} is invalid: {e}"))?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err(format!("url {raw:?} must be an http or https URL"));
        }
        Ok(Self(u.to_string()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalise() {
        assert_eq!(Phone::parse("+1 (555) 010-2030").unwrap().as_str(), "+15550102030");
        assert_eq!(Phone::parse("555.010.2030").unwrap().as_str(), "5550102030");
        assert!(Phone::parse("12345").is_err());
        assert!(Phone::parse("+1 555 CALL NOW").is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" Ann@Example.ORG ").unwrap().into_inner(),
            "ann@example.org"
        );
        for bad in ["ann", "ann@", "@x.org", "ann@localhost", "a b@x.org", "ann@x.org."] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_and_zones_and_tracking() {
        assert!(Text::parse("name", "   ", 10).is_err());
        assert!(Text::parse("name", "x".repeat(11).as_str(), 10).is_err());
        assert_eq!(Text::parse("name", " Elm ", 10).unwrap().into_inner(), "Elm");
        // The limit is of the value as sent (the OpenAPI `maxLength`), spaces included.
        assert!(Text::parse("name", &format!("  {}", "x".repeat(9)), 10).is_err());
        assert!(TimeZone::parse("Europe/Berlin").is_ok());
        assert!(TimeZone::parse("Mars/Olympus").is_err());
        assert_eq!(TrackingNumber::parse("1z999aa1").unwrap().as_str(), "1Z999AA1");
        assert!(TrackingNumber::parse("1Z 999").is_err());
        assert_eq!(Channel::split("sms,bogus,email"), vec![Channel::Sms, Channel::Email]);
        assert!(HttpUrl::parse("ftp://x.org").is_err());
    }
}
