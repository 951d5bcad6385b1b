//! What the kiosk may show about residents (docs/security.md §6.1).

/// A name reduced to initials, `"Ann Marie Lee"` → `"A. M. L."`: enough for a driver holding the
/// label to recognise the resident among a few matches, too little to learn who lives where.
pub fn masked_name(name: &str) -> String {
    name.split_whitespace()
        .filter_map(|w| w.chars().find(|c| c.is_alphanumeric()))
        .take(4)
        .map(|c| format!("{}.", c.to_uppercase()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_only() {
        assert_eq!(masked_name("Ann Lee"), "A. L.");
        assert_eq!(masked_name("  ann-marie  o'neil "), "A. O.");
        assert_eq!(masked_name(""), "");
        assert_eq!(masked_name("Élodie"), "É.");
    }
}
