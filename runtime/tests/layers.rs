//! The modules of `runtime/src` form layers: no import loop between them (docs/design.md,
//! "Layers"), and the silo (`silo-node/src`) imports nothing of the coordinator. Read off the
//! sources' `crate::…` and `fedsilo::…` paths, outside test modules and comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of `path` without its `#[cfg(test)]` tail, unit-test files and comment lines.
fn code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules a text names as `prefix::module`.
fn named(text: &str, prefix: &str) -> BTreeSet<String> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn the_runtime_modules_have_no_import_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" || top == "cli" {
            continue;
        }
        let uses = named(&code(f), "crate::");
        let entry = graph.entry(top.clone()).or_default();
        entry.extend(
            uses.into_iter()
                .filter(|m| *m != top && m != "error" && m != "Error" && m != "Result"),
        );
    }
    // Depth-first search for a cycle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for n in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(n, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("import loop between runtime modules: {}", cycle.join(" → "));
        }
    }
    assert!(graph.len() > 20, "found only {:?}", graph.keys());
}

#[test]
fn the_silo_imports_nothing_of_the_coordinator() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../silo-node/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let forbidden = [
        "coordinator",
        "round",
        "launch",
        "admin",
        "audit",
        "registry",
        "store",
    ];
    for f in &files {
        let uses = named(&code(f), "fedsilo::");
        for m in forbidden {
            assert!(
                !uses.contains(m),
                "{} imports fedsilo::{m}: the silo never uses the coordinator's internals",
                f.display()
            );
        }
    }
}
