//! A coordinator that stays up (`--serve`): the federation file's first run, then runs
//! submitted with `fedsilo run submit` back to back — one cancelled while queued, one
//! interrupted by a SIGKILL, resumed, and cancelled while running — with the admin API
//! answering between runs, and every run's beginning and end in the journal.

use serde_json::Value;

use crate::common::{arg, fedsilo, free_port, Federation, Options};

/// `fedsilo run … ARGS` as operator `alice`: whether it succeeded, and what it printed.
fn run_cmd(url: &str, kit: &std::path::Path, args: &[&str]) -> (bool, String) {
    let mut all = vec!["run", "--url", url, "--kit", arg(kit)];
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
    let admin_cmd = |args: &[&str]| {
        let mut all = vec!["admin", "--url", url.as_str(), "--kit", arg(&kit)];
        all.extend_from_slice(args);
        fedsilo(&all)
    };
    let (ok, out) = admin_cmd(&["pause", "--reason", "queueing"]);
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
    let (ok, out) = admin_cmd(&["resume"]);
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
