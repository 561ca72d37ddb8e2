//! `fedsilo-pretrain`: trains the built-in MLP centrally on one dataset (public data, or a
//! pooled slice a consortium may share) and writes it as the safetensors file a federation
//! starts from (`[model] initial` in the federation file). With `--pooled` it trains the
//! pooled reference instead: the same trainer on the union of several silos' training rows,
//! split as each silo splits its own — the non-private figure the end-of-run comparison sets
//! beside the federated one (`--pooled-reference`), computable only where all the data is on
//! one machine (the examples).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Parser;
use fedsilo::data::Schema;
use fedsilo::federation::FederationConfig;
use fedsilo::model::tensor_file::TensorSet;
use fedsilo::model::{initial_params, ModelSpec};
use ndarray::Array1;
use silo_node::data::{encode, local_stats, scaling_from, Dataset, Split};
use silo_node::train::{evaluate, train, Mlp, Sgd};

/// Pretrain the built-in model on one CSV and write it for a federation to fine-tune; or, with
/// --pooled, train the non-private reference a federation is compared with.
///
/// The architecture must match the federation's (`[model] hidden`); the file holds one F32
/// tensor per layer (`dense{i}.weight` [in, out], `dense{i}.bias` [out]), as any framework can
/// write it.
///
/// With --pooled, each --data is one silo's CSV, split as silo-node splits it (--holdout,
/// --split-seed); the model trains on the union of their training rows — what the silos could
/// reach if they pooled their data, which a real federation cannot do — and the coordinator
/// shows it in its end-of-run comparison (`fedsilo coordinator --pooled-reference FILE`).
/// --federation takes the architecture, seed, starting model (`model.initial`) and training
/// budget (rounds × epochs, batch size, learning rate) from the federation file, so the
/// reference trains as the silos do; a LoRA federation's reference trains the whole model.
///
/// Examples:
///   fedsilo-pretrain --data public.csv --schema schema.toml --hidden 32 --out pretrained.safetensors
///   fedsilo-pretrain --pooled --federation examples/churn/federation.toml \
///       --data examples/churn/data/south.csv --data examples/churn/data/west.csv --out pooled.safetensors
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The training data (CSV with a header row, columns as the schema declares); with
    /// --pooled, repeat it once per silo.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// The federation's schema (default with --federation: its `model.schema`).
    #[arg(long)]
    schema: Option<PathBuf>,
    /// Take the schema, architecture, seed and training budget from this federation file
    /// (flags given as well win).
    #[arg(long)]
    federation: Option<PathBuf>,
    /// Each --data is one silo's CSV: train on the union of their training splits (the
    /// pooled reference) and report each one's held-out AUC.
    #[arg(long)]
    pooled: bool,
    /// Hidden layer widths, as in the federation file, e.g. `--hidden 32` (none: logistic).
    #[arg(long, value_delimiter = ',')]
    hidden: Option<Vec<usize>>,
    /// With --federation: the rounds the budget is counted for, instead of
    /// `federation.rounds` (as `fedsilo coordinator --rounds`).
    #[arg(long, requires = "federation")]
    rounds: Option<u64>,
    /// Passes over the data [default: 20; with --federation, rounds × plan.epochs].
    #[arg(long)]
    epochs: Option<u32>,
    /// Mini-batch size [default: 32, or plan.batch_size].
    #[arg(long)]
    batch_size: Option<usize>,
    /// SGD step size [default: 0.05, or plan.learning_rate].
    #[arg(long)]
    learning_rate: Option<f32>,
    /// Seed of the initial weights and the shuffling (and, without --pooled, of the held-out
    /// split) [default: 7, or model.seed].
    #[arg(long)]
    seed: Option<u64>,
    /// Fraction of rows held out (never trained on) to report the model's AUC; with
    /// --pooled, as silo-node's --holdout.
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// With --pooled: the seed of each silo's train/held-out split, as silo-node's
    /// --split-seed.
    #[arg(long, default_value_t = 1)]
    split_seed: u64,
    /// Where to write the model.
    #[arg(long)]
    out: PathBuf,
}

/// What the model is trained with, after the federation file and the flags.
struct Settings {
    schema: PathBuf,
    /// The federation's pretrained start (`model.initial`): the pooled reference starts there
    /// too, as the federation does.
    initial: Option<PathBuf>,
    hidden: Vec<usize>,
    epochs: u32,
    batch_size: usize,
    learning_rate: f32,
    seed: u64,
}

