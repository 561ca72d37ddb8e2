//! End-to-end tests of the fine-tuning features on the churn federation (real processes):
//! FedProx's proximal term reaches the silos and holds their local models near the global one.

use crate::common::{Federation, Options};
use serde_json::Value;

/// The committed rounds of the default churn federation with `plan` lines appended to the
/// federation file's `[plan]` table.
fn run(plan: &'static str) -> Vec<Value> {
    let mut f = Federation::start(Options {
        extra: plan,
        ..Default::default()
    });
    let fin = f.expect("finished", |e| e["event"] == "finished");
    assert!(fin["error"].is_null(), "{fin}");
    assert!(f.exit_status().success());
    f.committed().into_iter().cloned().collect()
}

fn mean_norm(round: &Value) -> f64 {
    let norms = round["update_norms"].as_object().unwrap();
    norms.values().map(|v| v.as_f64().unwrap()).sum::<f64>() / norms.len() as f64
}

#[test]
fn fedprox_keeps_local_updates_closer_to_the_global_model() {
    let plain = run("");
    let prox = run("prox_mu = 1.0\n");
    assert_eq!((plain.len(), prox.len()), (3, 3));
    let (a, b) = (mean_norm(&plain[0]), mean_norm(&prox[0]));
    println!("round 1 mean update norm: plain SGD {a:.4}, FedProx mu = 1 {b:.4}");
    assert!(b < 0.9 * a, "FedProx {b} should be well below plain {a}");
    // A bad μ is refused before anything starts.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("federation.toml");
    let text = testkit::sandbox::FederationFile {
        extra: "prox_mu = -1\n".into(),
        ..testkit::sandbox::FederationFile::new(&crate::common::example("schema.toml"))
    }
    .render();
    std::fs::write(&cfg, text).unwrap();
    let (ok, out) = crate::common::fedsilo(&["coordinator", "--config", crate::common::arg(&cfg)]);
    assert!(!ok && out.contains("plan.prox_mu"), "{out}");
}

/// Mean bytes a silo sent per round, and the example-weighted held-out AUC of the last round.
fn bytes_and_auc(rounds: &[Value]) -> (f64, f64) {
    let mut sent = Vec::new();
    for r in rounds {
        for b in r["bytes_from_silos"].as_object().unwrap().values() {
            sent.push(b.as_f64().unwrap());
        }
    }
    let last = rounds.last().unwrap();
    (
        sent.iter().sum::<f64>() / sent.len() as f64,
        crate::common::weighted_score(last),
    )
}

#[test]
fn compressed_updates_cost_fewer_bytes_and_about_the_same_auc() {
    let (plain_bytes, plain_auc) = bytes_and_auc(&run(""));
    println!("scheme      bytes/silo/round  ratio   AUC");
    println!("none        {plain_bytes:>16.0}  1.000   {plain_auc:.4}");
    for (scheme, max_ratio, max_auc_loss) in [
        ("int8", 0.5, 0.01),
        ("int4", 0.4, 0.03),
        ("top-k:0.1", 0.4, 0.1),
    ] {
        let rounds = run(Box::leak(
            format!("compression = \"{scheme}\"\n").into_boxed_str(),
        ));
        let (bytes, auc) = bytes_and_auc(&rounds);
        let ratio = bytes / plain_bytes;
        println!("{scheme:<11} {bytes:>16.0}  {ratio:.3}   {auc:.4}");
        assert!(ratio < max_ratio, "{scheme}: {ratio} of the plain bytes");
        assert!(
            auc > plain_auc - max_auc_loss,
            "{scheme}: AUC {auc} vs plain {plain_auc}"
        );
    }
}

fn python_trainer(extra: &[&str]) -> Vec<String> {
    let script = crate::common::example("../trainers/mlp_trainer.py");
    let mut args = vec![
        "--trainer".to_string(),
        "python3".into(),
        "--trainer-arg".into(),
        script.display().to_string(),
    ];
    for a in extra {
        args.push("--trainer-arg".into());
        args.push(a.to_string());
    }
    args
}

/// Silos training with an external Python program: a well-behaved one takes part like any
/// other; one writing NaNs is refused each round with the reason, and keeps serving.
#[test]
fn external_trainers_take_part_and_a_broken_one_is_refused_while_its_silo_stays_up() {
    let mut f = Federation::start(Options {
        silos: vec![
            ("northeast", python_trainer(&[])),
            ("midwest", python_trainer(&["--fail-with", "nan"])),
            ("west", vec![]),
        ],
        quorum: 2,
        ..Default::default()
    });
    let committed = f.finished_ok();
    assert_eq!(committed.len(), 3);
    for r in &committed {
        let who = r["participants"].to_string();
        assert!(who.contains("northeast") && !who.contains("midwest"), "{r}");
        let why = r["missing"].to_string();
        assert!(why.contains("midwest") && why.contains("NaN"), "{why}");
    }
    let auc = crate::common::weighted_score(&committed[2]);
    println!("held-out AUC after 3 rounds with a Python-trained silo: {auc:.4}");
    assert!(auc > 0.75, "{auc}");
    // The refusing silo never went down: it scored every candidate.
    assert!(committed[2]["eval"]["midwest"]["auc"].as_f64().is_some());
}

