//! Out-of-range configuration is an error, never a panic (issue #15, item 8): every numeric
//! key of the federation file and of the policy gets random values — huge, negative, zero,
//! NaN, infinite, fractional — and loading either succeeds with values the runtime can use
//! (durations that convert and add to an `Instant`, a model small enough to allocate) or fails
//! with an error naming the key.

use std::time::Instant;

use fedsilo::federation::FederationConfig;
use fedsilo::model::ModelSpec;
use fedsilo_policies::Policy;
use proptest::prelude::*;

/// Numbers as TOML literals, from the ordinary to the absurd.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..100).prop_map(|n| n.to_string()),
        (0.0f64..1000.0).prop_map(|x| format!("{x:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        prop_oneof![
            Just("1e300".to_string()),
            Just("-1e300".to_string()),
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("-inf".to_string()),
            Just("0".to_string()),
            Just("-1".to_string()),
            Just("0.0".to_string()),
            Just("604801".to_string()),
            Just("4000000000".to_string()),
            Just("18446744073709551615".to_string()),
        ],
        any::<f64>().prop_map(|x| format!("{x:?}").replace("NaN", "nan")),
    ]
}

const FEDERATION_KEYS: [&str; 12] = [
    "rounds",
    "wait_for_silos_secs",
    "handshake_timeout_secs",
    "heartbeat_interval_secs",
    "heartbeat_timeout_secs",
    "chunk_values",
    "hidden",
    "seed",
    "epochs",
    "batch_size",
    "learning_rate",
    "prox_mu",
];

fn federation_toml(v: &[String]) -> String {
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/churn/schema.toml");
    format!(
        "[federation]\nname = \"t\"\nrounds = {}\npolicy = \"policy.toml\"\nstate_dir = \"state\"\nwait_for_silos_secs = {}\n\
         [network]\nlisten = \"127.0.0.1:0\"\nkit = \"certs/coordinator\"\nhandshake_timeout_secs = {}\nheartbeat_interval_secs = {}\nheartbeat_timeout_secs = {}\nchunk_values = {}\n\
         [model]\nschema = \"{schema}\"\nhidden = [{}]\nseed = {}\n\
         [plan]\nepochs = {}\nbatch_size = {}\nlearning_rate = {}\nprox_mu = {}\n",
        v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11]
    )
}

fn policy_toml(v: &[String]) -> String {
    format!(
        "[participation]\nmin_silos = {}\nquorum = {}\nsample_fraction = {}\nmax_weight_share = {}\nmax_heartbeat_age_secs = {}\ncooldown_rounds = {}\n\
         [rounds]\ndeadline_secs = {}\ngrace_secs = {}\n\
         [admission]\nmax_update_norm = {}\n[admission.quarantine]\nafter = {}\nwindow = {}\nrounds = {}\n",
        v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11]
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_federation_file_loads_or_is_refused_without_panic(
        values in proptest::collection::vec(number(), FEDERATION_KEYS.len())
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("federation.toml");
        std::fs::write(&path, federation_toml(&values)).unwrap();
        match FederationConfig::load(&path) {
            Ok(cfg) => {
                let origin = path.display().to_string();
                for d in [
                    cfg.heartbeat_interval(&origin).unwrap(),
                    cfg.heartbeat_timeout(&origin).unwrap(),
                    cfg.handshake_timeout(&origin).unwrap(),
                    fedsilo_policies::duration::to_duration(cfg.federation.wait_for_silos_secs),
                ] {
                    let _ = Instant::now() + d;
                }
                // The model the coordinator would build: refused before any allocation, or
                // small enough to lay out.
                prop_assert!(cfg.plan.epochs <= fedsilo::federation::MAX_EPOCHS);
                let spec = ModelSpec { inputs: 22, hidden: cfg.model.hidden.clone() };
                if spec.validate().is_ok() {
                    prop_assert!(spec.layout().len <= fedsilo::model::MAX_PARAMETERS);
                }
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(text.contains("federation.toml"), "{text}");
            }
        }
    }

    #[test]
    fn any_policy_loads_or_is_refused_without_panic(
        values in proptest::collection::vec(number(), 12)
    ) {
        match Policy::from_toml_str(&policy_toml(&values), "policy.toml") {
            Ok(p) => {
                let _ = Instant::now() + p.rounds.deadline() + p.rounds.grace();
                prop_assert!(p.rounds.grace() < p.rounds.deadline());
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(text.contains("policy.toml"), "{text}");
            }
        }
    }
}

