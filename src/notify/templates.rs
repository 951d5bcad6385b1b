//! Message templates: `{{name}}` placeholders in plain files. A property overrides them by
//! putting `<templates_dir>/<site id>/<kind>.<part>.txt` (or, for every site,
//! `<templates_dir>/<kind>.<part>.txt`); otherwise the built-in files in templates/ are used.

use std::collections::HashMap;
use std::path::PathBuf;

/// Built-in templates, compiled in.
fn builtin(kind: &str, part: &str) -> Option<&'static str> {
    Some(match (kind, part) {
        ("deposited", "subject") => include_str!("../../templates/deposited.subject.txt"),
        ("deposited", "text") => include_str!("../../templates/deposited.text.txt"),
        ("deposited", "html") => include_str!("../../templates/deposited.html.txt"),
        ("deposited", "sms") => include_str!("../../templates/deposited.sms.txt"),
        ("reminder", "subject") => include_str!("../../templates/reminder.subject.txt"),
        ("reminder", "text") => include_str!("../../templates/reminder.text.txt"),
        ("reminder", "html") => include_str!("../../templates/reminder.html.txt"),
        ("reminder", "sms") => include_str!("../../templates/reminder.sms.txt"),
        ("expiring_soon", "subject") => include_str!("../../templates/expiring_soon.subject.txt"),
        ("expiring_soon", "text") => include_str!("../../templates/expiring_soon.text.txt"),
        ("expiring_soon", "html") => include_str!("../../templates/expiring_soon.html.txt"),
        ("expiring_soon", "sms") => include_str!("../../templates/expiring_soon.sms.txt"),
        ("returned", "subject") => include_str!("../../templates/returned.subject.txt"),
        ("returned", "text") => include_str!("../../templates/returned.text.txt"),
        ("returned", "html") => include_str!("../../templates/returned.html.txt"),
        ("returned", "sms") => include_str!("../../templates/returned.sms.txt"),
        ("removed", "subject") => include_str!("../../templates/removed.subject.txt"),
        ("removed", "text") => include_str!("../../templates/removed.text.txt"),
        ("removed", "html") => include_str!("../../templates/removed.html.txt"),
        ("removed", "sms") => include_str!("../../templates/removed.sms.txt"),
        _ => return None,
    })
}

#[derive(Debug, Clone, Default)]
pub struct Templates {
    dir: Option<PathBuf>,
}

fn safe_segment(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Templates {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    fn source(&self, site_id: &str, kind: &str, part: &str) -> Result<String, String> {
        if let Some(dir) = &self.dir {
            let file = format!("{kind}.{part}.txt");
            let mut candidates = Vec::new();
            if safe_segment(site_id) {
                candidates.push(dir.join(site_id).join(&file));
            }
            candidates.push(dir.join(&file));
            for path in candidates {
                match std::fs::read_to_string(&path) {
                    Ok(s) => return Ok(s),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("cannot read template {}: {e}", path.display())),
                }
            }
        }
        builtin(kind, part)
            .map(str::to_string)
            .ok_or_else(|| format!("no template for {kind}.{part}"))
    }

    /// Renders one part; values are HTML-escaped in `html` parts.
    pub fn render(
        &self,
        site_id: &str,
        kind: &str,
        part: &str,
        vars: &HashMap<&str, String>,
    ) -> Result<String, String> {
        let src = self.source(site_id, kind, part)?;
        Ok(fill(&src, vars, part == "html"))
    }
}

/// Replaces `{{name}}` with its value; unknown names are left visible so mistakes show.
pub fn fill(src: &str, vars: &HashMap<&str, String>, html: bool) -> String {
    let mut out = String::with_capacity(src.len() + 64);
    let mut rest = src;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                match vars.get(name) {
                    Some(v) if html => out.push_str(&escape_html(v)),
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.trim_end().to_string()
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_escapes() {
        let vars = HashMap::from([("name", "<Ann & Bob>".to_string())]);
        assert_eq!(fill("Hi {{ name }}!", &vars, false), "Hi <Ann & Bob>!");
        assert_eq!(fill("Hi {{name}}!", &vars, true), "Hi &lt;Ann &amp; Bob&gt;!");
        assert_eq!(fill("{{missing}} {{name", &vars, false), "{{missing}} {{name");
    }

    #[test]
    fn every_kind_has_every_part() {
        for kind in ["deposited", "reminder", "expiring_soon", "returned", "removed"] {
            for part in ["subject", "text", "html", "sms"] {
                assert!(builtin(kind, part).is_some(), "{kind}.{part}");
            }
        }
    }

    #[test]
    fn site_override_wins_and_paths_are_safe() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deposited.sms.txt"), "global {{x}}").unwrap();
        std::fs::create_dir(dir.path().join("site-1")).unwrap();
        std::fs::write(dir.path().join("site-1").join("deposited.sms.txt"), "site {{x}}").unwrap();
        let t = Templates::new(Some(dir.path().to_path_buf()));
        let vars = HashMap::from([("x", "1".to_string())]);
        assert_eq!(t.render("site-1", "deposited", "sms", &vars).unwrap(), "site 1");
        assert_eq!(t.render("site-2", "deposited", "sms", &vars).unwrap(), "global 1");
        assert_eq!(t.render("../etc", "deposited", "sms", &vars).unwrap(), "global 1");
        assert!(t
            .render("site-1", "deposited", "text", &vars)
            .unwrap()
            .contains("pickup code"));
    }
}
