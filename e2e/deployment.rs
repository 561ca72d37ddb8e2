//! Deployment end to end: a serving coordinator deploys committed versions to real silos —
//! to all, to one by name, to a silo that was offline when it was ordered, again after a
//! rollback and across a SIGKILL — and each silo scores a CSV with whatever is deployed there,
//! refusing a deployment changed on its disk. A silo started without a deployment directory
//! refuses, and says why.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{arg, example, fedsilo, free_port, silo_score, Federation, Options};

/// `silo-node score` for `silo`: whether it succeeded, and what it printed.
fn score(f: &Federation, deploy: &Path, silo: &str, out: &Path) -> (bool, String) {
    silo_score(&f.dir.path().join("certs"), deploy, silo, out)
}

/// The scored file's rows, as header → value maps.
fn scored(path: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            header
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn deployed(silo: &'static str, version: u64) -> impl Fn(&Value) -> bool {
    move |e| e["event"] == "silo_deployed" && e["silo"] == silo && e["version"] == version
}

#[test]
fn committed_versions_reach_the_silos_and_are_scored_with_there() {
    let deploy = tempfile::tempdir().unwrap();
    let dir = |name: &str| crate::common::deploy_dir(deploy.path(), name);
    let admin = free_port();
    let extra = format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n");
    let mut f = Federation::start(Options {
        rounds: 2,
        silos: vec![
            ("northeast", dir("northeast")),
            ("west", dir("west")),
            ("south", dir("south")),
            // No deployment directory: it refuses deployments.
            ("midwest", vec![]),
        ],
        held_back: vec!["south"],
        min_silos: 2,
        quorum: 2,
        port: Some(free_port()),
        silos_exit_with_coordinator: false,
        coordinator_args: vec!["--serve".into()],
        extra: Box::leak(extra.into_boxed_str()),
        ..Default::default()
    });
    let url = format!("https://127.0.0.1:{admin}");
    let kit = f.operator("alice").join("alice");
    let deploy_cmd = |args: &[&str]| {
        let mut all = vec!["deploy", "--url", url.as_str(), "--kit", arg(&kit)];
        all.extend_from_slice(args);
        fedsilo(&all)
    };
    f.expect("run 1 ends", |e| e["event"] == "run_ended" && e["run"] == 1);

    // Nothing deployed yet: scoring says so, and how to deploy.
    let out = deploy.path().join("scores.csv");
    let (ok, msg) = score(&f, deploy.path(), "northeast", &out);
    assert!(!ok && msg.contains("no model is deployed"), "{msg}");

    // A version never committed is refused by name.
    let (ok, msg) = deploy_cmd(&["create", "--version", "99"]);
    assert!(
        !ok && msg.contains("409") && msg.contains("v99 was never committed"),
        "{msg}"
    );

    // v1 to every silo: the two present get it; midwest refuses and says why.
    let from = f.seen().len();
    let (ok, msg) = deploy_cmd(&["create", "--version", "1", "--reason", "CHG-1"]);
    assert!(ok && msg.contains("\"deployment\": 1"), "{msg}");
    f.since(from, "northeast has v1", deployed("northeast", 1));
    f.since(from, "west has v1", deployed("west", 1));
    let refused = f.since(from, "midwest refuses", |e| {
        e["event"] == "deployment_refused" && e["silo"] == "midwest"
    });
    assert!(
        refused["reason"].as_str().unwrap().contains("--deploy-dir"),
        "{refused}"
    );

    // The silo scores its customers with it, offline; each row names the model.
    let (ok, msg) = score(&f, deploy.path(), "northeast", &out);
    assert!(ok && msg.contains("with v1"), "{msg}");
    let rows = scored(&out);
    let input = csv::Reader::from_path(example("data/northeast.csv"))
        .unwrap()
        .records()
        .count();
    assert_eq!(rows.len(), input);
    assert!(rows.iter().all(|r| r["model_version"] == "1"));
    let p: Vec<f64> = rows.iter().map(|r| r["p_yes"].parse().unwrap()).collect();
    assert!(p.iter().all(|p| (0.0..=1.0).contains(p)));
    assert!(
        p.iter().any(|x| (x - p[0]).abs() > 1e-6),
        "scores all alike"
    );

    // v2 to northeast alone; west keeps v1.
    let (ok, msg) = deploy_cmd(&["create", "--version", "2", "--silo", "northeast"]);
    assert!(ok, "{msg}");
    f.expect("northeast has v2", deployed("northeast", 2));
    let (ok, msg) = score(&f, deploy.path(), "west", &out);
    assert!(ok && msg.contains("with v1"), "{msg}");

    // A silo that was offline when v1 was ordered gets it when it arrives.
    f.start_held_back().unwrap();
    f.expect("south has v1 on arrival", deployed("south", 1));

    // A rollback to v1 redeploys v1 where v2 was in force.
    let (ok, msg) = fedsilo(&[
        "admin",
        "--url",
        &url,
        "--kit",
        arg(&kit),
        "rollback",
        "1",
        "--reason",
        "v2 misbehaves",
    ]);
    assert!(ok, "{msg}");
    let back = f.expect("northeast back on v1", deployed("northeast", 1));
    assert_eq!(back["deployment"], 3, "{back}");
    let (ok, msg) = score(&f, deploy.path(), "northeast", &out);
    assert!(ok && msg.contains("with v1"), "{msg}");

    // After a SIGKILL the coordinator knows every order, and what each silo holds.
    f.crash_and_restart_coordinator().unwrap();
    f.expect("northeast reports v1 by heartbeat", |e| {
        e["event"] == "silo_deployed" && e["silo"] == "northeast" && e["deployment"].is_null()
    });
    let (ok, msg) = deploy_cmd(&["list"]);
    assert!(ok, "{msg}");
    let list: Value = serde_json::from_str(&msg).unwrap();
    let orders: Vec<(u64, &str)> = list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["version"].as_u64().unwrap(), d["by"].as_str().unwrap()))
        .collect();
    assert_eq!(orders, [(1, "alice"), (2, "alice"), (1, "alice")]);

    // A deployment changed on the silo's disk is refused, not scored with.
    let kept = kept_version(&deploy.path().join("northeast"));
    let values = kept.join("values.f32");
    let mut bytes = std::fs::read(&values).unwrap();
    bytes[0] ^= 0x40;
    std::fs::write(&values, bytes).unwrap();
    let (ok, msg) = score(&f, deploy.path(), "northeast", &out);
    assert!(!ok && msg.contains("does not match its note"), "{msg}");

    f.coordinator().signal("TERM").unwrap();
    f.exit_status();
}

/// The directory `CURRENT` names in a silo's deployment directory.
fn kept_version(dir: &Path) -> PathBuf {
    let name = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    dir.join(name.trim())
}
