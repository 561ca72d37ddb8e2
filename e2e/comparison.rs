//! The end-of-run comparison as a consortium reads it: local-only, federated and the pooled
//! reference per silo, and the report that shows them.

use crate::common::*;
use testkit::sandbox::{comparison_auc, FederationFile};

#[test]
fn a_short_run_shows_the_pooled_reference_and_beats_training_alone_on_average() {
    let mut f = Federation::start(Options {
        rounds: 6,
        compare_local: true,
        pooled_reference: true,
        ..Options::default()
    });
    let configured = f.expect("configured", |e| e["event"] == "configured");
    assert!(
        configured["aggregation"]
            .as_str()
            .unwrap()
            .contains("momentum"),
        "the default plan has server momentum: {configured}"
    );
    let c = f.expect("comparison", |e| e["event"] == "comparison");
    let rows = c["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 3, "{c}");
    for r in &rows {
        // Each silo scored the pooled model on its own held-out rows.
        let pooled = &r["pooled"];
        assert_eq!(pooled["examples"], r["examples"], "{r}");
        assert!(pooled["auc"].as_f64().is_some_and(|a| a > 0.5), "{r}");
        assert!(r["note"].is_null(), "{r}");
        for column in ["local", "federated"] {
            assert!(r[column]["auc"].as_f64().is_some(), "{column}: {r}");
        }
    }
    let local = comparison_auc(&rows, "local");
    let federated = comparison_auc(&rows, "federated");
    assert!(
        federated > local,
        "federated {federated:.4} should beat local-only {local:.4} on average"
    );
    f.finished_ok();
    // The report (written as the coordinator exits) carries the column and says what it is.
    assert!(f.exit_status().success());
    let report = std::fs::read_to_string(f.state_dir().join("report.html")).unwrap();
    assert!(
        report.contains("pooled reference") && report.contains("non-private"),
        "no pooled column in the report"
    );
}

#[test]
fn a_pooled_reference_of_another_model_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // A model of another architecture: fedsilo-pretrain with hidden = [4] instead of [16].
    let pooled = dir.path().join("pooled.safetensors");
    let (data, schema) = (
        example_in("churn", "data/west.csv"),
        example_in("churn", "schema.toml"),
    );
    let (made, out) = fedsilo_pretrain(&[
        "--data",
        arg(&data),
        "--schema",
        arg(&schema),
        "--hidden",
        "4",
        "--epochs",
        "1",
        "--out",
        arg(&pooled),
    ]);
    assert!(made, "{out}");
    let fed = FederationFile {
        compare_local: true,
        extra: String::new(),
        ..FederationFile::new(&example_in("churn", "schema.toml"))
    }
    .render()
    .replace(
        "compare_local = true",
        &format!(
            "compare_local = true\npooled_reference = {:?}",
            arg(&pooled)
        ),
    );
    let path = dir.path().join("federation.toml");
    std::fs::write(&path, fed).unwrap();
    std::fs::write(dir.path().join("policy.toml"), "").unwrap();
    let (ok, out) = fedsilo(&["coordinator", "--config", arg(&path)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("federation.pooled_reference") && out.contains("is not a `mlp"),
        "{out}"
    );
}
