//! End-to-end tests of a described model: the built-in text classifier (all-MiniLM-L6-v2
//! with LoRA on its top two layers, prepared by `fedsilo-model`) federated by real processes
//! over mutual TLS, on a slice of the customer reviews (2 silos × 64 reviews, 32 tokens,
//! 2 rounds), with every protection on at once: each silo's record-level DP-SGD on the
//! adapters and the head, silo-level DP noise on the update, and secure aggregation; and the
//! silo's refusals of a swapped model file, an unknown label and a missing column.
//!
//! The model comes from `scripts/ensure-model.sh`, which the test command runs first.

use std::path::{Path, PathBuf};
use std::process::Command;

use fedsilo::model::checkpoint::Checkpoint;
use fedsilo::model::Architecture;

use crate::common::{arg, fedsilo, Federation, Options};

fn model_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{}: the pretrained model is not installed; run scripts/ensure-model.sh",
        dir.display()
    );
    dir
}

/// `rows` reviews of the example's data (review, score), from row `from`.
fn slice(dir: &Path, name: &str, from: usize, rows: usize) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/reviews/data/fine_foods_reviews.csv");
    let mut r = csv::Reader::from_path(&src).unwrap();
    let path = dir.join(format!("{name}.csv"));
    let mut w = csv::Writer::from_path(&path).unwrap();
    w.write_record(["review", "score"]).unwrap();
    for rec in r.records().skip(from).take(rows) {
        let rec = rec.unwrap();
        w.write_record([&rec[1], &rec[2]]).unwrap();
    }
    w.flush().unwrap();
    path
}

/// `fedsilo-model text` for the reviews' columns into `out`, with `extra` arguments.
fn fedsilo_model(out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fedsilo-model"))
        .args(["text", "--model-dir", arg(&model_dir())])
        .args(["--text", "review", "--label", "score"])
        .args(["--classes", "other,great", "--out", arg(out)])
        .args(extra)
        .output()
        .unwrap()
}

/// Prepares the slice's model: (manifest, initial values).
fn prepare(dir: &Path) -> (PathBuf, PathBuf) {
    let out = dir.join("model");
    let lora = [
        "--lora-rank",
        "4",
        "--lora-layers",
        "4,5",
        "--max-length",
        "32",
    ];
    let done = fedsilo_model(&out, &lora);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    // A second run would overwrite what a federation may use: refused.
    let again = fedsilo_model(&out, &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("does not overwrite"));
    (out.join("manifest.toml"), out.join("initial.safetensors"))
}