impl Settings {
    fn of(cli: &Cli) -> anyhow::Result<Self> {
        let fed = match &cli.federation {
            Some(p) => Some(FederationConfig::load(p)?),
            None => None,
        };
        if let Some(f) = &fed {
            if f.model.manifest.is_some() {
                bail!("--federation {}: a model with a manifest is trained by its own trainer; fedsilo-pretrain trains the built-in MLP", f.federation.name);
            }
        }
        let schema = match (
            cli.schema.clone(),
            fed.as_ref().and_then(|f| f.model.schema.clone()),
        ) {
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) => bail!("--schema is needed (or --federation with a `model.schema`)"),
        };
        let plan = fed.as_ref().map(|f| {
            let rounds = cli.rounds.unwrap_or(f.federation.rounds);
            let rounds = u32::try_from(rounds).unwrap_or(u32::MAX);
            (
                f.plan.epochs.saturating_mul(rounds),
                f.plan.batch_size as usize,
                f.plan.learning_rate,
            )
        });
        let epochs = cli.epochs.or(plan.map(|p| p.0)).unwrap_or(20);
        if epochs == 0 {
            bail!("0 passes over the data (with --federation: rounds × plan.epochs, and a serving federation's `rounds` may be 0): give --epochs or --rounds");
        }
        Ok(Self {
            schema,
            initial: fed.as_ref().and_then(|f| f.model.initial.clone()),
            hidden: cli
                .hidden
                .clone()
                .or(fed.as_ref().map(|f| f.model.hidden.clone()))
                .unwrap_or_default(),
            epochs,
            batch_size: cli.batch_size.or(plan.map(|p| p.1)).unwrap_or(32).max(1),
            learning_rate: cli.learning_rate.or(plan.map(|p| p.2)).unwrap_or(0.05),
            seed: cli.seed.or(fed.as_ref().map(|f| f.model.seed)).unwrap_or(7),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fedsilo-pretrain: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let s = Settings::of(cli)?;
    let schema = Schema::load(&s.schema)?;
    let spec = ModelSpec {
        inputs: schema.encoded_width(),
        hidden: s.hidden.clone(),
    };
    spec.validate()
        .map_err(|e| anyhow::anyhow!("--hidden {:?}: {e}", s.hidden))?;
    // Each file split as its silo splits it (pooled), or the one file split with the seed.
    let sets = match (cli.pooled, cli.data.as_slice()) {
        (true, files) => files
            .iter()
            .map(|f| Ok((f, Dataset::load(f, &schema, cli.holdout, cli.split_seed)?)))
            .collect::<anyhow::Result<Vec<_>>>()?,
        (false, [one]) => vec![(one, Dataset::load(one, &schema, cli.holdout, s.seed)?)],
        (false, _) => bail!("several --data files are several silos' data: add --pooled"),
    };
    let mut train_rows = Split::default();
    for (_, d) in &sets {
        train_rows.append(&d.train);
    }
    // Pooled statistics are the federation's own scaling (sums over the silos' training rows).
    let scaling = scaling_from(&local_stats(&schema, &train_rows));
    let (x, y) = (
        encode(&schema, &train_rows, &scaling),
        Array1::from(train_rows.labels.clone()),
    );
    let mlp = Mlp::new(&spec);
    let mut params = match &s.initial {
        None => initial_params(&spec, s.seed),
        Some(path) => {
            let origin = path.display().to_string();
            let bytes = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("model.initial: reading {origin}: {e}"))?;
            TensorSet::from_bytes(&bytes, &origin)?.to_layout(&spec.layout(), &origin)?
        }
    };
    let sgd = Sgd {
        epochs: s.epochs,
        batch_size: s.batch_size,
        learning_rate: s.learning_rate,
        prox_mu: 0.0,
        train_from: 0,
        seed: s.seed,
    };
    let out = train(&mlp, &mut params, &x, &y, sgd);
    let mut report = String::new();
    let mut aucs = Vec::new();
    for (file, d) in &sets {
        let held = evaluate(
            &mlp,
            &params,
            &encode(&schema, &d.holdout, &scaling),
            &Array1::from(d.holdout.labels.clone()),
        );
        let auc = held.auc.map_or("n/a".to_string(), |a| format!("{a:.4}"));
        let _ = writeln!(
            report,
            "  held-out AUC {auc} ({} rows of {})",
            d.holdout.len(),
            file.display()
        );
        aucs.push(auc);
    }
    let files: Vec<String> = cli.data.iter().map(|p| p.display().to_string()).collect();
    let mut metadata = HashMap::from([
        ("fedsilo.pretrained.data".to_string(), files.join(", ")),
        (
            "fedsilo.pretrained.rows".to_string(),
            train_rows.len().to_string(),
        ),
        (
            "fedsilo.pretrained.holdout_auc".to_string(),
            aucs.join(", "),
        ),
        ("fedsilo.spec".to_string(), spec.describe()),
    ]);
    if cli.pooled {
        metadata.insert("fedsilo.reference".into(), "pooled".into());
    }
    let set = TensorSet::from_layout(&spec.layout(), &params);
    set.write_like(&set.values, &cli.out, metadata)?;
    println!(
        "{} `{}` on {} training rows of {} file(s) for {} epochs: train loss {:.4}\n{report}wrote {}",
        if cli.pooled { "pooled reference" } else { "pretrained" },
        spec.describe(),
        train_rows.len(),
        sets.len(),
        s.epochs,
        out.last_epoch_loss,
        cli.out.display()
    );
    Ok(())
}
