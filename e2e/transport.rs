//! How models move: each model goes to a silo once (the candidate a silo scored is the next
//! round's base, referred to by digest), updates are fetched from all silos at once, and every
//! round's record says where its time and bytes went.

use serde_json::Value;

use crate::common::{Federation, Options};

/// Committed rounds as `rounds.jsonl` holds them.
fn rounds(f: &Federation) -> Vec<Value> {
    std::fs::read_to_string(f.state_dir().join("rounds.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_silo_gets_each_model_once_and_each_round_records_its_phases_and_bytes() {
    // A model large enough (about 46 k values, 180 kB) that control messages are small beside it.
    let mut f = Federation::start(Options {
        rounds: 4,
        hidden: vec![2048],
        ..Default::default()
    });
    let done = f.expect("finished", |e| e["event"] == "finished");
    assert_eq!(done["rounds_committed"], 4, "{done}");
    let rounds = rounds(&f);
    assert_eq!(rounds.len(), 4);
    for r in &rounds {
        let model = r["update_bytes"].as_f64().unwrap();
        let round = r["round"].as_u64().unwrap();
        for (silo, down) in r["bytes_to_silos"].as_object().unwrap() {
            let down = down.as_f64().unwrap();
            // Round 1 sends the initial model and the candidate; later rounds only the
            // candidate to score (the base is the candidate each silo scored last round).
            let models = if round == 1 { 2.0 } else { 1.0 };
            assert!(
                down > models * model && down < (models + 0.25) * model,
                "round {round}: {silo} was sent {down} bytes for a {model}-byte model"
            );
            let up = r["bytes_from_silos"][silo].as_f64().unwrap();
            assert!(
                up > model && up < 1.25 * model,
                "round {round}: {silo} sent {up} bytes"
            );
        }
        let p = &r["phases"];
        for k in ["collect", "validate", "commit", "train", "fetch"] {
            assert!(
                p[k].as_f64().unwrap() > 0.0,
                "round {round}: phase {k}: {p}"
            );
        }
        // Consecutive phases fit in the round's period (commit to commit).
        if let Some(period) = r["period_seconds"].as_f64() {
            let sum: f64 = ["open", "collect", "aggregate", "validate", "commit"]
                .iter()
                .map(|k| p[*k].as_f64().unwrap())
                .sum();
            assert!(
                sum <= period,
                "round {round}: phases {sum} s in a {period} s period"
            );
        } else {
            assert_eq!(round, 1, "only a run's first commit has no period");
        }
        let silos = r["bytes_to_silos"].as_object().unwrap().len();
        assert_eq!(silos, 3, "{r}");
    }
    // Tensors took the bulk data plane: every silo linked it (and the bytes above count it).
    for silo in ["northeast", "midwest", "west"] {
        let log = f.silo_log(silo);
        assert!(log.contains("bulk data plane linked"), "{silo}: {log}");
    }
    // Dispatch after round 1 sends nothing: every silo held the base.
    assert!(rounds[1..]
        .iter()
        .all(|r| r["phases"]["dispatch"].as_f64().unwrap() < 0.5));
}

/// The candidate digests of a 3-round federation, and its state directory's spill folder.
fn digests(network_extra: &'static str) -> (Vec<String>, Federation) {
    let mut f = Federation::start(Options {
        rounds: 3,
        hidden: vec![512],
        network_extra,
        ..Default::default()
    });
    let done = f.expect("finished", |e| e["event"] == "finished");
    assert_eq!(done["rounds_committed"], 3, "{done}");
    let d = rounds(&f)
        .iter()
        .map(|r| r["digest"].as_str().unwrap().to_string())
        .collect();
    (d, f)
}

#[test]
fn updates_spilled_to_disk_give_the_same_models_bit_for_bit() {
    // Same data, same seed: once with every update held in memory, once with every update
    // spilled to disk as it arrives and combined a slice at a time.
    let (in_memory, _) = digests("");
    let (spilled, f) = digests("spill_above_mb = 0\n");
    assert_eq!(in_memory.len(), 3);
    assert_eq!(spilled, in_memory);
    // The spill folder was used and nothing was left in it.
    let spill = f.state_dir().join("spill");
    assert!(spill.is_dir(), "updates were not spilled");
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0);
}