#[test]
fn a_text_model_federates_with_dp_sgd_silo_level_dp_secure_aggregation_and_personalisation() {
    let work = tempfile::tempdir().unwrap();
    let (manifest, initial) = prepare(work.path());
    let a = slice(work.path(), "retailer-a", 0, 64);
    let b = slice(work.path(), "retailer-b", 64, 64);
    // Each silo's own DP-SGD: per-text clipping and noise, its spend in its own ledger.
    let dp = |name: &str| -> Vec<String> {
        [
            "--dp-clip",
            "1.0",
            "--dp-noise-multiplier",
            "0.8",
            "--dp-ledger",
            arg(&work.path().join(format!("{name}.privacy.jsonl"))),
        ]
        .map(String::from)
        .to_vec()
    };
    let mut f = Federation::start(Options {
        // Retailer b trains without DP-SGD, so it personalises its head; a does not.
        silos: vec![("retailer-a", dp("retailer-a")), ("retailer-b", vec![])],
        min_silos: 2,
        quorum: 2,
        rounds: 2,
        deadline: 300.0,
        data: vec![("retailer-a", a), ("retailer-b", b)],
        manifest: Some((manifest.clone(), model_dir())),
        initial: Some(initial),
        learning_rate: 0.002,
        compare_local: true,
        extra: "personalize_epochs = 2\n",
        policy_extra: "[secure_aggregation]\nthreshold = 2\n[privacy]\nmode = \"distributed\"\nclip_norm = 5.0\nnoise_multiplier = 0.01\n".into(),
        ..Default::default()
    });
    let committed = f.finished_ok();
    assert_eq!(committed.len(), 2, "{committed:?}");
    for c in &committed {
        assert!(
            c["aggregation"]
                .as_str()
                .unwrap()
                .contains("secure aggregation"),
            "{c}"
        );
        assert_eq!(c["privacy"]["mode"], "distributed", "{c}");
    }
    // Both silos scored the candidate on their held-out reviews.
    let scored = &committed[1]["eval"];
    for silo in ["retailer-a", "retailer-b"] {
        let auc = scored[silo]["auc"].as_f64();
        assert!(
            auc.is_some_and(|a| (0.0..=1.0).contains(&a)),
            "{silo}: {scored}"
        );
    }
    // Retailer b also scored the candidate under its own fine-tuned head; retailer a, under
    // DP-SGD, does not fine-tune outside its budget.
    for c in &committed {
        assert!(c["eval"]["retailer-a"]["auc"].as_f64().is_some(), "{c}");
        let mine = c["eval"]["retailer-b"]["personalized"]["auc"].as_f64();
        assert!(mine.is_some_and(|a| (0.0..=1.0).contains(&a)), "{c}");
        assert!(c["eval"]["retailer-a"]["personalized"].is_null(), "{c}");
    }
    // The local-only baseline ran the same trainer at each silo.
    let cmp = f
        .seen()
        .iter()
        .find(|e| e["event"] == "comparison")
        .cloned();
    let rows = cmp
        .as_ref()
        .and_then(|c| c["rows"].as_array())
        .expect("a comparison");
    assert_eq!(rows.len(), 2, "{cmp:?}");
    for r in rows {
        assert!(
            r["local"]["auc"].as_f64().is_some() && r["federated"]["auc"].as_f64().is_some(),
            "{r}"
        );
    }
    // The checkpoint is the manifest's trainable tensors, nothing of the frozen base.
    let ckpt = Checkpoint::load(&f.state_dir().join("models/v2.safetensors")).unwrap();
    let Architecture::Described(d) = &ckpt.spec else {
        panic!("{:?}", ckpt.spec)
    };
    let text = std::fs::read(&manifest).unwrap();
    assert_eq!(d.manifest, fedsilo::model::Digest::of_bytes(&text));
    assert_eq!(ckpt.params.len(), d.layout().len);
    assert!(ckpt.params.len() < 100_000, "{}", ckpt.params.len());
    assert!(f.exit_status().success());
    // Retailer a charged two rounds of DP-SGD to its ledger, as the accountant counts them.
    let path = work.path().join("retailer-a.privacy.jsonl");
    let book = fedsilo::privacy::budget::PrivacyBook::open(&path).unwrap();
    let spent = book.max_spent(1e-5);
    assert!(spent > 0.0 && spent.is_finite(), "retailer-a: ε = {spent}");
    let lines = std::fs::read_to_string(&path).unwrap();
    assert_eq!(lines.lines().count(), 2, "{lines}");
}