fn pretrain(hidden: &str, out: &std::path::Path) {
    pretrain_on("churn", "data/south.csv", hidden, out)
}

fn pretrain_on(example: &str, data: &str, hidden: &str, out: &std::path::Path) {
    use crate::common::{arg, example_in, fedsilo_pretrain};
    let (data, schema) = (
        example_in(example, data),
        example_in(example, "schema.toml"),
    );
    let (made, said) = fedsilo_pretrain(&[
        "--data",
        arg(&data),
        "--schema",
        arg(&schema),
        "--hidden",
        hidden,
        "--epochs",
        "10",
        "--out",
        arg(out),
    ]);
    assert!(made, "{said}");
}

/// Pretrained centrally on one region, fine-tuned federatedly on the other three: version 0
/// is the pretrained model exactly, recorded as such, and the first federated round starts
/// far ahead of a random start. A pretrained file of another architecture is refused.
#[test]
fn a_federation_fine_tunes_a_pretrained_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pretrained.safetensors");
    pretrain("16", &file);
    let three = vec![("northeast", vec![]), ("midwest", vec![]), ("west", vec![])];
    let start = |initial: Option<std::path::PathBuf>| {
        let mut f = Federation::start(Options {
            silos: three.clone(),
            initial,
            ..Default::default()
        });
        let rounds = f.finished_ok();
        (f, rounds)
    };
    let (_, random) = start(None);
    let (f, tuned) = start(Some(file.clone()));
    let v0 =
        fedsilo::model::checkpoint::Checkpoint::load(&f.state_dir().join("models/v0.safetensors"))
            .unwrap();
    let pre = fedsilo::model::tensor_file::TensorSet::read(&file)
        .unwrap()
        .to_layout(&v0.spec.layout(), "pretrained")
        .unwrap();
    assert_eq!(v0.params, pre, "version 0 is the pretrained model");
    let (ok, models) = crate::common::fedsilo(&[
        "models",
        "show",
        "0",
        "--state-dir",
        crate::common::arg(&f.state_dir()),
    ]);
    assert!(ok && models.contains("pretrained"), "{models}");
    let (a_random, a_tuned) = (
        crate::common::weighted_score(&random[0]),
        crate::common::weighted_score(&tuned[0]),
    );
    println!("round 1 held-out AUC: random start {a_random:.4}, pretrained start {a_tuned:.4}");
    assert!(a_tuned > a_random + 0.02, "{a_tuned} vs {a_random}");
    // Another architecture: refused at start, naming the tensor.
    let wrong = dir.path().join("wrong.safetensors");
    pretrain("8", &wrong);
    let cfg = dir.path().join("federation.toml");
    let text = testkit::sandbox::FederationFile {
        initial: Some(wrong),
        ..testkit::sandbox::FederationFile::new(&crate::common::example("schema.toml"))
    }
    .render();
    std::fs::write(&cfg, text).unwrap();
    let (ok, out) = crate::common::fedsilo(&["coordinator", "--config", crate::common::arg(&cfg)]);
    assert!(
        !ok && out.contains("model.initial") && out.contains("dense0"),
        "{out}"
    );
}

/// FedPer-style personalisation: every silo reports its personalised model's figures beside
/// the global model's, every round.
#[test]
fn silos_report_personalised_metrics_beside_the_global_ones() {
    let rounds = run("personalize_epochs = 3\n");
    println!("silo        global AUC  personalised AUC (round 3)");
    for r in &rounds {
        for (silo, m) in r["eval"].as_object().unwrap() {
            let g = m["auc"].as_f64().unwrap();
            let p = m["personalized"]["auc"].as_f64();
            assert!(p.is_some_and(|p| p.is_finite()), "{silo}: {m}");
            if r["round"] == 3 {
                println!("{silo:<11} {g:>10.4}  {:>16.4}", p.unwrap_or_default());
            }
        }
    }
    // Without it, nothing personalised is reported.
    let plain = run("");
    assert!(plain[0]["eval"]["west"]["personalized"].is_null());
}

