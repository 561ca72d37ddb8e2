//! Business metrics computed inside each silo (`[business]` in the policy): every candidate's
//! figures carry capture, lift, precision and recall per silo, the end-of-run comparison has
//! them for local-only and federated, only aggregates leave a silo, and the gate can refuse a
//! candidate on capture.

use crate::common::*;

const BUSINESS: &str = "[business]\ntop_percent = [10, 30]\nthreshold = 0.5\n";

/// The keys a silo's business figures may have: aggregates, nothing per row.
const AGGREGATES: [&str; 6] = [
    "top",
    "threshold",
    "precision",
    "recall",
    "base_rate",
    "value_per_1000",
];

fn check_aggregates(b: &serde_json::Value) {
    let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    assert!(keys.iter().all(|k| AGGREGATES.contains(k)), "{keys:?}");
    let top = b["top"].as_array().unwrap();
    assert_eq!(top.len(), 2, "{b}");
    for t in top {
        let (capture, lift) = (t["capture"].as_f64().unwrap(), t["lift"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&capture) && lift >= 0.0, "{t}");
        assert_eq!(t.as_object().unwrap().len(), 3, "{t}");
    }
    assert!(
        top[1]["capture"].as_f64() >= top[0]["capture"].as_f64(),
        "{b}"
    );
}

#[test]
fn every_silo_reports_business_aggregates_for_candidates_and_the_comparison() {
    let mut f = Federation::start(Options {
        rounds: 3,
        compare_local: true,
        policy_extra: BUSINESS.into(),
        ..Options::default()
    });
    let rounds = f.finished_ok();
    assert_eq!(rounds.len(), 3);
    for r in &rounds {
        for (silo, m) in r["eval"].as_object().unwrap() {
            let b = &m["business"];
            assert!(b.is_object(), "{silo}: {m}");
            check_aggregates(b);
        }
    }
    let c = f
        .seen()
        .iter()
        .find(|e| e["event"] == "comparison")
        .cloned()
        .unwrap();
    for row in c["rows"].as_array().unwrap() {
        check_aggregates(&row["local"]["business"]);
        check_aggregates(&row["federated"]["business"]);
    }
    // The run report shows the capture table (written as the coordinator exits).
    assert!(f.exit_status().success());
    let report = std::fs::read_to_string(f.state_dir().join("report.html")).unwrap();
    assert!(
        report.contains("positives in its top 10 % of held-out scores"),
        "no capture table in the report"
    );
}

#[test]
fn the_gate_refuses_a_candidate_that_loses_capture_at_a_silo() {
    let mut f = Federation::start(Options {
        rounds: 6,
        policy_extra: format!("{BUSINESS}max_capture_drop = 0.0\n"),
        ..Options::default()
    });
    let e = f.expect("a candidate refused on capture", |e| {
        e["event"] == "round_rejected"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("capture at the top 10 %"))
    });
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("business.max_capture_drop = 0"),
        "{e}"
    );
    f.finished_ok();
}
