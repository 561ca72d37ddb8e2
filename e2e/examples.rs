//! The three example federations, shortened: each runs its own checks (residency, privacy
//! budgets, approvals through the API, the drift monitor and the custom kernel) and exits
//! non-zero when one fails; here each must pass.

use std::path::PathBuf;
use std::process::Command;

/// `target/release/examples/NAME`, built by `cargo test` beside the test binaries.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let path = dir.join("examples").join(name);
    assert!(path.exists(), "{} not built", path.display());
    path
}

fn run(name: &str, rounds: u64) {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(example(name))
        .env("ROUNDS", rounds.to_string())
        .env("WORK_DIR", work.path())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} failed:\n{said}");
    assert!(said.contains("every check passed"), "{said}");
    // The run report shows the committed rounds (approved ones included).
    let page = std::fs::read_to_string(work.path().join("state/report.html")).unwrap();
    let committed: u64 = page
        .split("<td>committed rounds</td><td>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        committed >= 1,
        "{name}: the report shows no committed round"
    );
}

#[test]
fn cross_bank_keeps_updates_in_their_region_and_banks_within_their_budgets() {
    run("cross_bank", 4);
}

#[test]
fn business_units_decide_every_candidate_through_the_admin_api() {
    run("business_units", 3);
}

#[test]
fn custom_topology_pauses_on_drift_and_its_kernel_holds() {
    run("custom_topology", 5);
}