/// LoRA: each round moves only the adapters (asserted on the bytes each silo sends), and each
/// version is the frozen base with the adapters merged in, keeping the adapters.
#[test]
fn lora_rounds_send_only_adapters_and_versions_are_merged_models() {
    let (full_bytes, full_auc) = bytes_and_auc(&run(""));
    let mut f = Federation::start(Options {
        extra: "[plan.lora]\nrank = 2\nlayers = [0]\nalpha = 4.0\n",
        ..Default::default()
    });
    let rounds = f.finished_ok();
    assert_eq!(rounds.len(), 3);
    let (bytes, auc) = bytes_and_auc(&rounds);
    // The test model is 22-16-1: 385 parameters, 1540 bytes a round; rank-2 adapters on the
    // first layer are 2·(22 + 16) = 76 values, 304 bytes, plus the report and framing.
    println!("full: {full_bytes:.0} bytes/silo/round, AUC {full_auc:.4}; LoRA r=2: {bytes:.0}, AUC {auc:.4}");
    // Everything else a silo sends (report, scores, heartbeats) is the same in both runs, so
    // the saving must be about the 1540 − 304 bytes the adapters leave out (at least 70 % of it,
    // for heartbeat jitter).
    assert!(
        full_bytes - bytes > 0.7 * (1540.0 - 304.0),
        "{bytes} bytes against {full_bytes}: more than the adapters moved"
    );
    assert!(auc > 0.7, "{auc}");
    // Version 3 is version 0 with its adapters merged in.
    use fedsilo::model::checkpoint::Checkpoint;
    use fedsilo::model::lora::{adapters_from_hex, Adapters, LoraPlan, ADAPTERS_KEY};
    let load =
        |v: u32| Checkpoint::load(&f.state_dir().join(format!("models/v{v}.safetensors"))).unwrap();
    let (v0, v3) = (load(0), load(3));
    let adapters = adapters_from_hex(&v3.metadata[ADAPTERS_KEY]).unwrap();
    let plan = LoraPlan {
        rank: 2,
        layers: vec![0],
        alpha: Some(4.0),
    };
    let layout = Adapters::new(v0.spec.mlp().unwrap(), &plan).unwrap();
    assert_eq!(adapters.len(), 76);
    assert_eq!(layout.merge(&v0.params, &adapters), v3.params);
    // The other layers are the base's, untouched.
    assert_eq!(v3.params[22 * 16..], v0.params[22 * 16..]);
    // Restarted with another LoRA plan, the coordinator refuses to go on from version 3
    // rather than silently train fresh adapters on it.
    assert!(f.exit_status().success());
    let cfg = f.dir.path().join("federation.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("rank = 2", "rank = 3");
    std::fs::write(&cfg, text).unwrap();
    let (ok, out) = crate::common::fedsilo(&["coordinator", "--config", crate::common::arg(&cfg)]);
    assert!(!ok && out.contains("the LoRA plan changed"), "{out}");
}

/// The loans example end to end: pretrained centrally on the public-like slice no lender
/// holds, then fine-tuned with LoRA adapters by the four regional lenders. The first round
/// starts from the pretrained model's quality and the adapters are what moves.
#[test]
fn the_loans_example_pretrains_on_the_public_slice_and_fine_tunes_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("loans.safetensors");
    pretrain_on("loans", "data/public.csv", "16", &file);
    let mut f = Federation::start(Options {
        example: "loans",
        silos: vec![
            ("northeast", vec![]),
            ("midwest", vec![]),
            ("south", vec![]),
            ("west", vec![]),
        ],
        min_silos: 4,
        initial: Some(file),
        extra: "[plan.lora]\nrank = 4\nlayers = [0]\nalpha = 8.0\n",
        ..Default::default()
    });
    let rounds = f.finished_ok();
    assert_eq!(rounds.len(), 3);
    let (bytes, auc) = bytes_and_auc(&rounds);
    let first = crate::common::weighted_score(&rounds[0]);
    println!("loans, pretrained + LoRA r=4: round 1 AUC {first:.4}, round 3 {auc:.4}, {bytes:.0} bytes/silo/round");
    // The model is 36-16-1 (609 values, 2436 bytes); rank-4 adapters on the first layer are
    // 4·(36 + 16) = 208 values, 832 bytes. A silo sends well under the full update alone.
    assert!(
        bytes < 0.6 * 2436.0,
        "{bytes} bytes a round: more than the adapters moved"
    );
    assert!(
        first > 0.75,
        "round 1 AUC {first}: the pretrained start is lost"
    );
}

/// A schema that describes a text model's data (a class list of three) cannot start an MLP
/// federation: the coordinator says why, naming the file.
#[test]
fn an_mlp_federation_refuses_a_schema_of_several_classes_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.toml");
    std::fs::write(
        &schema,
        "[target]\ncolumn = \"topic\"\nclasses = [\"billing\", \"outage\", \"other\"]\n\
         [[feature]]\ncolumn = \"ticket\"\nkind = \"text\"\n\
         [[feature]]\ncolumn = \"tenure\"\nkind = \"numeric\"\n",
    )
    .unwrap();
    let cfg = dir.path().join("federation.toml");
    std::fs::write(
        &cfg,
        testkit::sandbox::FederationFile::new(&schema).render(),
    )
    .unwrap();
    let (ok, out) = crate::common::fedsilo(&["coordinator", "--config", crate::common::arg(&cfg)]);
    assert!(
        !ok && out.contains("model.schema") && out.contains("3 classes"),
        "{out}"
    );
}
