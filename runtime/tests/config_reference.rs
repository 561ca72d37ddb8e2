//! docs/configuration.md documents every key each configuration file accepts, and nothing
//! else. The keys the code accepts are read off the loaders themselves: an unknown key in a
//! table makes serde list the table's fields, so probing each table in turn walks the whole
//! tree the code would accept. The reference's tables are compared with that tree both ways.

use std::collections::BTreeSet;
use std::path::Path;

const PROBE: &str = "__probe";

/// The error a loader gives for `text` (empty if it loads).
type Loader = dyn Fn(&str) -> String;

fn federation(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("federation.toml");
    std::fs::write(&path, text).unwrap();
    match fedsilo::federation::FederationConfig::load(&path) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

fn policy(text: &str) -> String {
    match fedsilo_policies::Policy::from_toml_str(text, "probe") {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

fn schema(text: &str) -> String {
    match fedsilo::data::Schema::from_toml_str(text, "probe") {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

/// The fields serde listed for an unknown key in `text`, if it did.
fn listed(load: &Loader, text: &str) -> Option<Vec<String>> {
    let e = load(text);
    let rest = &e[e.find(&format!("unknown field `{PROBE}`"))?..];
    let line = rest.lines().next().unwrap_or_default();
    let after = line.split_once(',').map_or("", |(_, r)| r);
    Some(
        after
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every key under `prefix` (a table, or with `array` an array of tables), as dotted paths.
fn walk(load: &Loader, prefix: &str, header: &str, out: &mut BTreeSet<String>) {
    let Some(fields) = listed(load, &format!("{header}{PROBE} = 1\n")) else {
        return;
    };
    for f in fields {
        let path = if prefix.is_empty() {
            f.clone()
        } else {
            format!("{prefix}.{f}")
        };
        let table = format!("[{path}]\n");
        let array = format!("[[{path}]]\n");
        if listed(load, &format!("{table}{PROBE} = 1\n")).is_some() {
            walk(load, &path, &table, out);
        } else if prefix.is_empty() && listed(load, &format!("{array}{PROBE} = 1\n")).is_some() {
            walk(load, &path, &array, out);
        } else {
            out.insert(path);
        }
    }
}

/// The keys documented for `file`: the first cells of the tables under its `## `file``
/// heading.
fn documented(reference: &str, file: &str) -> BTreeSet<String> {
    let heading = format!("## `{file}`");
    let start = reference
        .find(&heading)
        .unwrap_or_else(|| panic!("docs/configuration.md has no {heading} section"));
    let section = &reference[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(key, _)| key.to_string())
        .collect()
}

#[test]
fn the_configuration_reference_lists_exactly_the_keys_the_loaders_accept() {
    let reference = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .unwrap();
    let files: [(&str, &Loader); 3] = [
        ("federation.toml", &federation),
        ("policy.toml", &policy),
        ("schema.toml", &schema),
    ];
    let mut problems = Vec::new();
    for (file, load) in files {
        let mut code = BTreeSet::new();
        walk(load, "", "", &mut code);
        assert!(code.len() > 3, "{file}: probing found only {code:?}");
        let docs = documented(&reference, file);
        for k in code.difference(&docs) {
            problems.push(format!("{file}: `{k}` is accepted but not documented"));
        }
        for k in docs.difference(&code) {
            problems.push(format!("{file}: `{k}` is documented but not accepted"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Prints the keys the loaders accept (`cargo test --test config_reference -- --ignored
/// --nocapture`), to start a reference table from.
#[test]
#[ignore]
fn print_the_keys() {
    let files: [(&str, &Loader); 3] = [
        ("federation.toml", &federation),
        ("policy.toml", &policy),
        ("schema.toml", &schema),
    ];
    for (file, load) in files {
        let mut code = BTreeSet::new();
        walk(load, "", "", &mut code);
        println!("## {file}");
        for k in code {
            println!("{k}");
        }
    }
}
