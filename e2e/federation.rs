//! End-to-end tests with the real binaries: one `fedsilo coordinator` and several `silo-node`
//! processes over mutual TLS on loopback, on the churn data. Every wait is for an event the
//! coordinator prints (`--events json`), bounded; every process is killed when its guard drops.

use crate::common::{arg, bins, example, free_port, Federation, Options};

#[test]
fn a_federation_commits_rounds_and_the_held_out_loss_falls() {
    let rounds = 4;
    // Small chunks, so every model and update crosses the wire in several frames.
    let mut f = Federation::start(Options {
        rounds,
        chunk: 97,
        ..Default::default()
    });
    let fin = f.expect("finished", |e| e["event"] == "finished");
    assert!(fin["error"].is_null(), "{fin}");
    assert_eq!(fin["version"], rounds);
    assert!(f.exit_status().success());
    let c = f.committed();
    assert_eq!(c.len(), rounds as usize);
    let loss: Vec<f64> = c.iter().map(|e| e["eval_loss"].as_f64().unwrap()).collect();
    assert!(
        loss[rounds as usize - 1] < loss[0],
        "held-out loss did not fall: {loss:?}"
    );
    for e in &c {
        assert_eq!(e["participants"].as_array().unwrap().len(), 3, "{e}");
    }
    // The committed model is on disk, readable, and is the version announced.
    let ckpt = fedsilo::model::checkpoint::Checkpoint::load(
        &f.state_dir().join(format!("models/v{rounds}.safetensors")),
    )
    .unwrap();
    assert_eq!(
        fedsilo::model::Digest::of_f32(&ckpt.params).hex(),
        c[rounds as usize - 1]["digest"].as_str().unwrap()
    );
}

#[test]
fn only_parameters_leave_a_silo() {
    let mut f = Federation::start(Options {
        rounds: 3,
        chunk: 256,
        ..Default::default()
    });
    f.expect("finished", |e| e["event"] == "finished");
    let c = f.committed();
    assert_eq!(c.len(), 3);
    for e in c {
        let update = e["update_bytes"].as_u64().unwrap();
        let sent = e["bytes_from_silos"].as_object().unwrap();
        assert_eq!(sent.len(), 3);
        for (silo, bytes) in sent {
            let bytes = bytes.as_u64().unwrap();
            // The update itself crossed the wire...
            assert!(
                bytes >= update,
                "{silo} sent {bytes} B, less than its {update} B update"
            );
            // ...and little else: acknowledgements, the training report, metrics, heartbeats.
            assert!(
                bytes <= update + 16 * 1024,
                "{silo} sent {bytes} B in a round, update is {update} B"
            );
            // A silo's data is tens of kilobytes; far more than it sends.
            let data = std::fs::metadata(example(&format!("data/{silo}.csv")))
                .unwrap()
                .len();
            assert!(
                bytes * 4 < data,
                "{silo}: {bytes} B sent vs {data} B of data"
            );
        }
    }
}

