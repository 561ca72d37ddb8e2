//! Customer reviews: four retailers fine-tune all-MiniLM-L6-v2 with LoRA on their customers'
//! reviews, which none may share, under secure aggregation. The run prints, per retailer, the
//! held-out ROC AUC of four models, each trained for the same number of passes over its data:
//!
//! - **head only**: the pretrained encoder frozen, a head trained on the retailer's reviews;
//! - **local LoRA**: LoRA fine-tuning on the retailer's reviews alone (the federation's own
//!   local-only baseline, run by each silo);
//! - **federated**: the federation's model;
//! - **pooled**: LoRA fine-tuning on all four retailers' training reviews together — the
//!   non-private ceiling a real federation cannot compute (here all data is on one machine).
//!
//! The last two are trained in this process with the silo's own trainer
//! ([`silo_node::model_trainers::TextTrainer`]), the federation by real `fedsilo` and `silo-node`
//! processes over mutual TLS.
//!
//!   examples/reviews/run.sh              # 3 rounds
//!   ROUNDS=1 examples/reviews/run.sh

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context};
use fedsilo::compression::Compression;
use fedsilo::model::manifest::Manifest;
use fedsilo::model::tensor_file::TensorSet;
use fedsilo::protocol::TrainPlan;
use serde_json::Value;
use silo_node::model_trainers::scoring::class_metrics;
use silo_node::model_trainers::{Holdout, ModelTrainer, TextTrainer};
use testkit::sandbox::{adapt_federation_file, ExampleRun, Sandbox, SandboxSpec, SiloSpec};

const RETAILERS: [&str; 4] = ["retailer-a", "retailer-b", "retailer-c", "retailer-d"];
/// AdamW's step size and the batch, as in the federation file.
const LEARNING_RATE: f32 = 0.002;
const BATCH: u32 = 16;

fn model_dir(here: &Path) -> PathBuf {
    here.join("../../.cache/models/all-MiniLM-L6-v2")
}

