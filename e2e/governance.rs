//! Governance in a real federation: candidates wait for an operator; approvals, a rejection and
//! a rollback signed with an operator's certificate take effect and are journaled with the
//! operator's name; a forged decision is refused while the federation goes on; `fedsilo models`
//! lists, shows, exports and compares the versions.

use std::path::Path;

use crate::common::{arg, fedsilo, Federation, Options};
use serde_json::Value;

/// `fedsilo ARGS --state-dir STATE`.
fn at(state: &Path, args: &[&str]) -> (bool, String) {
    let mut all = args.to_vec();
    all.extend(["--state-dir", arg(state)]);
    fedsilo(&all)
}

#[test]
fn operators_approve_reject_and_roll_back_and_every_decision_is_journaled() {
    let mut f = Federation::start(Options {
        rounds: 4,
        policy_extra: "[validation]\nrequire_approval = true\n".into(),
        ..Default::default()
    });
    let certs = f.operator("alice");
    let kit = certs.join("alice");
    let kit = kit.to_str().unwrap();
    let state = f.state_dir();
    let decide = |what: &str, v: u64, reason: &str| {
        let v = v.to_string();
        let (ok, out) = at(
            &state,
            &["models", what, &v, "--kit", kit, "--reason", reason],
        );
        assert!(ok, "{out}");
    };

    let w = f.expect("v1 awaits", |e| e["event"] == "awaiting_approval");
    assert_eq!(w["version"], 1);
    decide("approve", 1, "first look fine");
    let a = f.expect("v1 approved", |e| e["event"] == "approved");
    assert_eq!(
        (a["version"].as_u64(), a["by"].as_str()),
        (Some(1), Some("alice"))
    );
    f.expect("v2 awaits", |e| {
        e["event"] == "awaiting_approval" && e["version"] == 2
    });
    // Replaying an applied decision (its file copied back into the inbox) is refused.
    let done = std::fs::read_dir(state.join("decisions/done"))
        .unwrap()
        .flatten()
        .next()
        .unwrap();
    std::fs::copy(done.path(), state.join("decisions").join(done.file_name())).unwrap();
    let r = f.expect("replay refused", |e| e["event"] == "decision_refused");
    assert!(
        r["reason"].as_str().unwrap().contains("already applied"),
        "{r}"
    );
    // A forged decision (a silo cannot sign one, so write garbage) is refused; nothing stops.
    std::fs::write(
        state.join("decisions/0-approve-v2-mallory.json"),
        "{\"kind\":\"approve\"}\n",
    )
    .unwrap();
    let r = f.expect("forgery refused", |e| {
        e["event"] == "decision_refused" && e["file"].as_str().unwrap_or("").contains("mallory")
    });
    assert!(r["reason"].as_str().unwrap().contains("hash"), "{r}");
    decide("approve", 2, "better");
    f.expect("v2 approved", |e| {
        e["event"] == "approved" && e["version"] == 2
    });
    // Round 3 builds on v2; while its candidate waits, roll back to v1: the candidate is
    // withdrawn and round 4 trains from v1.
    let r3 = f.expect("round 3", |e| {
        e["event"] == "round_started" && e["round"] == 3
    });
    assert_eq!(r3["base_version"], 2, "{r3}");
    f.expect("v3 awaits", |e| {
        e["event"] == "awaiting_approval" && e["version"] == 3
    });
    // A rollback to a checkpoint modified on disk is refused, and nothing changes.
    let v0 = state.join("models/v0.safetensors");
    let original = std::fs::read(&v0).unwrap();
    std::fs::write(&v0, [original.as_slice(), b"x"].concat()).unwrap();
    decide("rollback", 0, "back to the start");
    let r = f.expect("tampered target refused", |e| {
        e["event"] == "decision_refused" && e["reason"].as_str().unwrap_or("").contains("SHA-256")
    });
    assert!(
        r["reason"].as_str().unwrap().contains("v0.safetensors"),
        "{r}"
    );
    std::fs::write(&v0, &original).unwrap();
    decide("rollback", 1, "v2 misbehaves in production");
    let rb = f.expect("rolled back", |e| e["event"] == "rolled_back");
    assert_eq!((rb["from"].as_u64(), rb["to"].as_u64()), (Some(2), Some(1)));
    let r4 = f.expect("round 4", |e| {
        e["event"] == "round_started" && e["round"] == 4
    });
    assert_eq!(r4["base_version"], 1, "{r4}");
    f.expect("v4 awaits", |e| {
        e["event"] == "awaiting_approval" && e["version"] == 4
    });
    decide("reject", 4, "not convinced");
    let rej = f.expect("v4 rejected", |e| e["event"] == "round_rejected");
    assert!(rej["reason"]
        .as_str()
        .unwrap()
        .contains("rejected by alice: not convinced"));
    let fin = f.expect("finished", |e| e["event"] == "finished");
    assert!(fin["error"].is_null(), "{fin}");
    assert!(f.exit_status().success());
    assert_eq!(
        std::fs::read_to_string(state.join("CURRENT"))
            .unwrap()
            .trim(),
        "1"
    );

    // The journal names who decided what, and verifies.
    let journal: Vec<Value> = std::fs::read_to_string(state.join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<(&str, Option<&str>)> = journal
        .iter()
        .map(|e| {
            (
                e["record"]["kind"].as_str().unwrap(),
                e["record"]["by"].as_str(),
            )
        })
        .filter(|(k, _)| ["approved", "rolled_back", "decision_refused"].contains(k))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("approved", Some("alice")),
            ("decision_refused", None),
            ("decision_refused", None),
            ("approved", Some("alice")),
            ("decision_refused", None),
            ("rolled_back", Some("alice")),
        ]
    );
    let ca = certs.join("coordinator/ca.pem");
    let (ok, out) = at(&state, &["audit", "verify", "--ca", arg(&ca)]);
    assert!(ok, "{out}");

    // fedsilo models: list with statuses and the current mark, show, export, diff.
    let (ok, list) = at(&state, &["models", "list"]);
    assert!(ok, "{list}");
    let row = |v: &str| {
        list.lines()
            .find(|l| l.trim_start().starts_with(v))
            .unwrap_or_default()
            .to_string()
    };
    assert!(row("1*").contains("committed"), "{list}");
    assert!(row("2 ").contains("committed"), "{list}");
    assert!(
        row("3 ").contains("rejected") && row("3 ").contains("withdrawn"),
        "{list}"
    );
    assert!(
        row("4 ").contains("rejected") && row("4 ").contains("alice"),
        "{list}"
    );
    let (ok, show) = at(&state, &["models", "show", "2"]);
    assert!(
        ok && show.contains("decided by alice") && show.contains("participant"),
        "{show}"
    );
    let out = f.dir.path().join("v2.safetensors");
    let (ok, msg) = at(&state, &["models", "export", "2", "--out", arg(&out)]);
    assert!(ok, "{msg}");
    let exported = fedsilo::model::checkpoint::Checkpoint::load(&out).unwrap();
    assert_eq!(exported.metadata["fedsilo.version"], "2");
    let (ok, diff) = at(&state, &["models", "diff", "1", "2"]);
    assert!(
        ok && diff.contains("L2 distance") && diff.contains("dense0.weight"),
        "{diff}"
    );
    let (ok, msg) = at(&state, &["models", "show", "42"]);
    assert!(!ok && msg.contains("no version 42"), "{msg}");
}
