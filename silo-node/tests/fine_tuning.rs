//! End-to-end tests of the fine-tuning features on the churn federation (real processes):
//! FedProx's proximal term reaches the silos and holds their local models near the global one.

mod common;

use common::{Federation, Options};
use serde_json::Value;

/// The committed rounds of the default churn federation with `plan` lines appended to the
/// federation file's `[plan]` table.
fn run(plan: &'static str) -> Vec<Value> {
    let mut f = Federation::start(Options {
        extra: plan,
        ..Default::default()
    });
    let fin = f.expect("finished", |e| e["event"] == "finished");
    assert!(fin["error"].is_null(), "{fin}");
    assert!(f.exit_status().success());
    f.committed().into_iter().cloned().collect()
}

fn mean_norm(round: &Value) -> f64 {
    let norms = round["update_norms"].as_object().unwrap();
    norms.values().map(|v| v.as_f64().unwrap()).sum::<f64>() / norms.len() as f64
}

#[test]
fn fedprox_keeps_local_updates_closer_to_the_global_model() {
    let plain = run("");
    let prox = run("prox_mu = 1.0\n");
    assert_eq!((plain.len(), prox.len()), (3, 3));
    let (a, b) = (mean_norm(&plain[0]), mean_norm(&prox[0]));
    println!("round 1 mean update norm: plain SGD {a:.4}, FedProx mu = 1 {b:.4}");
    assert!(b < 0.9 * a, "FedProx {b} should be well below plain {a}");
    // A bad μ is refused before anything starts.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("federation.toml");
    let text = silo_node::sandbox::FederationFile {
        extra: "prox_mu = -1\n".into(),
        ..silo_node::sandbox::FederationFile::new(&common::example("schema.toml"))
    }
    .render();
    std::fs::write(&cfg, text).unwrap();
    let (ok, out) = common::fedsilo(&["coordinator", "--config", common::arg(&cfg)]);
    assert!(!ok && out.contains("plan.prox_mu"), "{out}");
}
