//! The shape of the code, checked: the decision core has no I/O dependency (the compiler
//! keeps it pure only if nothing brings one in), and the daemon crate's top-level
//! modules (each module of `src/kube/` counting as one) import each other without a
//! cycle. A new cycle or a new I/O dependency of the
//! core fails here, naming it; so does a test file its suite.rs does not name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Crates that do I/O: none may be reachable from the core.
const IO_CRATES: [&str; 8] = [
    "kube",
    "kube-client",
    "k8s-openapi",
    "tokio",
    "reqwest",
    "hyper",
    "hyper-util",
    "mio",
];

/// `name -> dependency names` from Cargo.lock.
fn lock_graph() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Cargo.lock")).expect("Cargo.lock");
    let mut graph = BTreeMap::new();
    for package in text.split("[[package]]").skip(1) {
        let mut name = None;
        let mut deps = Vec::new();
        let mut in_deps = false;
        for line in package.lines() {
            let line = line.trim();
            if let Some(n) = line.strip_prefix("name = ") {
                name = Some(n.trim_matches('"').to_string());
            } else if line.starts_with("dependencies = [") {
                in_deps = true;
            } else if in_deps && line == "]" {
                in_deps = false;
            } else if in_deps {
                // `"name"`, or `"name version"` when several versions are locked.
                let dep = line.trim_matches(|c| c == '"' || c == ',');
                deps.push(dep.split(' ').next().unwrap_or(dep).to_string());
            }
        }
        if let Some(name) = name {
            graph.entry(name).or_insert_with(Vec::new).extend(deps);
        }
    }
    graph
}

#[test]
fn the_core_crate_reaches_no_io_crate() {
    let graph = lock_graph();
    assert!(
        graph.contains_key("kube-failover-core"),
        "core crate locked"
    );
    let mut seen = BTreeSet::new();
    let mut path: BTreeMap<String, String> = BTreeMap::new();
    let mut todo = vec!["kube-failover-core".to_string()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        for dep in graph.get(&name).into_iter().flatten() {
            path.entry(dep.clone()).or_insert_with(|| name.clone());
            todo.push(dep.clone());
        }
    }
    for io in IO_CRATES {
        if seen.contains(io) {
            let mut chain = vec![io.to_string()];
            while let Some(parent) = path.get(chain.last().unwrap()) {
                chain.push(parent.clone());
                if parent == "kube-failover-core" {
                    break;
                }
            }
            chain.reverse();
            panic!("the core crate reaches {io}: {}", chain.join(" -> "));
        }
    }
    // A control: the daemon crate does reach them, so the walk above can find one.
    assert!(graph["kube-failover"].iter().any(|d| d == "kube"));
}

/// Folders of `src/` that only gather modules: each module in one is a node of its own
/// (`kube::call`, `kube::client`, ...), as a top-level module is. `src/kube/` holds
/// what talks to API servers, which is no single layer: the config reads
/// `kube::kubeconfig` to validate itself while `kube::client` reads the config.
const GROUPING_FOLDERS: [&str; 1] = ["kube"];

/// Source files of one module of `src/`: `src/x.rs` and everything in `src/x/`, keyed
/// `x`, or `g::x` for `src/g/x.rs` and `src/g/x/` when `g` is a grouping folder (whose
/// `mod.rs` only names its modules: nothing imports the folder itself, so it cannot be
/// on a cycle).
fn module_files(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut folders = vec![(src.to_path_buf(), String::new())];
    while let Some((folder, prefix)) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("src").flatten() {
            let path = entry.path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if prefix.is_empty() && matches!(stem.as_str(), "lib" | "main")
                || !prefix.is_empty() && stem == "mod"
            {
                continue;
            }
            let name = format!("{prefix}{stem}");
            if path.is_dir() && prefix.is_empty() && GROUPING_FOLDERS.contains(&stem.as_str()) {
                folders.push((path, format!("{stem}::")));
            } else if path.is_dir() {
                let mut stack = vec![path];
                while let Some(dir) = stack.pop() {
                    for e in std::fs::read_dir(&dir).expect("dir").flatten() {
                        let p = e.path();
                        if p.is_dir() {
                            stack.push(p);
                        } else if p.extension().is_some_and(|x| x == "rs") {
                            modules.entry(name.clone()).or_default().push(p);
                        }
                    }
                }
            } else if path.extension().is_some_and(|x| x == "rs") {
                modules.entry(name).or_default().push(path);
            }
        }
    }
    assert!(
        GROUPING_FOLDERS
            .iter()
            .all(|g| modules.keys().any(|m| m.starts_with(&format!("{g}::")))),
        "a grouping folder is missing: {:?}",
        modules.keys()
    );
    modules
}

/// Whether `code` names module `other` after `prefix` (`crate::`, or `super::` between
/// modules of one grouping folder).
fn names_module(code: &str, prefix: &str, other: &str) -> bool {
    code.contains(&format!("{prefix}{other}::"))
        || code.contains(&format!("{prefix}{other};"))
        || code.contains(&format!("{prefix}{other}}}"))
        || code.contains(&format!("{prefix}{other},"))
        || code.contains(&format!("{prefix}{{{other}"))
}

/// The code of a file without its unit tests (`#[cfg(test)] mod tests` runs to the end
/// of the file in this code base); tests may reach anywhere.
fn non_test_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let modules = module_files(&Path::new(ROOT).join("src"));
    assert!(
        !modules.contains_key("engine"),
        "the engine lives in the core crate"
    );
    let names: Vec<String> = modules.keys().cloned().collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, files) in &modules {
        let deps = edges.entry(module.clone()).or_default();
        for file in files {
            let code = non_test_code(file);
            // A file directly in a grouping folder names its siblings `super::x` too.
            let folder = file
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|d| d.to_str());
            let sibling = |other: &str| {
                let (group, name) = other.split_once("::")?;
                (folder == Some(group) && module.starts_with(&format!("{group}::")))
                    .then_some(name.to_string())
            };
            for other in &names {
                if other != module
                    && (names_module(&code, "crate::", other)
                        || sibling(other).is_some_and(|n| names_module(&code, "super::", &n)))
                {
                    deps.insert(other.clone());
                }
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Some(cycle) = visit(m, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle between modules: {}", cycle.join(" -> "));
        }
    }
    // A control: the edges the search walks are real (the probes use the call plumbing).
    assert!(edges["probe"].contains("kube::call"), "{edges:?}");
}

/// Integration tests are one binary per package (`autotests = false`): a test file that
/// its `suite.rs` does not name would never be compiled or run, silently.
#[test]
fn every_test_file_is_a_module_of_its_suite() {
    for dir in ["tests", "testbed/tests"] {
        let dir = Path::new(ROOT).join(dir);
        let suite = std::fs::read_to_string(dir.join("suite.rs")).expect("suite.rs");
        let mut unlisted = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("tests folder") {
            let path = entry.expect("entry").path();
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_some_and(|e| e == "rs")
                && name != "suite"
                && !suite.lines().any(|l| l.trim() == format!("mod {name};"))
            {
                unlisted.push(path.display().to_string());
            }
        }
        assert!(
            unlisted.is_empty(),
            "not in {}/suite.rs, so never run: {unlisted:?}",
            dir.display()
        );
    }
}
