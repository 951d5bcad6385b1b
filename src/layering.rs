//! The layers' import rules, checked on the source itself so a new `use` that breaks them
//! fails the build's tests instead of waiting for a review:
//! `domain/` → nothing above it; `db/` → domain; `workflows/` → db and domain;
//! none of them (nor `error`, `clock`) imports `config`, `protocol`, `http` or `actors`;
//! `config` imports nothing from `db/`.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("source directory").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// Every `crate::<module>` path the file names outside comments.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let module: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            found.push((n + 1, module));
            rest = after;
        }
    }
    found
}

fn violations(files: &[PathBuf], forbidden: &[&str]) -> Vec<String> {
    let mut bad = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).expect("readable source");
        for (line, module) in crate_paths(&text) {
            if forbidden.contains(&module.as_str()) {
                bad.push(format!("{}:{line} uses crate::{module}", f.display()));
            }
        }
    }
    bad
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn nothing_below_the_actors_imports_the_edges() {
    let mut files = Vec::new();
    for d in ["domain", "db", "workflows"] {
        files.extend(sources(&src().join(d)));
    }
    files.push(src().join("error.rs"));
    files.push(src().join("clock.rs"));
    assert!(files.len() > 20, "found the sources: {files:?}");
    let bad = violations(&files, &["config", "protocol", "http", "actors", "startup"]);
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

#[test]
fn rows_and_rules_do_not_reach_up_into_workflows() {
    let mut files = sources(&src().join("db"));
    files.extend(sources(&src().join("domain")));
    let bad = violations(&files, &["workflows", "notify"]);
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

#[test]
fn the_domain_needs_no_database() {
    let bad = violations(&sources(&src().join("domain")), &["db"]);
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
    let text: String = sources(&src().join("domain"))
        .iter()
        .flat_map(|f| {
            let t = std::fs::read_to_string(f).unwrap();
            t.lines()
                .map(|l| l.split("//").next().unwrap_or("").to_string() + "\n")
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        !text.contains("diesel::") && !text.contains("actix"),
        "domain/ uses diesel or actix"
    );
}

#[test]
fn config_knows_nothing_of_the_database() {
    let bad = violations(&[src().join("config.rs")], &["db", "workflows"]);
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_a_violation() {
    let found = crate_paths("use crate::protocol::ErrorCode; // crate::http in a comment\nlet x = crate::db::now();");
    assert_eq!(found, vec![(1, "protocol".to_string()), (2, "db".to_string())]);
}

#[test]
fn outbox_and_deadline_rows_are_written_only_from_domain_effects() {
    let mut bad = Vec::new();
    for f in sources(&src().join("workflows")) {
        if f.ends_with("effects.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for call in [
                "enqueue_webhook",
                "enqueue_notification",
                "schedule_deadlines",
                "cancel_deadlines",
            ] {
                if code.contains(call) {
                    bad.push(format!("{}:{} calls {call}", f.display(), n + 1));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "decide them in domain (Effects), persist with workflows::effects::persist:\n{}",
        bad.join("\n")
    );
}