#[test]
fn a_silo_killed_mid_round_leaves_the_round_to_complete_at_quorum() {
    let slow = vec!["--train-delay-ms".to_string(), "20000".to_string()];
    let mut f = Federation::start(Options {
        silos: vec![("northeast", vec![]), ("midwest", vec![]), ("west", slow)],
        min_silos: 3,
        quorum: 2,
        grace: 25.0,
        rounds: 1,
        ..Default::default()
    });
    f.expect("round 1 started", |e| {
        e["event"] == "round_started" && e["round"] == 1
    });
    f.silo("west").kill();
    let e = f.expect("round 1 committed", |e| e["event"] == "round_committed");
    let parts: Vec<&str> = e["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(parts, ["midwest", "northeast"]);
    let missing = e["missing"].as_array().unwrap();
    assert_eq!(missing[0][0], "west");
    assert!(
        missing[0][1]
            .as_str()
            .unwrap()
            .starts_with("left the federation mid-round"),
        "{e}"
    );
    let fin = f.expect("finished", |e| e["event"] == "finished");
    assert!(fin["error"].is_null(), "{fin}");
}

#[test]
fn losing_quorum_abandons_the_round_with_a_reason_and_never_hangs() {
    let slow = vec!["--train-delay-ms".to_string(), "20000".to_string()];
    let mut f = Federation::start(Options {
        silos: vec![("northeast", vec![]), ("midwest", vec![]), ("west", slow)],
        min_silos: 3,
        quorum: 3,
        rounds: 2,
        wait_for_silos: 1.0,
        ..Default::default()
    });
    f.expect("round 1 started", |e| {
        e["event"] == "round_started" && e["round"] == 1
    });
    f.silo("west").kill();
    let e = f.expect("round 1 abandoned", |e| e["event"] == "round_abandoned");
    assert!(e["reason"].as_str().unwrap().contains("quorum lost"), "{e}");
    assert!(e["reason"].as_str().unwrap().contains("west"), "{e}");
    assert!(f.committed().is_empty());
    // With two silos left and min_silos = 3, no round can start: the coordinator gives up.
    let fin = f.expect("finished", |e| e["event"] == "finished");
    assert!(
        fin["error"].as_str().unwrap().contains("min_silos is 3"),
        "{fin}"
    );
    assert!(!f.exit_status().success());
    // Nothing was committed: no version beyond the initial one is current.
    let current = std::fs::read_to_string(f.state_dir().join("CURRENT")).unwrap();
    assert_eq!(current.trim(), "0");
}

#[test]
fn a_frozen_silo_is_noticed_by_heartbeats_and_left_out() {
    let mut f = Federation::start(Options {
        min_silos: 2,
        quorum: 2,
        // Far more rounds than the test lasts: the federation is still running when west freezes.
        rounds: 1_000_000,
        heartbeat_timeout: 1.0,
        ..Default::default()
    });
    f.expect("first commit", |e| e["event"] == "round_committed");
    f.silo("west").signal("STOP").unwrap();
    f.expect("west unhealthy", |e| {
        e["event"] == "silo_unhealthy" && e["silo"] == "west"
    });
    // A round that was waiting for west does not wait for its deadline (30 s).
    let refused_or_done = f.expect("the next round end", |e| {
        e["event"] == "round_committed" || e["event"] == "update_refused"
    });
    if refused_or_done["event"] == "update_refused" {
        assert!(
            refused_or_done["reason"]
                .as_str()
                .unwrap()
                .contains("heartbeats"),
            "{refused_or_done}"
        );
    }
    let started = f.expect("a round without west", |e| {
        e["event"] == "round_started"
            && e["excluded"]
                .as_array()
                .is_some_and(|x| x.iter().any(|p| p[0] == "west"))
    });
    assert!(!started["cohort"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "west"));
    f.silo("west").signal("CONT").unwrap();
    f.expect("west healthy again", |e| {
        e["event"] == "silo_healthy" && e["silo"] == "west"
    });
}

#[test]
fn a_coordinator_killed_mid_run_resumes_from_its_last_committed_version() {
    let mut f = Federation::start(Options {
        rounds: 1_000_000,
        port: Some(free_port()),
        silos_exit_with_coordinator: false,
        ..Default::default()
    });
    f.expect("3 commits", |e| {
        e["event"] == "round_committed" && e["version"] == 3
    });
    f.crash_and_restart_coordinator().unwrap();
    let resumed = f.expect("resumed", |e| e["event"] == "resumed");
    let v = resumed["version"].as_u64().unwrap();
    assert!(v >= 3, "{resumed}");
    // What CURRENT names is a complete, readable checkpoint of that version.
    let ckpt = fedsilo::model::checkpoint::Checkpoint::load(
        &f.state_dir().join(format!("models/v{v}.safetensors")),
    )
    .unwrap();
    assert_eq!(
        ckpt.metadata.get("fedsilo.version").map(String::as_str),
        Some(v.to_string().as_str())
    );
    // The silos reconnect and the federation continues from there: no version is lost or reused.
    let next = f.expect("a commit after the restart", |e| {
        e["event"] == "round_committed"
    });
    assert_eq!(next["version"].as_u64().unwrap(), v + 1, "{next}");
}

#[test]
fn a_silo_with_another_schema_is_blocked_with_the_reason_and_the_others_go_on() {
    // A schema that lost one feature: the silo would encode differently.
    let text = std::fs::read_to_string(example("schema.toml")).unwrap();
    let cut = text
        .find("[[feature]]\ncolumn = \"number_customer_service_calls\"")
        .unwrap();
    let other =
        std::env::temp_dir().join(format!("fedsilo-other-schema-{}.toml", std::process::id()));
    std::fs::write(&other, &text[..cut]).unwrap();
    // Each silo says what it is doing in its status file (`silo-node status` reads it).
    let status_dir = tempfile::tempdir().unwrap();
    let status_file = |name: &str| status_dir.path().join(format!("{name}.json"));
    let with_status = |name: &str, mut args: Vec<String>| {
        args.extend(["--status-file".into(), arg(&status_file(name)).into()]);
        args
    };
    let odd = with_status(
        "south",
        vec!["--schema".to_string(), other.display().to_string()],
    );
    let status = |name: &str| {
        let o = std::process::Command::new(bins().silo_node)
            .args(["status", "--status-file", arg(&status_file(name))])
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    let mut f = Federation::start(Options {
        silos: vec![
            ("northeast", with_status("northeast", vec![])),
            ("midwest", vec![]),
            ("west", vec![]),
            ("south", odd),
        ],
        min_silos: 3,
        quorum: 3,
        rounds: 2,
        ..Default::default()
    });
    let blocked = f.expect("south blocked", |e| e["event"] == "silo_blocked");
    assert_eq!(blocked["silo"], "south");
    assert!(
        blocked["reason"].as_str().unwrap().contains("schema"),
        "{blocked}"
    );
    // The blocked silo knows it, and says why; its status check fails.
    let said = |silo: &str, what: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (ok, out) = status(silo);
            if out.contains(what) || std::time::Instant::now() > deadline {
                return (ok, out);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    // (It says so while it runs, and still after it stopped with the coordinator.)
    let (ok, out) = said("south", "blocked by the coordinator");
    assert!(!ok && out.contains("its schema"), "{out}");
    assert!(f.silo_log("south").contains("blocked by the coordinator"));
    let fin = f.expect("finished", |e| e["event"] == "finished");
    assert!(fin["error"].is_null(), "{fin}");
    // The others trained; once the coordinator is gone (--once), the status says stopped.
    let (ok, out) = said("northeast", "not running");
    assert!(!ok && out.contains("last trained round 2"), "{out}");
    for e in f.committed() {
        assert!(
            !e["participants"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == "south"),
            "{e}"
        );
    }
    let _ = std::fs::remove_file(other);
}

#[test]
fn a_robust_kernel_with_clipping_and_fedadam_is_used_and_recorded_with_each_version() {
    let mut f = Federation::start(Options {
        rounds: 3,
        extra: "[aggregation]\nkernel = \"median\"\nclip_norm = 0.05\n[aggregation.server_optimizer]\nkind = \"adam\"\nlearning_rate = 0.02\n",
        ..Default::default()
    });
    let fin = f.expect("finished", |e| e["event"] == "finished");
    assert!(fin["error"].is_null(), "{fin}");
    let c = f.committed();
    assert_eq!(c.len(), 3);
    for e in &c {
        let a = e["aggregation"].as_str().unwrap();
        assert!(
            a.starts_with("median") && a.contains("clip_norm=0.05") && a.contains("adam"),
            "{a}"
        );
        // With a 0.05 bound every silo's update is clipped, and the summary says so.
        assert_eq!(e["clipped"].as_array().unwrap().len(), 3, "{e}");
    }
    let ckpt =
        fedsilo::model::checkpoint::Checkpoint::load(&f.state_dir().join("models/v3.safetensors"))
            .unwrap();
    assert!(ckpt.metadata["fedsilo.aggregation"].contains("median"));
    // The server optimiser's moments are kept with the version, for a restart.
    assert!(f
        .state_dir()
        .join("models/v3.optimizer.safetensors")
        .exists());
}

#[test]
fn a_nan_update_is_refused_its_silo_quarantined_and_released() {
    let nan = vec!["--attack".to_string(), "nan".to_string()];
    let mut f = Federation::start(Options {
        silos: vec![("northeast", vec![]), ("midwest", vec![]), ("west", nan)],
        min_silos: 2,
        quorum: 2,
        rounds: 1_000_000,
        policy_extra: "[admission]\nquarantine = { after = 1, window = 1, rounds = 2 }\n".into(),
        ..Default::default()
    });
    let refused = f.expect("west refused", |e| {
        e["event"] == "update_refused" && e["silo"] == "west"
    });
    assert!(
        refused["reason"].as_str().unwrap().contains("not finite"),
        "{refused}"
    );
    let round = refused["round"].as_u64().unwrap();
    let q = f.expect("west quarantined", |e| {
        e["event"] == "silo_quarantined" && e["silo"] == "west"
    });
    assert_eq!(q["until_round"].as_u64().unwrap(), round + 3);
    // The next two rounds run without west, saying why...
    for r in [round + 1, round + 2] {
        let s = f.expect("a round without west", |e| {
            e["event"] == "round_started" && e["round"] == r
        });
        let why = s["excluded"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x[0] == "west")
            .expect("west excluded");
        assert!(
            why[1].as_str().unwrap().contains("quarantined until round"),
            "{s}"
        );
    }
    // ...and then west is back in the cohort (released), where it is refused again.
    let s = f.expect("west released", |e| {
        e["event"] == "round_started" && e["round"] == round + 3
    });
    assert!(
        s["cohort"].as_array().unwrap().iter().any(|x| x == "west"),
        "{s}"
    );
    // The committed rounds never contained west.
    for e in f.committed() {
        assert!(!e["participants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "west"));
    }
}

#[test]
fn a_policy_change_takes_effect_at_the_next_round_and_a_broken_one_is_refused() {
    let mut f = Federation::start(Options {
        min_silos: 2,
        quorum: 2,
        rounds: 1_000_000,
        ..Default::default()
    });
    let first = f.expect("a commit", |e| e["event"] == "round_committed");
    let policy_file = f.dir.path().join("policy.toml");
    let text = std::fs::read_to_string(&policy_file).unwrap();
    // Replace the file atomically, as an operator's tooling should.
    let replace = |body: String| {
        let tmp = policy_file.with_extension("tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, &policy_file).unwrap();
    };
    replace(format!("{text}deny = [\"west\"]\n"));
    let changed = f.expect("policy changed", |e| e["event"] == "policy_changed");
    let digest = changed["digest"].as_str().unwrap().to_string();
    assert_ne!(first["policy_digest"].as_str().unwrap(), digest);
    let s = f.expect("a round with the new policy", |e| {
        e["event"] == "round_started"
            && e["excluded"]
                .as_array()
                .is_some_and(|x| x.iter().any(|p| p[0] == "west"))
    });
    assert!(
        s["excluded"].to_string().contains("participation.deny"),
        "{s}"
    );
    let c = f.expect("a commit under the new policy", |e| {
        e["event"] == "round_committed" && e["policy_digest"] == digest.as_str()
    });
    assert!(!c["participants"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "west"));
    // A broken file is refused; the federation goes on under the last good policy.
    replace("[participation]\nmin_silos = 2\nquorum = 9\n".to_string());
    let refused = f.expect("policy refused", |e| e["event"] == "policy_refused");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("participation.quorum"),
        "{refused}"
    );
    f.expect("a commit after the refusal", |e| {
        e["event"] == "round_committed" && e["policy_digest"] == digest.as_str()
    });
}

#[test]
fn silos_training_with_dp_sgd_take_part_and_a_silo_over_its_own_budget_refuses_to_train() {
    let ledgers = tempfile::tempdir().unwrap();
    let dp = |name: &str, budget: Option<&str>| {
        let ledger = ledgers.path().join(format!("{name}.jsonl"));
        let mut a: Vec<String> = ["--dp-clip", "1.0", "--dp-noise-multiplier", "1.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--dp-ledger".to_string(), ledger.display().to_string()]);
        if let Some(b) = budget {
            a.extend(["--dp-epsilon-budget".to_string(), b.to_string()]);
        }
        a
    };
    let rounds = 3;
    let mut f = Federation::start(Options {
        silos: vec![
            ("northeast", dp("northeast", Some("0.01"))),
            ("midwest", dp("midwest", None)),
            ("west", dp("west", None)),
        ],
        quorum: 2,
        rounds,
        ..Default::default()
    });
    let fin = f.expect("finished", |e| e["event"] == "finished");
    assert!(fin["error"].is_null(), "{fin}");
    let committed = f.committed();
    assert_eq!(committed.len(), rounds as usize);
    for c in &committed {
        assert_eq!(
            c["participants"],
            serde_json::json!(["midwest", "west"]),
            "{c}"
        );
        let why = c["missing"][0][1].as_str().unwrap();
        assert!(
            why.contains("privacy budget") && why.contains("--dp-epsilon-budget 0.01"),
            "{why}"
        );
    }
    // Each training silo recorded one DP-SGD charge per round, before training; the silo over
    // budget recorded none.
    let lines = |n: &str| {
        std::fs::read_to_string(ledgers.path().join(format!("{n}.jsonl")))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert_eq!(lines("midwest"), rounds as usize);
    assert_eq!(lines("northeast"), 0);
}
