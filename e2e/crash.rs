//! Crash safety of the coordinator: SIGKILLed at random moments — while agreeing the feature
//! scaling, mid-round, mid-commit — and restarted, 30 times within one long federation. After
//! all of it the committed lineage has no gap and no repeat, no round number is reused, the
//! audit chain verifies against the consortium CA, every committed checkpoint matches the
//! SHA-256 the journal recorded for it, and every committed round is in `rounds.jsonl`, in
//! `events.jsonl` (what metrics, webhooks, the report and `/v1/rounds` read) and in the registry
//! exactly once, however the crashes fell between the journal and the logs.

use std::time::Duration;

use crate::common::{arg, fedsilo, free_port, Federation, Options};
use rand::{Rng, SeedableRng};
use serde_json::Value;

#[test]
fn thirty_random_coordinator_crashes_lose_and_repeat_nothing() {
    let mut f = Federation::start(Options {
        rounds: 1_000_000,
        port: Some(free_port()),
        silos_exit_with_coordinator: false,
        ..Default::default()
    });
    f.expect("a first commit", |e| e["event"] == "round_committed");
    // Random kill points: the seed fixes the delays, the machine decides what they interrupt.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(30);
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        f.crash_and_restart_coordinator().unwrap();
        f.expect("listening again", |e| e["event"] == "listening");
    }
    // It goes on after the last restart, then stops in an orderly way.
    let resumed_at = f
        .seen()
        .iter()
        .rev()
        .find(|e| e["event"] == "resumed")
        .map(|e| e["version"].as_u64().unwrap())
        .unwrap_or(0);
    f.expect("two more commits", |e| {
        e["event"] == "round_committed" && e["version"].as_u64() >= Some(resumed_at + 2)
    });
    f.coordinator().signal("INT").unwrap();
    f.exit_status();

    let state = f.state_dir();
    let journal: Vec<Value> = std::fs::read_to_string(state.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |kind: &str| -> Vec<&Value> {
        journal
            .iter()
            .filter(|e| e["record"]["kind"] == kind)
            .map(|e| &e["record"])
            .collect()
    };
    assert!(of("signer").len() >= 31, "one signer entry per start");
    // The committed lineage: versions strictly increasing, each built on the one committed
    // before it — no gap in the chain. (A number a crash took from an unfinished candidate is
    // not given to another model, so the numbers themselves may skip.)
    let commits = of("committed");
    assert!(commits.len() >= 5, "{} commits", commits.len());
    assert_eq!(commits[0]["version"], 0);
    for w in commits.windows(2) {
        let (prev, next) = (w[0]["version"].as_u64(), w[1]["version"].as_u64());
        assert!(next > prev, "{} after {}", w[1], w[0]);
        assert_eq!(w[1]["parent"].as_u64(), prev, "{}", w[1]);
    }
    // No round number is started twice; every started round ends exactly once.
    let started: Vec<u64> = of("round_started")
        .iter()
        .map(|r| r["round"].as_u64().unwrap())
        .collect();
    assert!(started.windows(2).all(|w| w[0] < w[1]), "{started:?}");
    let mut ended: Vec<u64> = ["committed", "rejected", "abandoned"]
        .iter()
        .flat_map(|k| of(k))
        .filter_map(|r| r["round"].as_u64())
        .filter(|r| *r > 0)
        .collect();
    ended.sort();
    let mut unique = ended.clone();
    unique.dedup();
    assert_eq!(ended, unique, "a round ended twice");
    let unended: Vec<&u64> = started.iter().filter(|r| !ended.contains(r)).collect();
    let unstarted: Vec<&u64> = ended.iter().filter(|r| !started.contains(r)).collect();
    assert!(
        unended.is_empty() && unstarted.is_empty(),
        "every started round ends exactly once: started, never ended {unended:?}; ended, never started {unstarted:?}"
    );
    // Every round the journal committed is in each log exactly once, and in the registry.
    let committed_rounds: Vec<u64> = commits
        .iter()
        .filter(|c| c["round"].as_u64() > Some(0))
        .map(|c| c["version"].as_u64().unwrap())
        .collect();
    let versions_in = |file: &str, keep: &dyn Fn(&Value) -> bool| -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_to_string(state.join(file))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| keep(e))
            .filter_map(|e| e["version"].as_u64())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        versions_in("rounds.jsonl", &|_| true),
        committed_rounds,
        "rounds.jsonl against the journal's commits"
    );
    assert_eq!(
        versions_in("events.jsonl", &|e| e["event"] == "round_committed"),
        committed_rounds,
        "round_committed events against the journal's commits"
    );
    let registry = fedsilo::registry::RegistryReader::open(&state).unwrap();
    for v in &committed_rounds {
        let m = registry
            .get(*v)
            .unwrap()
            .expect("a committed version in the registry");
        assert_eq!(
            m.status,
            fedsilo::registry::Status::Committed,
            "version {v}"
        );
    }
    // The chain, the signatures, the checkpoints' SHA-256 and CURRENT.
    let ca = f.dir.path().join("certs/coordinator/ca.pem");
    let (ok, text) = fedsilo(&[
        "audit",
        "verify",
        "--state-dir",
        arg(&state),
        "--ca",
        arg(&ca),
    ]);
    assert!(ok, "{text}");
    eprintln!("{text}");
}
