//! Residency on the wire: EU and US silos, one regional aggregator per region, real processes
//! over mTLS. The aggregators' own receive records show where every update went.

use std::path::{Path, PathBuf};

use serde_json::Value;
use testkit::sandbox::{AggregatorSpec, Binaries, FederationFile, Sandbox, SandboxSpec, SiloSpec};

fn example(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/churn")
        .join(p)
}

const POLICY: &str = r#"regions = ["eu", "us"]
[participation]
min_silos = 4
quorum = 2
[rounds]
deadline_secs = 30
grace_secs = 1
[residency]
min_regional_silos = 2
[residency.allowed]
eu = ["eu"]
us = ["us"]
"#;

fn federation(rounds: u64) -> String {
    FederationFile {
        rounds,
        ..FederationFile::new(&example("schema.toml"))
    }
    .render()
}

/// Starts the federation; `misconfigured` silos link to the aggregator of the other region.
fn start(
    dir: &Path,
    rounds: u64,
    coordinator_args: Vec<String>,
    misconfigured: &[&str],
) -> Sandbox {
    let bins =
        Binaries::in_dir(Path::new(env!("CARGO_BIN_EXE_silo-node")).parent().unwrap()).unwrap();
    let silo = |name: &str, region: &str| SiloSpec {
        name: name.into(),
        region: Some(region.into()),
        aggregator: Some(if misconfigured.contains(&name) {
            format!("agg-{}", if region == "eu" { "us" } else { "eu" })
        } else {
            format!("agg-{region}")
        }),
        data: example(&format!("data/{name}.csv")),
        args: vec![],
        ..Default::default()
    };
    let fed = federation(rounds);
    Sandbox::start_spec(SandboxSpec {
        bins: &bins,
        dir,
        federation_toml: &fed,
        policy_toml: POLICY,
        schema: &example("schema.toml"),
        silos: vec![
            silo("northeast", "eu"),
            silo("midwest", "eu"),
            silo("south", "us"),
            silo("west", "us"),
        ],
        silo_args: &["--once"],
        aggregators: vec![
            AggregatorSpec {
                name: "agg-eu".into(),
                region: "eu".into(),
            },
            AggregatorSpec {
                name: "agg-us".into(),
                region: "us".into(),
            },
        ],
        coordinator_args,
    })
    .unwrap()
}

fn regions(log: &[Value]) -> Vec<&str> {
    log.iter().map(|r| r["region"].as_str().unwrap()).collect()
}

#[test]
fn eu_updates_are_aggregated_only_in_the_eu_and_the_model_still_improves() {
    let dir = tempfile::tempdir().unwrap();
    let mut sb = start(dir.path(), 4, vec![], &[]);
    let fin = sb.expect("finished", |e| e["event"] == "finished").unwrap();
    assert!(fin["error"].is_null(), "{fin}");
    let c = sb.committed();
    assert_eq!(c.len(), 4);
    for e in &c {
        assert_eq!(e["participants"].as_array().unwrap().len(), 4, "{e}");
    }
    let loss: Vec<f64> = c.iter().map(|e| e["eval_loss"].as_f64().unwrap()).collect();
    assert!(loss[3] < loss[0], "held-out loss did not fall: {loss:?}");
    // The aggregators' own records: every update each received, from its own region only.
    let (eu, us) = (sb.receive_log("agg-eu"), sb.receive_log("agg-us"));
    assert_eq!(eu.len(), 8, "{eu:?}");
    assert_eq!(us.len(), 8, "{us:?}");
    assert!(regions(&eu).iter().all(|r| *r == "eu"), "{eu:?}");
    assert!(
        regions(&us).iter().all(|r| *r == "us"),
        "no EU silo's update may reach the US aggregator: {us:?}"
    );
    assert!(eu.iter().chain(&us).all(|r| r["admitted"] == true));
}

#[test]
fn a_misrouted_update_is_refused_by_the_receiving_aggregator() {
    let dir = tempfile::tempdir().unwrap();
    // The EU silo `northeast` is misconfigured to link to the US aggregator, and the coordinator
    // is made to route its update there: the aggregator's own check must refuse it.
    let mut sb = start(
        dir.path(),
        1,
        vec!["--fault-misroute".into(), "northeast".into()],
        &["northeast"],
    );
    let refused = sb
        .expect("northeast refused", |e| {
            e["event"] == "update_refused" && e["silo"] == "northeast"
        })
        .unwrap();
    let why = refused["reason"].as_str().unwrap();
    assert!(why.contains("agg-us") && why.contains("residency"), "{why}");
    // The US aggregator recorded the attempt, refused, and processed nothing of it.
    let us = sb.receive_log("agg-us");
    let attempt = us
        .iter()
        .find(|r| r["silo"] == "northeast")
        .expect("agg-us recorded the misrouted update");
    assert_eq!(attempt["admitted"], false);
    assert_eq!(attempt["region"], "eu");
    // The EU aggregate now holds one silo: below residency.min_regional_silos it stays home,
    // and the round commits with the US aggregate alone.
    let e = sb
        .expect("round committed", |e| e["event"] == "round_committed")
        .unwrap();
    let parts: Vec<&str> = e["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(parts, ["south", "west"], "{e}");
    let missing = e["missing"].to_string();
    assert!(missing.contains("min_regional_silos"), "{missing}");
}
