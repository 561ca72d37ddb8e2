//! A coordinator that stays up (`--serve`): the federation file's first run, then runs
//! submitted with `fedsilo run submit` back to back — one cancelled while queued, one
//! interrupted by a SIGKILL, resumed, and cancelled while running — with the admin API
//! answering between runs, and every run's beginning and end in the journal; scheduled runs;
//! and issue 18's whole story on one coordinator: scheduled and submitted runs with approvals,
//! a deployment scored with at the silos, a SIGKILL, and a rollback back to the silos.

use serde_json::Value;

use crate::common::{arg, fedsilo, free_port, Federation, Options};

/// `fedsilo run … ARGS` as operator `alice`: whether it succeeded, and what it printed.
fn run_cmd(url: &str, kit: &std::path::Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["run", "--url", url, "--kit", arg(kit)];
    all.extend_from_slice(args);
    fedsilo(&all)
}

/// `fedsilo admin … ARGS` as operator `alice`: whether it succeeded, and what it printed.
fn admin_cmd(url: &str, kit: &std::path::Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["admin", "--url", url, "--kit", arg(kit)];
    all.extend_from_slice(args);
    fedsilo(&all)
}

/// The coordinator's audit journal, entry by entry.
fn journal(f: &Federation) -> Vec<Value> {
    std::fs::read_to_string(f.state_dir().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ended(run: u64) -> impl Fn(&Value) -> bool {
    move |e| e["event"] == "run_ended" && e["run"] == run
}

#[test]
fn a_serving_coordinator_runs_jobs_back_to_back_and_resumes_one_after_a_kill() {
    let admin = free_port();
    let extra = format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n");
    let mut f = Federation::start(Options {
        rounds: 1,
        silos: vec![("northeast", vec![]), ("west", vec![])],
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

    // The federation file's run: one round, then the coordinator serves on.
    let first = f.expect("run 1 ends", ended(1));
    assert_eq!(
        (first["outcome"].as_str(), first["committed"].as_u64()),
        (Some("finished"), Some(1))
    );
    let (ok, status) = fedsilo(&["admin", "--url", &url, "--kit", arg(&kit), "status"]);
    assert!(ok, "{status}");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"], "idle", "{status}");

    // Paused, two runs queued: run 2 starts (no round while paused), run 3 waits and is
    // cancelled before it starts; resumed, run 2 trains its rounds.
    let (ok, out) = admin_cmd(&url, &kit, &["pause", "--reason", "queueing"]);
    assert!(ok, "{out}");
    let (ok, out) = run_cmd(&url, &kit, &["submit", "--rounds", "2", "--epochs", "2"]);
    assert!(ok && out.contains("\"run\": 2"), "{out}");
    let (ok, out) = run_cmd(&url, &kit, &["show", "2"]);
    assert!(ok && out.contains("\"epochs\": 2"), "{out}");
    let (ok, out) = run_cmd(
        &url,
        &kit,
        &["submit", "--rounds", "1", "--learning-rate", "-1"],
    );
    assert!(!ok && out.contains("learning_rate = -1"), "{out}");
    let (ok, out) = run_cmd(&url, &kit, &["submit", "--rounds", "5"]);
    assert!(ok && out.contains("\"run\": 3"), "{out}");
    let (ok, out) = run_cmd(&url, &kit, &["cancel", "3", "--reason", "submitted twice"]);
    assert!(ok && out.contains("will not start"), "{out}");
    let (ok, out) = admin_cmd(&url, &kit, &["resume"]);
    assert!(ok, "{out}");
    let second = f.expect("run 2 ends", ended(2));
    assert_eq!(second["committed"], 2, "{second}");
    // Each round's record names its run.
    let rounds = std::fs::read_to_string(f.state_dir().join("rounds.jsonl")).unwrap();
    let runs: Vec<u64> = rounds
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["run"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(runs, [1, 2, 2]);
    // Bad input is refused by name; the coordinator goes on serving.
    let (ok, out) = run_cmd(&url, &kit, &["submit", "--rounds", "0"]);
    assert!(
        !ok && out.contains("409") && out.contains("rounds = 0"),
        "{out}"
    );
    let (ok, out) = run_cmd(&url, &kit, &["cancel", "3"]);
    assert!(!ok && out.contains("run 3 is cancelled"), "{out}");
    let (ok, out) = run_cmd(&url, &kit, &["show", "99"]);
    assert!(!ok && out.contains("404"), "{out}");
    let (ok, out) = run_cmd(&url, &kit, &["cancel", "99"]);
    assert!(
        !ok && out.contains("404") && out.contains("no run 99"),
        "{out}"
    );

    // A long run 4 is killed after its first commit, resumes where it was, and is cancelled
    // while running: it ends at a round boundary.
    let long = ["submit", "--rounds", "1000", "--key", "CHG-4"];
    let (ok, out) = run_cmd(&url, &kit, &long);
    assert!(ok && out.contains("\"run\": 4"), "{out}");
    // A retry with its key finds run 4; nothing new is queued (the journal below says so).
    let (ok, out) = run_cmd(&url, &kit, &long);
    assert!(
        ok && out.contains("\"run\": 4") && out.contains("already"),
        "{out}"
    );
    let started = f.expect("run 4 starts", |e| {
        e["event"] == "run_started" && e["run"] == 4
    });
    let first_round = started["first_round"].as_u64().unwrap();
    assert_eq!(first_round, 4, "runs 1 and 2 took rounds 1 to 3");
    f.expect("run 4's first commit", |e| {
        e["event"] == "round_committed" && e["round"] == first_round
    });
    f.crash_and_restart_coordinator().unwrap();
    let resumed = f.expect("run 4 resumes", |e| {
        e["event"] == "run_started" && e["run"] == 4
    });
    assert_eq!(resumed["first_round"], first_round, "{resumed}");
    f.expect("a commit after the restart", |e| {
        e["event"] == "round_committed"
    });
    let (ok, out) = run_cmd(&url, &kit, &["cancel", "4", "--reason", "enough"]);
    assert!(ok, "{out}");
    let fourth = f.expect("run 4 ends", ended(4));
    assert_eq!(fourth["outcome"], "cancelled", "{fourth}");
    assert!(fourth["committed"].as_u64() >= Some(2), "{fourth}");

    let (ok, out) = run_cmd(&url, &kit, &["list"]);
    assert!(ok, "{out}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let states: Vec<&str> = list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["finished", "finished", "cancelled", "cancelled"]);
    assert!(list["active"].is_null(), "{list}");
    let (ok, out) = run_cmd(&url, &kit, &["show", "3"]);
    assert!(
        ok && out.contains("submitted twice") && out.contains("alice"),
        "{out}"
    );

    // Stopped by an operator, it exits cleanly; the journal holds every run's story.
    f.coordinator().signal("TERM").unwrap();
    f.exit_status();
    let kinds: Vec<String> = journal(&f)
        .iter()
        .map(|e| e["record"]["kind"].as_str().unwrap().to_string())
        .filter(|k| k.starts_with("run_"))
        .collect();
    assert_eq!(
        kinds,
        [
            "run_submitted",
            "run_started",
            "run_ended", // 1
            "run_submitted",
            "run_started", // 2 (starts at once, paused)
            "run_submitted",
            "run_cancelled", // 3, never started
            "run_ended",     // 2
            "run_submitted",
            "run_started",
            "run_cancelled",
            "run_ended", // 4 (killed, resumed)
        ]
    );
}

#[test]
fn a_schedule_submits_runs_by_itself_one_at_a_time() {
    let mut f = Federation::start(Options {
        rounds: 0,
        silos: vec![("northeast", vec![]), ("west", vec![])],
        min_silos: 2,
        quorum: 2,
        silos_exit_with_coordinator: false,
        coordinator_args: vec!["--serve".into()],
        extra: "[schedule]\nevery_secs = 1\nrounds = 2\n",
        ..Default::default()
    });
    for run in [1, 2] {
        let e = f.expect("a scheduled run ends", ended(run));
        assert_eq!(
            (e["outcome"].as_str(), e["committed"].as_u64()),
            (Some("finished"), Some(2)),
            "{e}"
        );
    }
    f.coordinator().signal("TERM").unwrap();
    f.exit_status();
    let submitted: Vec<Value> = journal(&f)
        .into_iter()
        .filter(|e| e["record"]["kind"] == "run_submitted")
        .collect();
    assert!(submitted.len() >= 2);
    for e in &submitted {
        assert_eq!(e["record"]["by"], "federation schedule", "{e}");
    }
    // A second run is submitted at least the interval after the first.
    let t = |i: usize| submitted[i]["time_ms"].as_u64().unwrap();
    assert!(t(1) >= t(0) + 1000, "{} then {}", t(0), t(1));
}

/// Approves, as operator `kit`, every candidate that comes to await approval, until an event
/// matching `done` arrives; returns that event.
fn approve_until(
    f: &mut Federation,
    url: &str,
    kit: &std::path::Path,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let e = f.expect(what, |e| e["event"] == "awaiting_approval" || done(e));
        if done(&e) {
            return e;
        }
        let v = e["version"].as_u64().unwrap().to_string();
        let (ok, out) = admin_cmd(url, kit, &["approve", &v, "--reason", "reviewed"]);
        assert!(ok, "{out}");
    }
}

/// Deploys `version` to every silo as operator `kit` and waits until northeast and west hold
/// it.
fn deploy_everywhere(f: &mut Federation, url: &str, kit: &std::path::Path, version: u64) {
    let from = f.seen().len();
    let v = version.to_string();
    let (ok, out) = fedsilo(&[
        "deploy",
        "--url",
        url,
        "--kit",
        arg(kit),
        "create",
        "--version",
        &v,
    ]);
    assert!(ok, "{out}");
    for silo in ["northeast", "west"] {
        f.since(from, "deployed", |e| {
            e["event"] == "silo_deployed" && e["silo"] == silo && e["version"] == version
        });
    }
}

/// The coordinator's current version, through the admin API.
fn current_version(url: &str, kit: &std::path::Path) -> u64 {
    let (ok, out) = admin_cmd(url, kit, &["status"]);
    assert!(ok, "{out}");
    serde_json::from_str::<Value>(&out).unwrap()["current_version"]
        .as_u64()
        .unwrap()
}

/// Issue 18's whole story against one coordinator started once: scheduled runs and two
/// submitted runs back to back, every candidate approved by an operator, a version deployed to
/// the silos and scored with there, a SIGKILL in the middle of a run (resumed), and a rollback
/// that puts the earlier version back at the silos.
#[test]
fn one_coordinator_serves_scheduled_and_submitted_runs_deploys_rolls_back_and_survives_a_kill() {
    let deploy = tempfile::tempdir().unwrap();
    let dir = |name: &str| crate::common::deploy_dir(deploy.path(), name);
    let admin = free_port();
    let extra = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[schedule]\nevery_secs = 3\nrounds = 1\n"
    );
    let mut f = Federation::start(Options {
        rounds: 0,
        silos: vec![("northeast", dir("northeast")), ("west", dir("west"))],
        min_silos: 2,
        quorum: 2,
        port: Some(free_port()),
        silos_exit_with_coordinator: false,
        coordinator_args: vec!["--serve".into()],
        policy_extra: "[validation]\nrequire_approval = true\n".into(),
        extra: Box::leak(extra.into_boxed_str()),
        ..Default::default()
    });
    let url = format!("https://127.0.0.1:{admin}");
    let kit = f.operator("alice").join("alice");
    let certs = f.dir.path().join("certs");
    let score = |silo: &str| -> String {
        let out = deploy.path().join(format!("{silo}-scores.csv"));
        let (ok, said) = crate::common::silo_score(&certs, deploy.path(), silo, &out);
        assert!(ok, "{said}");
        let mut r = csv::Reader::from_path(&out).unwrap();
        let versions: std::collections::BTreeSet<String> = r
            .deserialize::<std::collections::HashMap<String, String>>()
            .map(|row| row.unwrap()["model_version"].clone())
            .collect();
        assert_eq!(versions.len(), 1, "{versions:?}");
        versions.into_iter().next().unwrap()
    };

    // 1. The schedule's first run: one round, its candidate approved.
    let first = approve_until(&mut f, &url, &kit, "run 1 ends", ended(1));
    assert_eq!(first["committed"], 1, "{first}");

    // 2. A submitted run of two rounds (scheduled runs may come before it: one at a time).
    let (ok, out) = run_cmd(&url, &kit, &["submit", "--rounds", "2", "--key", "CHG-2"]);
    assert!(ok, "{out}");
    let x = serde_json::from_str::<Value>(&out).unwrap()["run"]
        .as_u64()
        .unwrap();
    let e = approve_until(&mut f, &url, &kit, "the submitted run ends", ended(x));
    assert_eq!(
        (e["outcome"].as_str(), e["committed"].as_u64()),
        (Some("finished"), Some(2))
    );

    // 3. Its version deployed to every silo; the silos score with it.
    let v1 = current_version(&url, &kit);
    deploy_everywhere(&mut f, &url, &kit, v1);
    assert_eq!(score("northeast"), v1.to_string());

    // 4. A long submitted run, killed after a commit, resumed, then cancelled.
    let (ok, out) = run_cmd(
        &url,
        &kit,
        &["submit", "--rounds", "1000", "--key", "CHG-3"],
    );
    assert!(ok, "{out}");
    let y = serde_json::from_str::<Value>(&out).unwrap()["run"]
        .as_u64()
        .unwrap();
    approve_until(&mut f, &url, &kit, "the long run starts", |e| {
        e["event"] == "run_started" && e["run"] == y
    });
    approve_until(&mut f, &url, &kit, "a commit of the long run", |e| {
        e["event"] == "round_committed" && e["run"] == y
    });
    f.crash_and_restart_coordinator().unwrap();
    approve_until(&mut f, &url, &kit, "the long run resumes", |e| {
        e["event"] == "run_started" && e["run"] == y
    });
    approve_until(&mut f, &url, &kit, "a commit after the restart", |e| {
        e["event"] == "round_committed" && e["run"] == y
    });
    let (ok, out) = run_cmd(
        &url,
        &kit,
        &["cancel", &y.to_string(), "--reason", "enough"],
    );
    assert!(ok, "{out}");
    let e = approve_until(&mut f, &url, &kit, "the long run ends", ended(y));
    assert_eq!(e["outcome"], "cancelled", "{e}");

    // 5. Paused (the schedule goes on queueing, no round starts); the current version deployed,
    // then rolled back: the silos are back on the earlier version and score with it.
    let (ok, out) = admin_cmd(&url, &kit, &["pause", "--reason", "rollback drill"]);
    assert!(ok, "{out}");
    // A round in flight when the pause came ends first (its candidate may await approval).
    let v2 = loop {
        let (ok, out) = admin_cmd(&url, &kit, &["status"]);
        assert!(ok, "{out}");
        let s: Value = serde_json::from_str(&out).unwrap();
        if let Some(v) = s["awaiting_approval"]["version"].as_u64() {
            let (ok, out) = admin_cmd(&url, &kit, &["reject", &v.to_string(), "--reason", "drill"]);
            assert!(ok, "{out}");
            continue;
        }
        if s["round_in_flight"].is_null() {
            break s["current_version"].as_u64().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(v2 > v1, "v{v2} after v{v1}");
    deploy_everywhere(&mut f, &url, &kit, v2);
    assert_eq!(score("west"), v2.to_string());
    let from = f.seen().len();
    let (ok, out) = admin_cmd(
        &url,
        &kit,
        &["rollback", &v1.to_string(), "--reason", "v2 misbehaves"],
    );
    assert!(ok, "{out}");
    for silo in ["northeast", "west"] {
        f.since(from, "back on v1", |e| {
            e["event"] == "silo_deployed" && e["silo"] == silo && e["version"] == v1
        });
    }
    assert_eq!(score("west"), v1.to_string());
    assert_eq!(score("northeast"), v1.to_string());

    // Every run's story is in the journal, the schedule's runs by the schedule.
    f.coordinator().signal("TERM").unwrap();
    f.exit_status();
    let entries = journal(&f);
    let by = |run: u64| {
        entries
            .iter()
            .find(|e| e["record"]["kind"] == "run_submitted" && e["record"]["run"] == run)
            .map(|e| e["record"]["by"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(by(1), "federation schedule");
    assert_eq!((by(x), by(y)), ("alice".to_string(), "alice".to_string()));
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["record"]["kind"].as_str().unwrap())
        .collect();
    for kind in ["approved", "deployed", "rolled_back", "run_cancelled"] {
        assert!(kinds.contains(&kind), "no {kind} in the journal");
    }

    // The governance report tells the same story, with who decided each step.
    let state = f.state_dir();
    let (json, html) = (f.dir.path().join("g.json"), f.dir.path().join("g.html"));
    let (ok, said) = crate::common::fedsilo(&[
        "report",
        "--state-dir",
        crate::common::arg(&state),
        "--governance",
        "--ca",
        crate::common::arg(&certs.join("coordinator").join("ca.pem")),
        "--out",
        crate::common::arg(&html),
        "--json",
        crate::common::arg(&json),
    ]);
    assert!(ok, "{said}");
    let g: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(
        g["journal"]["problem"].is_null() && g["journal"]["ca_checked"] == true,
        "{}",
        g["journal"]
    );
    assert_eq!(g["summary"]["current_version"], v1, "rolled back to v1");
    let decided = |kind: &str| -> Vec<&Value> {
        g["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"] == kind)
            .collect()
    };
    assert!(decided("approved")
        .iter()
        .all(|d| d["by"] == "alice" && d["decision_sha256"].is_string()));
    assert!(decided("approved").len() >= 4, "every commit was approved");
    assert!(
        decided("gate_committed").is_empty(),
        "require_approval: the gate committed nothing"
    );
    let rb = decided("rolled_back");
    assert_eq!(
        (rb.len(), rb[0]["by"].as_str(), rb[0]["version"].as_u64()),
        (1, Some("alice"), Some(v1))
    );
    assert!(decided("run_submitted")
        .iter()
        .any(|d| d["by"] == "federation schedule"));
    assert_eq!(decided("run_cancelled")[0]["run"], y);
    // Lineage and checkpoints: every committed version's file is the one the report names.
    for v in g["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["status"] == "committed")
    {
        let file = std::fs::read(state.join(v["checkpoint"].as_str().unwrap())).unwrap();
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&file)),
            v["file_sha256"].as_str().unwrap(),
            "{v}"
        );
    }
    let runs = g["runs"].as_array().unwrap();
    let state_of = |id: u64| {
        runs.iter().find(|r| r["id"] == id).unwrap()["state"]
            .as_str()
            .unwrap()
    };
    assert_eq!((state_of(x), state_of(y)), ("finished", "cancelled"));
    // The rollback's redeployment, confirmed by both silos; both silos on v1, both contributed.
    let last = g["deployments"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (
            last["version"].as_u64(),
            last["confirmed"].as_array().unwrap().len()
        ),
        (Some(v1), 2),
        "{last}"
    );
    for s in g["silos"].as_array().unwrap() {
        assert_eq!(s["deployed_version"], v1, "{s}");
        assert!(s["mean_weight_share"].as_f64().unwrap() > 0.2, "{s}");
    }
    assert_eq!(g["policies"][0]["archive"], "kept");
    let attr = crate::common::laid_out(&html);
    assert_eq!(attr("data-mismatches").as_deref(), Some("none"));
    assert_eq!(
        attr("data-decisions"),
        Some(g["decisions"].as_array().unwrap().len().to_string())
    );
}

/// A run's own, stricter policy: under a policy that approves nothing by hand, a run submitted
/// with `--require-approval` has its candidate wait for an operator; the next run, without it,
/// commits by itself.
#[test]
fn a_run_may_require_approval_that_the_policy_does_not() {
    let admin = free_port();
    let extra = format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n");
    let mut f = Federation::start(Options {
        rounds: 0,
        silos: vec![("northeast", vec![]), ("west", vec![])],
        min_silos: 2,
        quorum: 2,
        silos_exit_with_coordinator: false,
        coordinator_args: vec!["--serve".into()],
        extra: Box::leak(extra.into_boxed_str()),
        ..Default::default()
    });
    let url = format!("https://127.0.0.1:{admin}");
    let kit = f.operator("alice").join("alice");
    let strict = [
        "submit",
        "--rounds",
        "1",
        "--require-approval",
        "--max-auc-drop",
        "0.5",
    ];
    let (ok, out) = run_cmd(&url, &kit, &strict);
    assert!(ok && out.contains("\"run\": 1"), "{out}");
    let (ok, out) = run_cmd(&url, &kit, &["show", "1"]);
    assert!(ok && out.contains("\"require_approval\": true"), "{out}");
    let (ok, out) = run_cmd(&url, &kit, &["submit", "--rounds", "1"]);
    assert!(ok && out.contains("\"run\": 2"), "{out}");
    let waiting = f.expect("run 1's candidate awaits", |e| {
        e["event"] == "awaiting_approval"
    });
    let v = waiting["version"].as_u64().unwrap().to_string();
    let (ok, out) = admin_cmd(&url, &kit, &["approve", &v, "--reason", "checked"]);
    assert!(ok, "{out}");
    f.expect("run 1 ends", ended(1));
    // Run 2 commits by itself: the policy's own rules are back.
    let e = f.expect("run 2 ends", ended(2));
    assert_eq!(e["committed"], 1, "{e}");
    assert!(
        !f.seen()
            .iter()
            .any(|e| e["event"] == "awaiting_approval" && e["version"] != waiting["version"]),
        "run 2's candidate waited for approval"
    );
    // Out of range: refused by name.
    let (ok, out) = run_cmd(
        &url,
        &kit,
        &["submit", "--rounds", "1", "--max-auc-drop", "3"],
    );
    assert!(!ok && out.contains("max_auc_drop = 3"), "{out}");
    f.coordinator().signal("TERM").unwrap();
    f.exit_status();
}