#[test]
fn the_red_teams_values_are_refused_with_the_allowed_range() {
    let p = Policy::from_toml_str(
        "[rounds]\ndeadline_secs = 1e300\ngrace_secs = 1\n",
        "policy.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        p.contains("rounds.deadline_secs") && p.contains("604800"),
        "{p}"
    );
    let mut v: Vec<String> = [
        "3", "60", "10", "1", "5", "1024", "8", "7", "1", "32", "0.05", "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (key, value, expect) in [
        (2, "1e300", "network.handshake_timeout_secs"),
        (3, "1e300", "network.heartbeat_interval_secs"),
        (1, "1e300", "federation.wait_for_silos_secs"),
        (6, "4000000000", "model.hidden[0]"),
    ] {
        let keep = std::mem::replace(&mut v[key], value.to_string());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("federation.toml");
        std::fs::write(&path, federation_toml(&v)).unwrap();
        let e = FederationConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains(expect), "{expect}: {e}");
        v[key] = keep;
    }
}

/// The values of a federation file that loads, in `federation_toml`'s order.
fn valid_values() -> Vec<String> {
    [
        "3", "60", "10", "1", "5", "1024", "8", "7", "1", "32", "0.05", "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Loads a federation file of `text`.
fn load(text: String) -> fedsilo::Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("federation.toml");
    std::fs::write(&path, text).unwrap();
    FederationConfig::load(&path).map(|_| ())
}

/// The work a federation file may ask of silos is bounded, and `model.files` belongs to a
/// manifest: each refused at load, naming the key and the bound.
#[test]
fn endless_training_and_stray_model_files_are_refused_at_load() {
    let base = valid_values();
    let mut v = base.clone();
    v[8] = "1001".into();
    let e = load(federation_toml(&v)).unwrap_err().to_string();
    assert!(e.contains("plan.epochs") && e.contains("1000"), "{e}");
    // 101 rounds × 100 epochs: a local-only baseline of 10,100 passes.
    let mut v = base.clone();
    (v[0], v[8]) = ("101".into(), "100".into());
    let text =
        federation_toml(&v).replace("name = \"t\"\n", "name = \"t\"\ncompare_local = true\n");
    let e = load(text).unwrap_err().to_string();
    assert!(e.contains("compare_local") && e.contains("10100"), "{e}");
    // The same without the comparison loads.
    assert!(load(federation_toml(&v)).is_ok());
    let text = federation_toml(&base).replace("seed = 7\n", "seed = 7\nfiles = \"models\"\n");
    let e = load(text).unwrap_err().to_string();
    assert!(e.contains("model.files"), "{e}");
}

/// A schedule needs a serving coordinator, and `rounds = 0` is a serving coordinator's "no first
/// run": each refused at load otherwise, saying what to set.
#[test]
fn schedules_and_empty_first_runs_need_serve() {
    let base = valid_values();
    let serving = |t: String| t.replace("name = \"t\"\n", "name = \"t\"\nserve = true\n");
    let nightly = |t: String| format!("{t}\n[schedule]\ncron = \"0 2 * * *\"\nrounds = 20\n");
    let e = load(nightly(federation_toml(&base)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("federation.serve = true"), "{e}");
    assert!(load(serving(nightly(federation_toml(&base)))).is_ok());
    let bad = serving(federation_toml(&base)) + "\n[schedule]\ncron = \"61 * * * *\"\nrounds = 1\n";
    let e = load(bad).unwrap_err().to_string();
    assert!(e.contains("schedule.cron"), "{e}");
    let mut v = base.clone();
    v[0] = "0".into();
    let e = load(federation_toml(&v)).unwrap_err().to_string();
    assert!(e.contains("federation.serve"), "{e}");
    assert!(load(serving(federation_toml(&v))).is_ok());
}