/// Starts a silo-node (no coordinator listens: it must fail before connecting) and returns
/// what it printed.
fn silo_refuses(dir: &Path, manifest: &Path, model: &Path, data: &Path) -> String {
    let certs = dir.join("certs");
    if !certs.exists() {
        let (ok, out) = fedsilo(&[
            "certs",
            "init",
            "--out",
            arg(&certs),
            "--coordinator",
            "coordinator",
            "--silo",
            "s1",
        ]);
        assert!(ok, "{out}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_silo-node"))
        .args([
            "--kit",
            arg(&certs.join("s1")),
            "--coordinator",
            "127.0.0.1:9",
            "--once",
        ])
        .args([
            "--data",
            arg(data),
            "--manifest",
            arg(manifest),
            "--model-dir",
            arg(model),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_silo_refuses_a_swapped_model_file_an_unknown_label_and_a_missing_column() {
    let work = tempfile::tempdir().unwrap();
    let (manifest, _) = prepare(work.path());
    let data = slice(work.path(), "s1", 0, 16);
    // The tokenizer swapped for another file: the digest pinned in the manifest differs.
    let swapped = work.path().join("swapped");
    std::fs::create_dir(&swapped).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::os::unix::fs::symlink(model_dir().join(f), swapped.join(f)).unwrap();
    }
    let mut tok = std::fs::read_to_string(model_dir().join("tokenizer.json")).unwrap();
    tok.push(' ');
    std::fs::write(swapped.join("tokenizer.json"), tok).unwrap();
    let said = silo_refuses(work.path(), &manifest, &swapped, &data);
    assert!(
        said.contains("tokenizer.json") && said.contains("not the file the federation trains on"),
        "{said}"
    );
    // A label the manifest does not declare, named with its line.
    let bad = work.path().join("bad.csv");
    std::fs::write(&bad, "review,score\ngood,great\nbad,other\nhmm,Great\n").unwrap();
    let said = silo_refuses(work.path(), &manifest, &model_dir(), &bad);
    assert!(
        said.contains("line 4") && said.contains("`Great`"),
        "{said}"
    );
    // The text column missing.
    std::fs::write(&bad, "text,score\ngood,great\nbad,other\n").unwrap();
    let said = silo_refuses(work.path(), &manifest, &model_dir(), &bad);
    assert!(said.contains("column `review`"), "{said}");
}

/// The CSV described once, in the schema format tabular federations use: `fedsilo-model
/// --schema` writes the same manifest as the columns and classes given by hand, and refuses a
/// schema without text or with a target that is not one value per class.
#[test]
fn a_schema_describes_a_text_models_data_as_it_does_a_tabular_one() {
    let work = tempfile::tempdir().unwrap();
    let from_schema = |name: &str, schema: &str| {
        let path = work.path().join(format!("{name}.toml"));
        std::fs::write(&path, schema).unwrap();
        let out = work.path().join(name);
        let done = Command::new(env!("CARGO_BIN_EXE_fedsilo-model"))
            .args(["text", "--model-dir", arg(&model_dir())])
            .args(["--schema", arg(&path), "--out", arg(&out)])
            .args([
                "--lora-rank",
                "4",
                "--lora-layers",
                "4,5",
                "--max-length",
                "32",
            ])
            .output()
            .unwrap();
        (done, out.join("manifest.toml"))
    };
    let schema = "[target]\ncolumn = \"score\"\nclasses = [\"other\", \"great\"]\n\
                  [[feature]]\ncolumn = \"review\"\nkind = \"text\"\n\
                  [[feature]]\ncolumn = \"stars\"\nkind = \"numeric\"\n";
    let (done, manifest) = from_schema("described", schema);
    let said = String::from_utf8_lossy(&done.stderr).to_string();
    assert!(done.status.success(), "{said}");
    assert!(said.contains("stars not used"), "{said}");
    let (by_hand, _) = prepare(work.path());
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        std::fs::read_to_string(&by_hand).unwrap(),
        "the schema and the flags describe the same model"
    );
    // A binary target with one negative value is the same classes, negative first.
    let binary = schema.replace(
        "classes = [\"other\", \"great\"]",
        "positive = \"great\"\nnegative = [\"other\"]",
    );
    let (done, manifest) = from_schema("binary", &binary);
    assert!(done.status.success());
    assert_eq!(
        std::fs::read_to_string(&manifest).unwrap(),
        std::fs::read_to_string(&by_hand).unwrap()
    );
    for (name, bad, said) in [
        (
            "no-text",
            schema.replace(
                "kind = \"text\"",
                "kind = \"categorical\"\nlevels = [\"a\"]",
            ),
            "no feature has kind = \"text\"",
        ),
        (
            "two-negatives",
            binary.replace("[\"other\"]", "[\"other\", \"meh\"]"),
            "several negative values",
        ),
    ] {
        let (done, manifest) = from_schema(name, &bad);
        let e = String::from_utf8_lossy(&done.stderr).to_string();
        assert!(!done.status.success() && e.contains(said), "{name}: {e}");
        assert!(!manifest.exists());
    }
}

/// A model of an architecture no silo-node knows, trained by each silo's own program (numpy
/// here; PyTorch with PEFT keeps the same contract), federated with secure aggregation: the
/// coordinator combines its tensors by the manifest alone, and the silos score it themselves.
#[test]
fn an_external_program_federates_a_model_of_its_own_architecture() {
    let work = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/trainers/numpy_bow.py");
    let model = work.path().join("bow");
    let made = Command::new("python3")
        .arg(&script)
        .args([
            "--init",
            arg(&model),
            "--text",
            "review",
            "--label",
            "score",
        ])
        .args(["--classes", "other,great", "--buckets", "256"])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let a = slice(work.path(), "retailer-a", 0, 64);
    let b = slice(work.path(), "retailer-b", 64, 64);
    let program = ["--trainer", "python3", "--trainer-arg", arg(&script)]
        .map(String::from)
        .to_vec();
    let mut f = Federation::start(Options {
        silos: vec![("retailer-a", program.clone()), ("retailer-b", program)],
        min_silos: 2,
        quorum: 2,
        rounds: 3,
        data: vec![("retailer-a", a), ("retailer-b", b)],
        manifest: Some((model.join("manifest.toml"), model.clone())),
        initial: Some(model.join("initial.safetensors")),
        learning_rate: 0.5,
        compare_local: true,
        policy_extra: "[secure_aggregation]\nthreshold = 2\n".into(),
        ..Default::default()
    });
    let committed = f.finished_ok();
    assert_eq!(committed.len(), 3, "{committed:?}");
    for silo in ["retailer-a", "retailer-b"] {
        let auc = committed[2]["eval"][silo]["auc"].as_f64();
        assert!(
            auc.is_some_and(|a| (0.0..=1.0).contains(&a)),
            "{silo}: {}",
            committed[2]
        );
    }
    assert!(f.seen().iter().any(|e| e["event"] == "comparison"));
    let ckpt = Checkpoint::load(&f.state_dir().join("models/v3.safetensors")).unwrap();
    let Architecture::Described(d) = &ckpt.spec else {
        panic!("{:?}", ckpt.spec)
    };
    assert_eq!(d.architecture, "example.bow-softmax");
    assert_eq!(ckpt.params.len(), 256 * 2 + 2);
    assert!(f.exit_status().success());
}

/// `rows` job titles with their holder's income in thousands (`e2e/fixtures/job_titles.csv`),
/// from row `from`.
fn incomes(dir: &Path, name: &str, from: usize, rows: usize) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/fixtures/job_titles.csv");
    let text = std::fs::read_to_string(src).unwrap();
    let mut lines = text.lines();
    let mut out = format!("{}\n", lines.next().unwrap());
    for l in lines.skip(from).take(rows) {
        out.push_str(l);
        out.push('\n');
    }
    let path = dir.join(format!("{name}.csv"));
    std::fs::write(&path, out).unwrap();
    path
}

