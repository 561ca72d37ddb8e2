//! The validation gate in a real federation, with a central hold-out (a node that only scores
//! candidates): a silo that starts poisoning its updates makes the candidate fail the policy's
//! AUC rules. The candidate is kept as a rejected version, the
//! current version stays (and the next round trains from it), and the journal records the
//! rejection with the version kept current.

use crate::common::{Federation, Options};
use fedsilo::audit::verify::verify_chain;
use fedsilo::audit::Record;
use fedsilo::registry::{RegistryReader, Status};

#[test]
fn a_poisoned_candidate_fails_the_gate_and_the_current_version_stays() {
    let poison = ["--attack", "gaussian", "--attack-from-round", "3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut f = Federation::start(Options {
        silos: vec![
            ("northeast", vec![]),
            ("midwest", vec![]),
            ("west", poison),
            ("south", vec!["--evaluate-only".to_string()]),
        ],
        rounds: 4,
        // The gate's own defence: the default cohort norm bound, which would refuse the poisoned
        // update before the gate sees a candidate, is turned off.
        policy_extra: "[validation]\nmax_auc_drop = 0.01\ncentral_holdout = \"south\"\nmax_central_auc_drop = 0.01\n[admission]\nmax_norm_ratio = 0\n".into(),
        ..Default::default()
    });
    let rejected = f.expect("round 3 rejected", |e| e["event"] == "round_rejected");
    assert_eq!(rejected["round"], 3, "{rejected}");
    assert_eq!(rejected["version"], 3, "{rejected}");
    assert_eq!(rejected["current"], 2, "{rejected}");
    let why = rejected["reason"].as_str().unwrap();
    assert!(
        why.contains("held-out AUC") && why.contains("max_auc_drop = 0.01"),
        "{why}"
    );
    assert!(why.contains("central hold-out `south`"), "{why}");
    eprintln!("round 3 rejected: {why}");
    // The next round trains from the version that stayed current.
    let next = f.expect("round 4 started", |e| {
        e["event"] == "round_started" && e["round"] == 4
    });
    assert_eq!(next["base_version"], 2, "{next}");
    let fin = f.expect("finished", |e| e["event"] == "finished");
    // The central hold-out scored every candidate and never trained.
    for c in f.committed() {
        assert!(c["eval"]["south"]["auc"].is_number(), "{c}");
        assert!(!c["participants"].to_string().contains("south"), "{c}");
    }
    assert!(fin["error"].is_null(), "{fin}");
    assert!(f.exit_status().success());
    let state = f.state_dir();
    assert_eq!(
        std::fs::read_to_string(state.join("CURRENT"))
            .unwrap()
            .trim(),
        "2"
    );
    // The rejected candidate is kept, with its status, reason and figures.
    assert!(state.join("models/candidates/v3.safetensors").exists());
    assert!(!state.join("models/v3.safetensors").exists());
    let reg = RegistryReader::open(&state).unwrap();
    let v3 = reg.get(3).unwrap().unwrap();
    assert_eq!(v3.status, Status::Rejected);
    assert!(v3.reason.contains("max_auc_drop"));
    assert_eq!(v3.parent, 2);
    // The journal has the failed validation and the rejection, naming the version kept.
    let text = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    let v = verify_chain(&text, "audit.jsonl", None);
    assert!(v.problem.is_none(), "{:?}", v.problem);
    let records: Vec<&Record> = v.entries.iter().map(|e| &e.body.record).collect();
    assert!(records.iter().any(|r| matches!(
        r,
        Record::Validated {
            round: 3,
            passed: false,
            ..
        }
    )));
    assert!(records.iter().any(|r| matches!(
        r,
        Record::Rejected {
            round: 3,
            version: Some(3),
            current: 2,
            ..
        }
    )));
}
