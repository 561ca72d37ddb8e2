//! End-to-end tests of secure aggregation across processes: the churn federation reaches the
//! same held-out AUC with it as without it, and a federation whose silos die after key
//! sharing still unmasks the survivors' sum — or abandons the round, with the reason, when
//! fewer than t are left.

use crate::common::{arg, example, fedsilo, weighted_score, Federation, Options};
use fedsilo::model::checkpoint::Checkpoint;
use serde_json::Value;
use testkit::sandbox::FederationFile;

/// Runs the default churn federation (3 silos, 3 rounds) under `extra` policy tables: the
/// held-out AUC of the last round, every committed round, and the L2 distance between the
/// initial model and version 1.
fn final_auc(extra: &str) -> (f64, Vec<Value>, f64) {
    let mut f = Federation::start(Options {
        policy_extra: extra.to_string(),
        ..Default::default()
    });
    let fin = f.expect("finished", |e| e["event"] == "finished");
    assert!(fin["error"].is_null(), "{fin}");
    assert!(f.exit_status().success());
    let committed: Vec<Value> = f.committed().into_iter().cloned().collect();
    assert_eq!(committed.len(), 3);
    let load = |v: u32| {
        let path = f.state_dir().join(format!("models/v{v}.safetensors"));
        Checkpoint::load(&path).unwrap().params
    };
    let (v0, v1) = (load(0), load(1));
    let step = v0
        .iter()
        .zip(&v1)
        .map(|(a, b)| ((b - a) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    (weighted_score(&committed[2]), committed, step)
}

#[test]
fn the_churn_federation_reaches_the_same_auc_with_secure_aggregation() {
    let (plain, _, _) = final_auc("");
    let (secure, rounds, _) = final_auc("[secure_aggregation]\n");
    println!("held-out AUC after 3 rounds: plain {plain:.6}, secure aggregation {secure:.6}");
    assert!(
        (plain - secure).abs() < 1e-3,
        "plain {plain} vs secure {secure}: more than quantisation error apart"
    );
    for r in &rounds {
        assert_eq!(r["participants"].as_array().unwrap().len(), 3, "{r}");
        assert!(
            r["aggregation"]
                .as_str()
                .unwrap()
                .contains("under secure aggregation (t = 2)"),
            "{r}"
        );
        // Nothing about one silo's update is reported: no norms.
        assert!(r["update_norms"].as_object().unwrap().is_empty(), "{r}");
    }
}

#[test]
fn silos_lost_after_key_sharing_are_unmasked_around_until_fewer_than_t_are_left() {
    let mut f = Federation::start(Options {
        silos: vec![
            ("northeast", vec![]),
            ("midwest", vec![]),
            ("west", vec!["--exit-after-sharing".into(), "2".into()]),
            ("south", vec!["--exit-after-sharing".into(), "3".into()]),
        ],
        rounds: 3,
        policy_extra: "[secure_aggregation]\nthreshold = 3\n".into(),
        ..Default::default()
    });
    // Round 2: west escrowed its secrets, then died; its masks are removed from the sum with
    // the survivors' shares of its key, and the round commits with the other three.
    let r2 = f.expect("round 2 committed", |e| {
        e["event"] == "round_committed" && e["round"] == 2
    });
    let who: Vec<&str> = r2["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(who, ["midwest", "northeast", "south"], "{r2}");
    assert!(
        r2["missing"].to_string().contains("west"),
        "west is reported missing: {r2}"
    );
    let r1 = f.committed()[0].clone();
    let (a1, a2) = (weighted_score(&r1), weighted_score(&r2));
    // A wrongly unmasked sum would be noise across the whole ring: the model would collapse.
    assert!(a2 > 0.6 && a2 > a1 - 0.05, "AUC {a1} then {a2}");
    // Round 3: south dies when its shares are delivered; two silos are below t = 3.
    let r3 = f.expect("round 3 abandoned", |e| {
        e["event"] == "round_abandoned" && e["round"] == 3
    });
    let why = r3["reason"].as_str().unwrap();
    assert!(
        why.contains("only 2 silo(s)") && why.contains("the threshold is 3"),
        "{why}"
    );
}

#[test]
fn secure_aggregation_carries_distributed_dp_noise_added_by_the_silos() {
    let (z, c, m) = (1.0, 0.3, 3.0);
    let (noisy, rounds, step) = final_auc(&format!(
        "[secure_aggregation]\n[privacy]\nmode = \"distributed\"\nclip_norm = {c}\nnoise_multiplier = {z}\n"
    ));
    println!("held-out AUC after 3 rounds with secure aggregation and distributed DP: {noisy:.4}");
    for r in &rounds {
        assert_eq!(r["privacy"]["mode"], "distributed", "{r}");
        assert!(
            r["aggregation"]
                .as_str()
                .unwrap()
                .contains("secure aggregation"),
            "{r}"
        );
    }
    // Each of the m silos added N(0, z²C²/m) before masking, so the unmasked mean carries
    // N(0, (zC/m)²) per parameter: over d parameters (the test MLP is 22-16-1) a first step
    // of norm ≈ zC·√d/m, against at most C for the mean of the clipped updates themselves.
    let d = 22.0 * 16.0 + 16.0 + 16.0 + 1.0;
    let expected = z * c * f64::sqrt(d) / m;
    println!("first step {step:.3}; the silos' noise alone gives about {expected:.3}");
    assert!(
        (step - expected).abs() < c + 0.15 * expected,
        "first step {step}, the silos' noise alone should give about {expected}"
    );
}

#[test]
fn a_robust_kernel_with_secure_aggregation_is_refused_at_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let (ok, out) = fedsilo(&[
        "certs",
        "init",
        "--out",
        arg(&certs),
        "--coordinator",
        "coordinator",
        "--silo",
        "northeast",
    ]);
    assert!(ok, "{out}");
    std::fs::write(
        dir.path().join("policy.toml"),
        "[participation]\nmin_silos = 1\nquorum = 1\n[secure_aggregation]\n",
    )
    .unwrap();
    let config = dir.path().join("federation.toml");
    let federation = FederationFile {
        extra: "[aggregation]\nkernel = \"median\"\n".into(),
        ..FederationFile::new(&example("schema.toml"))
    };
    std::fs::write(&config, federation.render()).unwrap();
    let (ok, out) = fedsilo(&["coordinator", "--config", arg(&config)]);
    assert!(!ok);
    assert!(
        out.contains("needs aggregation.kernel = \"mean\"") && out.contains("`median`"),
        "{out}"
    );
}