/// A regression federated end to end: `fedsilo-model --regression` writes a one-output
/// manifest, two silos fine-tune it on job titles against incomes, and every figure the
/// federation keeps — rounds, the gate, the local-only comparison, the registry — is the
/// regression's (R², mean absolute error, squared-error loss), never a classifier's.
///
/// Bank b starts without the model's files: the coordinator (`[model] files`) sends them
/// once, and bank b checks each against its own manifest before it loads the model.
#[test]
fn a_text_regression_federates_and_is_judged_by_its_r2() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("model");
    let done = Command::new(env!("CARGO_BIN_EXE_fedsilo-model"))
        .args(["text", "--model-dir", arg(&model_dir())])
        .args(["--text", "job_title", "--label", "income_k", "--regression"])
        .args(["--target-mean", "80", "--target-std", "50"])
        .args([
            "--lora-rank",
            "4",
            "--lora-layers",
            "4,5",
            "--max-length",
            "16",
        ])
        .args(["--out", arg(&out)])
        .output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let manifest = out.join("manifest.toml");
    let task = fedsilo::model::manifest::Manifest::load(&manifest)
        .unwrap()
        .task;
    assert_eq!(
        task,
        fedsilo::model::manifest::Task::Regression {
            mean: 80.0,
            std: 50.0
        }
    );
    let mut f = Federation::start(Options {
        silos: vec![("bank-a", vec![]), ("bank-b", vec![])],
        min_silos: 2,
        quorum: 2,
        rounds: 2,
        deadline: 300.0,
        data: vec![
            ("bank-a", incomes(work.path(), "bank-a", 0, 128)),
            ("bank-b", incomes(work.path(), "bank-b", 128, 128)),
        ],
        manifest: Some((manifest.clone(), model_dir())),
        model_files: Some(model_dir()),
        model_dirs: vec![("bank-b", work.path().join("bank-b-models"))],
        initial: Some(out.join("initial.safetensors")),
        learning_rate: 0.005,
        compare_local: true,
        // The gate's drop rules read R² for a regression.
        policy_extra: "[validation]\nmax_auc_drop = 1.0\nmax_silo_auc_drop = 1.0\n".into(),
        ..Default::default()
    });
    let committed = f.finished_ok();
    assert_eq!(committed.len(), 2, "{committed:?}");
    // Bank b received the three files, once; bank a had them.
    let sent: Vec<serde_json::Value> = f
        .seen()
        .iter()
        .filter(|e| e["event"] == "model_files_sent")
        .cloned()
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["silo"], "bank-b", "{sent:?}");
    let pinned = fedsilo::model::manifest::Manifest::load(&manifest).unwrap();
    assert_eq!(
        sent[0]["files"].as_array().unwrap().len(),
        pinned.assets.len()
    );
    for a in &pinned.assets {
        let got = work.path().join("bank-b-models").join(&a.name);
        assert_eq!(
            fedsilo::model::files::sha256_file(&got).unwrap(),
            a.sha256,
            "{}",
            a.name
        );
    }
    let regression_figures = |m: &serde_json::Value, what: &str| {
        let (r2, mae, loss) = (m["r2"].as_f64(), m["mae"].as_f64(), m["loss"].as_f64());
        assert!(r2.is_some_and(|r| r.is_finite() && r <= 1.0), "{what}: {m}");
        // Squared error is the loss: at least the absolute error squared (Jensen).
        let (mae, loss) = (mae.unwrap(), loss.unwrap());
        assert!(mae > 0.0 && loss >= mae * mae * (1.0 - 1e-9), "{what}: {m}");
        assert!(m["auc"].is_null() && m["accuracy"].is_null(), "{what}: {m}");
    };
    for c in &committed {
        for silo in ["bank-a", "bank-b"] {
            regression_figures(&c["eval"][silo], silo);
        }
    }
    let cmp = f
        .seen()
        .iter()
        .find(|e| e["event"] == "comparison")
        .cloned()
        .expect("a comparison");
    let rows = cmp["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{cmp}");
    for r in rows {
        regression_figures(&r["local"], "local only");
        regression_figures(&r["federated"], "federated");
        eprintln!(
            "{}: R² local {} federated {}; MAE local {} federated {} (k$)",
            r["silo"],
            r["local"]["r2"],
            r["federated"]["r2"],
            r["local"]["mae"],
            r["federated"]["mae"]
        );
    }
    assert!(f.exit_status().success());
    // The gate compared the two versions' R² at both silos (were it reading AUC, which a
    // regression has none of, no silo would have scored both).
    let journal = std::fs::read_to_string(f.state_dir().join("audit.jsonl")).unwrap();
    assert!(
        journal.lines().any(|l| l.contains("\"validated\"")
            && l.contains("passed the validation rules on 2 silo(s)")),
        "{journal}"
    );
    let (ok, list) = fedsilo(&["models", "list", "--state-dir", arg(&f.state_dir())]);
    assert!(ok && list.contains("R²") && !list.contains("AUC"), "{list}");
    let (ok, show) = fedsilo(&["models", "show", "2", "--state-dir", arg(&f.state_dir())]);
    assert!(
        ok && show.contains("R² ") && show.contains("MAE "),
        "{show}"
    );
}

