//! End-to-end tests of silo-level differential privacy: the budget stops a federation after
//! exactly the rounds it allows, with the refusal recorded; distributed noise is added at the
//! silos, and the held-out AUC with DP is reported beside the same federation without it.

use crate::common::{weighted_score, Federation, Options};
use fedsilo::model::checkpoint::Checkpoint;
use fedsilo::privacy::rdp::epsilon;
use serde_json::Value;

/// ε after `rounds` Gaussian rounds with multiplier `z` (q = 1: every silo in every round).
fn eps(z: f64, rounds: u64) -> f64 {
    epsilon(1.0, z, rounds, 1e-5).unwrap().0
}

fn privacy(mode: &str, z: f64, budget: Option<f64>) -> String {
    let mut t = format!("[privacy]\nmode = \"{mode}\"\nclip_norm = 0.3\nnoise_multiplier = {z}\n");
    if let Some(b) = budget {
        t.push_str(&format!("budget = {{ epsilon = {b}, delta = 1e-5 }}\n"));
    }
    t
}

#[test]
fn a_budget_for_three_rounds_stops_the_federation_after_three_with_the_refusal_recorded() {
    let z = 2.0;
    // Between the spend of 3 and of 4 rounds: exactly 3 fit.
    let budget = (eps(z, 3) + eps(z, 4)) / 2.0;
    let mut f = Federation::start(Options {
        rounds: 8,
        policy_extra: privacy("central", z, Some(budget)),
        ..Default::default()
    });
    let refused = f.expect("budget exhausted", |e| e["event"] == "budget_exhausted");
    assert_eq!(refused["round"], 4, "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("3 of 3 silos have spent their privacy budget"),
        "{refused}"
    );
    let fin = f.expect("finished", |e| e["event"] == "finished");
    assert!(fin["error"].is_null(), "{fin}");
    assert_eq!(fin["version"], 3);
    assert!(f.exit_status().success());
    // Each silo is told why it was left out, with the figures.
    let excluded: Vec<&Value> = f
        .seen()
        .iter()
        .filter(|e| e["event"] == "budget_excluded")
        .collect();
    assert_eq!(excluded.len(), 3);
    assert!(excluded[0]["reason"]
        .as_str()
        .unwrap()
        .contains("above its budget"));
    // Spend per round and cumulative, recorded with each version, as the accountant says.
    let committed = f.committed();
    assert_eq!(committed.len(), 3);
    for (k, c) in committed.iter().enumerate() {
        let p = &c["privacy"];
        assert_eq!(p["mode"], "central");
        assert!(
            (p["round_epsilon"].as_f64().unwrap() - eps(z, 1)).abs() < 1e-9,
            "{p}"
        );
        assert!(
            (p["epsilon"].as_f64().unwrap() - eps(z, k as u64 + 1)).abs() < 1e-9,
            "{p}"
        );
    }
    let ckpt = Checkpoint::load(&f.state_dir().join("models/v3.safetensors")).unwrap();
    let recorded: f64 = ckpt.metadata["fedsilo.privacy.epsilon"].parse().unwrap();
    assert!((recorded - eps(z, 3)).abs() < 1e-9);
    // The book on disk: three charges, then the refusal.
    let book = std::fs::read_to_string(f.state_dir().join("privacy.jsonl")).unwrap();
    let kinds: Vec<String> = book
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["kind"].to_string())
        .collect();
    assert_eq!(
        kinds,
        ["\"charge\"", "\"charge\"", "\"charge\"", "\"refused\""]
    );
}

#[test]
fn distributed_noise_is_added_at_the_silos_and_auc_is_reported_beside_the_run_without_dp() {
    let rounds = 8;
    let run = |policy_extra: String| {
        let mut f = Federation::start(Options {
            rounds,
            policy_extra,
            ..Default::default()
        });
        let fin = f.expect("finished", |e| e["event"] == "finished");
        assert!(fin["error"].is_null(), "{fin}");
        assert!(f.exit_status().success());
        f.committed().into_iter().cloned().collect::<Vec<Value>>()
    };
    let z = 0.8;
    let plain = run(String::new());
    let dp = run(privacy("distributed", z, None));
    assert_eq!((plain.len(), dp.len()), (rounds as usize, rounds as usize));
    // Each silo clipped its update to C = 0.3 and added N(0, z²C²/3) to each of its values:
    // the norm it sent is about C·√(1 + d·z²/3) for d parameters, far above C.
    let d = dp[0]["update_bytes"].as_f64().unwrap() / 4.0;
    let expected = 0.3 * (1.0 + d * z * z / 3.0).sqrt();
    for c in &dp {
        for (silo, n) in c["update_norms"].as_object().unwrap() {
            let n = n.as_f64().unwrap();
            assert!(
                n > 0.8 * expected && n < 1.2 * expected,
                "{silo}: norm {n}, expected about {expected}"
            );
        }
        assert!(c["clipped"].as_array().unwrap().is_empty(), "{c}");
    }
    for c in &plain {
        assert!(c["privacy"].is_null());
    }
    let (a_plain, a_dp) = (
        weighted_score(&plain[rounds as usize - 1]),
        weighted_score(&dp[rounds as usize - 1]),
    );
    let spent = dp[rounds as usize - 1]["privacy"]["epsilon"]
        .as_f64()
        .unwrap();
    eprintln!(
        "held-out AUC after {rounds} rounds: without DP {a_plain:.3}; with distributed DP (z = {z}, ε = {spent:.2} at δ = 1e-5) {a_dp:.3}"
    );
    assert!((spent - eps(z, rounds)).abs() < 1e-9);
    assert!(a_plain > 0.8, "without DP: {a_plain}");
    assert!(a_dp > 0.6, "with DP the model should still learn: {a_dp}");
}
