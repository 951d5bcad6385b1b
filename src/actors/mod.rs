//! The actor system: a supervised hub, one actor per locker bank, one per device session.
//!
//! The modules here depend on each other without cycles (`no_import_cycles` below checks it):
//! every message is in `messages`, shared helpers in `retry`, and what the hub hands each
//! locker actor is [`LockerDeps`], here, so no actor needs the hub's module to be built.

use std::sync::Arc;

use crate::config::Settings;
use crate::credentials::ServerKey;
use crate::db::Db;
use crate::ratelimit::HourlyLimit;

pub mod carrier;
pub mod hub;
pub mod locker;
pub mod messages;
pub mod notifier;
pub mod operator;
pub mod outbox_slots;
pub mod retry;
pub mod session;
pub mod timeouts;

/// Shared by every locker actor.
#[derive(Clone)]
pub struct LockerDeps {
    pub db: Db,
    pub key: ServerKey,
    pub settings: Arc<Settings>,
    /// The application's clock (tests move it forward).
    pub clock: crate::clock::Clock,
    /// Kiosk directory and phone lookups, per locker (wrong codes are counted in the database).
    pub directory_lookups: Arc<HourlyLimit>,
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// The sibling modules a file's code names (`super::x`, `crate::actors::x`, including
    /// grouped `use super::{x, y}`), among `modules`. Comment lines are skipped. `nested` is
    /// for files under `locker/`, whose `super::` is the locker module itself.
    fn references(text: &str, nested: bool, modules: &BTreeSet<String>) -> BTreeSet<String> {
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join(" ");
        let prefixes: &[&str] = if nested {
            &["super::super::", "crate::actors::"]
        } else {
            &["super::", "crate::actors::"]
        };
        let mut found = BTreeSet::new();
        for prefix in prefixes {
            for (at, _) in code.match_indices(prefix) {
                let rest = &code[at + prefix.len()..];
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group.split('}').next().unwrap_or("").split(',').collect(),
                    None => vec![rest],
                };
                for n in names {
                    let ident: String = n
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if modules.contains(&ident) {
                        found.insert(ident);
                    }
                }
            }
        }
        found
    }

    /// A cycle in `graph`, as the path that closes it, if there is one.
    fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            n: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = path.iter().position(|p| p == n) {
                let mut cycle = path[i..].to_vec();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            if done.contains(n) {
                return None;
            }
            path.push(n.to_string());
            for next in graph.get(n).into_iter().flatten() {
                if let Some(c) = visit(next, graph, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            done.insert(n.to_string());
            None
        }
        let mut done = BTreeSet::new();
        graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
    }

    /// Every module of `src/actors` (a directory counts as its module) and the siblings it names.
    fn actor_module_graph() -> BTreeMap<String, BTreeSet<String>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/actors");
        let mut files: Vec<(String, bool, String)> = Vec::new();
        for entry in std::fs::read_dir(&root).expect("src/actors is readable") {
            let path = entry.expect("directory entry").path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if path.is_dir() {
                for inner in std::fs::read_dir(&path).expect("module directory is readable") {
                    let inner = inner.expect("directory entry").path();
                    if inner.extension().is_some_and(|e| e == "rs") {
                        files.push((stem.clone(), true, std::fs::read_to_string(inner).expect("readable")));
                    }
                }
            } else if path.extension().is_some_and(|e| e == "rs") && stem != "mod" {
                files.push((stem, false, std::fs::read_to_string(path).expect("readable")));
            }
        }
        let modules: BTreeSet<String> = files.iter().map(|(m, _, _)| m.clone()).collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (module, nested, text) in &files {
            let refs = references(text, *nested, &modules);
            let entry = graph.entry(module.clone()).or_default();
            entry.extend(refs.into_iter().filter(|r| r != module));
        }
        graph
    }

    #[test]
    fn no_import_cycles_among_actor_modules() {
        let graph = actor_module_graph();
        // The checker sees the files it should: an empty graph would pass vacuously.
        for m in [
            "hub", "locker", "messages", "timeouts", "carrier", "notifier", "session",
        ] {
            assert!(graph.contains_key(m), "module {m} not found in {graph:?}");
        }
        assert!(
            graph["hub"].contains("locker"),
            "the hub starts locker actors: {graph:?}"
        );
        if let Some(cycle) = find_cycle(&graph) {
            panic!("import cycle among src/actors: {}", cycle.join(" -> "));
        }
    }

    #[test]
    fn the_cycle_check_finds_a_cycle() {
        let modules: BTreeSet<String> = ["hub", "locker", "messages"].map(String::from).into();
        let hub = "use super::locker::LockerActor;\nuse super::{messages::Kick, retry};";
        let locker = "// use super::hub::Hub; (a comment is not a dependency)\nuse super::messages::*;";
        let locker_admin = "use super::LockerActor;\nfn f() -> crate::actors::hub::Hub { todo!() }";
        let messages = "use crate::protocol::Frame;";
        let mut graph = BTreeMap::new();
        graph.insert("hub".to_string(), references(hub, false, &modules));
        let mut l = references(locker, false, &modules);
        l.extend(references(locker_admin, true, &modules));
        graph.insert("locker".to_string(), l);
        graph.insert("messages".to_string(), references(messages, false, &modules));
        assert_eq!(graph["hub"], ["locker", "messages"].map(String::from).into());
        let cycle = find_cycle(&graph).expect("hub -> locker -> hub is a cycle");
        assert!(
            cycle.contains(&"hub".to_string()) && cycle.contains(&"locker".to_string()),
            "{cycle:?}"
        );
        graph.insert("locker".to_string(), ["messages".to_string()].into());
        assert_eq!(find_cycle(&graph), None);
    }
}