/// A silo that lacks the model's files, under a coordinator that holds none to send, is
/// blocked with what to do — not left waiting — and the federation goes on without it.
#[test]
fn a_silo_without_the_models_files_is_blocked_when_none_can_be_sent() {
    let work = tempfile::tempdir().unwrap();
    let (manifest, initial) = prepare(work.path());
    let mut f = Federation::start(Options {
        silos: vec![("retailer-a", vec![]), ("retailer-b", vec![])],
        min_silos: 1,
        quorum: 1,
        rounds: 1,
        deadline: 300.0,
        data: vec![
            ("retailer-a", slice(work.path(), "retailer-a", 0, 32)),
            ("retailer-b", slice(work.path(), "retailer-b", 32, 32)),
        ],
        manifest: Some((manifest, model_dir())),
        model_dirs: vec![("retailer-b", work.path().join("empty"))],
        initial: Some(initial),
        learning_rate: 0.002,
        // Retailer a starts once b is blocked: the one round cannot end before b's check.
        held_back: vec!["retailer-a"],
        ..Default::default()
    });
    let blocked = f.expect("retailer-b blocked", |e| {
        e["event"] == "silo_blocked" && e["silo"] == "retailer-b"
    });
    f.start_held_back().unwrap();
    let why = blocked["reason"].as_str().unwrap();
    assert!(
        why.contains("--model-dir") && why.contains("[model] files"),
        "{why}"
    );
    let committed = f.finished_ok();
    assert_eq!(committed.len(), 1);
    assert_eq!(
        committed[0]["participants"],
        serde_json::json!(["retailer-a"])
    );
}

