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

/// The customer-review example's retailers (issue 17): `examples/reviews/split.py` shares the
/// 5,000 reviews among four retailers by a seeded, label-skewed Dirichlet rule. Run twice, it
/// writes the same files; every review lands in exactly one retailer, in the source's own
/// train/held-out half; and the retailers really differ in their labels.
#[test]
fn the_review_retailers_are_a_seeded_label_skewed_split_of_every_review() {
    let script = crate::common::example_in("reviews", "split.py");
    let split = |dir: &std::path::Path| {
        let out = Command::new("python3")
            .arg(&script)
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    split(a.path());
    split(b.path());
    let mut rows = 0;
    let mut great_share = Vec::new();
    for retailer in ["retailer-a", "retailer-b", "retailer-c", "retailer-d"] {
        let (mut n, mut great) = (0usize, 0usize);
        for part in ["train.csv", "holdout.csv"] {
            let p = a.path().join(retailer).join(part);
            let text = std::fs::read_to_string(&p).unwrap();
            assert_eq!(
                text,
                std::fs::read_to_string(b.path().join(retailer).join(part)).unwrap()
            );
            let mut r = csv_rows(&text);
            assert_eq!(r.remove(0), vec!["review".to_string(), "label".into()]);
            for row in &r {
                assert!(row[1] == "great" || row[1] == "other", "{row:?}");
                assert!(!row[0].contains("<br"), "{}", row[0]);
            }
            n += r.len();
            great += r.iter().filter(|row| row[1] == "great").count();
        }
        assert!(n >= 300, "{retailer}: {n} reviews");
        rows += n;
        great_share.push(great as f64 / n as f64);
    }
    assert_eq!(rows, 5000);
    let spread = great_share.iter().cloned().fold(0.0, f64::max)
        - great_share.iter().cloned().fold(1.0, f64::min);
    assert!(spread > 0.5, "label shares {great_share:?}");
}

/// The rows of a CSV text (quoted fields with commas and doubled quotes).
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}