/// `fedsilo-model text` into `out` with the LoRA arguments `lora`.
fn prepare_model(bins_dir: &Path, model: &Path, out: &Path, lora: &[&str]) -> anyhow::Result<()> {
    let done = Command::new(bins_dir.join("fedsilo-model"))
        .args(["text", "--model-dir"])
        .arg(model)
        .args([
            "--text",
            "review",
            "--label",
            "label",
            "--classes",
            "other,great",
        ])
        .args(lora)
        .arg("--out")
        .arg(out)
        .output()
        .context("running fedsilo-model")?;
    ensure!(
        done.status.success(),
        "fedsilo-model: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    Ok(())
}

/// A manifest and its initial values.
fn load(dir: &Path) -> anyhow::Result<(Manifest, Vec<f32>)> {
    let manifest = Manifest::load(&dir.join("manifest.toml"))?;
    let path = dir.join("initial.safetensors");
    let initial = TensorSet::read(&path)?
        .to_layout(&manifest.described().layout(), &path.display().to_string())?;
    Ok((manifest, initial))
}

fn plan(epochs: u32) -> TrainPlan {
    TrainPlan {
        epochs,
        batch_size: BATCH,
        learning_rate: LEARNING_RATE,
        seed: 1,
        noise: None,
        prox_mu: 0.0,
        compression: Compression::None,
        lora: None,
    }
}

/// The labels of a held-out file (class 1: great).
fn labels(path: &Path) -> anyhow::Result<Vec<usize>> {
    let mut r = csv::Reader::from_path(path)?;
    r.records()
        .map(|rec| Ok(usize::from(rec?.get(1) == Some("great"))))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let ExampleRun {
        here,
        rounds,
        work,
        bins,
    } = ExampleRun::prepare("reviews", 3)?;
    let bins_dir = bins
        .silo_node
        .parent()
        .context("binaries' directory")?
        .to_path_buf();
    let model = model_dir(&here);
    ensure!(
        model.join("model.safetensors").is_file(),
        "{}: the pretrained model is not installed; run scripts/ensure-model.sh",
        model.display()
    );
    let data = work.join("data");
    let split = Command::new("python3")
        .arg(here.join("split.py"))
        .arg(&data)
        .status()?;
    ensure!(split.success(), "split.py failed");
    prepare_model(
        &bins_dir,
        &model,
        &work.join("model-lora"),
        &["--lora-rank", "8", "--lora-layers", "4,5"],
    )?;
    prepare_model(
        &bins_dir,
        &model,
        &work.join("model-head"),
        &["--lora-rank", "0"],
    )?;

    // The federation.
    let mut federation: toml::Table = toml::from_str(&adapt_federation_file(
        &here.join("federation.toml"),
        rounds,
    )?)?;
    if let Some(toml::Value::Table(m)) = federation.get_mut("model") {
        let dir = work.join("model-lora");
        m.insert(
            "manifest".into(),
            dir.join("manifest.toml").display().to_string().into(),
        );
        m.insert(
            "initial".into(),
            dir.join("initial.safetensors").display().to_string().into(),
        );
    }
    let silos = RETAILERS
        .iter()
        .map(|r| SiloSpec {
            name: r.to_string(),
            data: data.join(r).join("train.csv"),
            args: vec![
                "--manifest".into(),
                work.join("model-lora/manifest.toml").display().to_string(),
                "--model-dir".into(),
                model.display().to_string(),
                "--holdout-data".into(),
                data.join(r).join("holdout.csv").display().to_string(),
            ],
            ..Default::default()
        })
        .collect();
    println!("reviews: 4 retailers fine-tune all-MiniLM-L6-v2 (LoRA rank 8, top 2 layers), {rounds} rounds, secure aggregation");
    let started = Instant::now();
    let mut sb = Sandbox::start_spec(SandboxSpec {
        bins: &bins,
        dir: &work,
        federation_toml: &toml::to_string(&federation)?,
        policy_toml: &std::fs::read_to_string(here.join("policy.toml"))?,
        schema: &here.join("federation.toml"),
        silos,
        silo_args: &["--once"],
        aggregators: vec![],
        coordinator_args: vec![],
    })?;
    sb.timeout = std::time::Duration::from_secs(3600);
    let finished = loop {
        let e = sb.expect("a round or the end", |e| {
            matches!(
                e["event"].as_str(),
                Some("round_committed" | "round_abandoned" | "finished")
            )
        })?;
        match e["event"].as_str() {
            Some("finished") => break e,
            Some(kind) => println!(
                "  round {}: {kind} after {:.0} s (held-out AUC over all retailers {:.3})",
                e["round"],
                started.elapsed().as_secs_f64(),
                fedsilo::report::weighted_score(&e["eval"]).unwrap_or(f64::NAN)
            ),
            None => {}
        }
    };
    ensure!(
        finished["error"].is_null(),
        "the federation stopped: {}",
        finished["error"]
    );
    let comparison = sb
        .seen()
        .iter()
        .find(|e| e["event"] == "comparison")
        .cloned()
        .context("the federation made no local-only comparison")?;
    let row = |r: &str| -> Option<Value> {
        comparison["rows"]
            .as_array()?
            .iter()
            .find(|x| x["silo"] == r)
            .cloned()
    };
    let exit = sb
        .coordinator()
        .wait_exit(std::time::Duration::from_secs(120))?;
    ensure!(exit.success(), "the coordinator exited with {exit}");

    // The references, with the silo's own trainer, for as many passes as the federation made.
    println!("  references: head only per retailer, LoRA on the pooled reviews ...");
    let epochs = rounds as u32;
    let (head_manifest, head_initial) = load(&work.join("model-head"))?;
    let (lora_manifest, lora_initial) = load(&work.join("model-lora"))?;
    let pooled_train = data.join("pooled-train.csv");
    {
        let mut w = csv::Writer::from_path(&pooled_train)?;
        w.write_record(["review", "label"])?;
        for r in RETAILERS {
            for rec in csv::Reader::from_path(data.join(r).join("train.csv"))?.records() {
                w.write_record(&rec?)?;
            }
        }
        w.flush()?;
    }
    let pooled = TextTrainer::load(
        lora_manifest,
        &model,
        &pooled_train,
        &Holdout::File(data.join(RETAILERS[0]).join("holdout.csv")),
    )?;
    let pooled_params = pooled
        .train(&lora_initial, &plan(epochs), 1, None)?
        .applied_to(&lora_initial);

    println!(
        "\nheld-out ROC AUC per retailer ({rounds} passes over each training set; pooled: the non-private ceiling)"
    );
    println!(
        "{:<11} {:>6} {:>10} {:>11} {:>10} {:>8}",
        "retailer", "train", "head only", "local LoRA", "federated", "pooled"
    );
    let (mut wins, mut compared, mut gap, mut n) = (0, 0, 0.0, 0.0);
    let mut missing = Vec::new();
    for r in RETAILERS {
        let holdout = data.join(r).join("holdout.csv");
        let head = TextTrainer::load(
            head_manifest.clone(),
            &model,
            &data.join(r).join("train.csv"),
            &Holdout::File(holdout.clone()),
        )?;
        let fitted = head.train(&head_initial, &plan(epochs), 1, None)?;
        let head_auc = head
            .evaluate(&fitted.applied_to(&head_initial))?
            .auc
            .unwrap_or(f64::NAN);
        let pooled_auc = class_metrics(
            &pooled.predict(&pooled_params, &holdout)?,
            &labels(&holdout)?,
        )
        .auc
        .unwrap_or(f64::NAN);
        let c = row(r).with_context(|| format!("{r}: not in the comparison"))?;
        let local = c["local"]["auc"].as_f64().unwrap_or(f64::NAN);
        let federated = c["federated"]["auc"].as_f64().unwrap_or(f64::NAN);
        if let Some(why) = c["note"].as_str() {
            missing.push(format!("{r}: {why}"));
        } else {
            compared += 1;
            wins += usize::from(federated > local);
        }
        gap += pooled_auc - federated;
        n += 1.0;
        println!(
            "{r:<11} {:>6} {head_auc:>10.3} {local:>11.3} {federated:>10.3} {pooled_auc:>8.3}",
            fitted.examples
        );
    }
    println!(
        "\nfederated beats local LoRA at {wins} of {compared} retailers compared; pooled − federated, mean: {:+.3} (target: every retailer, within 0.01)",
        gap / n
    );
    for m in &missing {
        println!("  no local-only figure for {m}");
    }
    println!(
        "reviews: done in {:.0} s (state and run report in {})",
        started.elapsed().as_secs_f64(),
        work.join("state").display()
    );
    Ok(())
}