/// A text model deployed by policy: the silo keeps the version the federation committed and
/// scores reviews it has never seen, without their label, with it — the same scores whichever
/// silo of the same version scores them.
#[test]
fn a_deployed_text_model_scores_unlabelled_reviews_at_the_silo() {
    let work = tempfile::tempdir().unwrap();
    let (manifest, initial) = prepare(work.path());
    let a = slice(work.path(), "retailer-a", 0, 48);
    let b = slice(work.path(), "retailer-b", 48, 48);
    let deployed = work.path().join("deployed");
    let deploy = |name: &str| crate::common::deploy_dir(&deployed, name);
    let mut f = Federation::start(Options {
        silos: vec![
            ("retailer-a", deploy("retailer-a")),
            ("retailer-b", deploy("retailer-b")),
        ],
        min_silos: 2,
        quorum: 2,
        rounds: 1,
        deadline: 300.0,
        data: vec![("retailer-a", a), ("retailer-b", b)],
        manifest: Some((manifest.clone(), model_dir())),
        initial: Some(initial),
        learning_rate: 0.002,
        silos_exit_with_coordinator: false,
        coordinator_args: vec!["--serve".into()],
        policy_extra: "[deployment]\nauto_deploy = true\n".into(),
        ..Default::default()
    });
    let ordered = f.expect("v1 ordered by policy", |e| {
        e["event"] == "deployment_ordered" && e["version"] == 1
    });
    assert_eq!(ordered["by"], "policy auto_deploy", "{ordered}");
    for silo in ["retailer-a", "retailer-b"] {
        f.since(0, "v1 deployed", |e| {
            e["event"] == "silo_deployed" && e["silo"] == silo && e["version"] == 1
        });
    }

    // New reviews, their label column dropped.
    let fresh = slice(work.path(), "fresh", 200, 12);
    let unlabelled = work.path().join("unlabelled.csv");
    let mut r = csv::Reader::from_path(&fresh).unwrap();
    let mut w = csv::Writer::from_path(&unlabelled).unwrap();
    w.write_record(["id", "review"]).unwrap();
    for (i, rec) in r.records().enumerate() {
        w.write_record([i.to_string().as_str(), &rec.unwrap()[0]])
            .unwrap();
    }
    w.flush().unwrap();
    let score = |silo: &str| {
        let out = work.path().join(format!("{silo}-scores.csv"));
        let o = Command::new(env!("CARGO_BIN_EXE_silo-node"))
            .args(["score", "--kit"])
            .arg(f.dir.path().join("certs").join(silo))
            .arg("--deploy-dir")
            .arg(work.path().join("deployed").join(silo))
            .args([
                "--manifest",
                arg(&manifest),
                "--model-dir",
                arg(&model_dir()),
            ])
            .args(["--in", arg(&unlabelled), "--out", arg(&out)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut r = csv::Reader::from_path(&out).unwrap();
        assert_eq!(
            r.headers().unwrap().iter().collect::<Vec<_>>(),
            [
                "id",
                "review",
                "p_great",
                "predicted",
                "model_version",
                "model_digest"
            ]
        );
        r.records().map(|x| x.unwrap()).collect::<Vec<_>>()
    };
    let a = score("retailer-a");
    let b = score("retailer-b");
    assert_eq!(a.len(), 12);
    for (x, y) in a.iter().zip(&b) {
        let p: f64 = x[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&p), "{x:?}");
        assert!(["other", "great"].contains(&&x[3]), "{x:?}");
        assert_eq!(&x[4], "1");
        // One version, one model: both silos score alike.
        assert_eq!(x, y);
    }
    // Scored with --schema instead: refused, saying what to give.
    let o = Command::new(env!("CARGO_BIN_EXE_silo-node"))
        .args(["score", "--kit"])
        .arg(f.dir.path().join("certs").join("retailer-a"))
        .arg("--deploy-dir")
        .arg(work.path().join("deployed").join("retailer-a"))
        .args(["--schema", arg(&manifest)])
        .args([
            "--in",
            arg(&unlabelled),
            "--out",
            arg(&work.path().join("x.csv")),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && said.contains("give --manifest"),
        "{said}"
    );
    f.coordinator().signal("TERM").unwrap();
    f.exit_status();
}
