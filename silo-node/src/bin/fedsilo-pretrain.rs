//! `fedsilo-pretrain`: trains the built-in MLP centrally on one dataset (public data, or a
//! pooled slice a consortium may share) and writes it as the safetensors file a federation
//! starts from (`[model] initial` in the federation file).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fedsilo::data::Schema;
use fedsilo::model::tensor_file::TensorSet;
use fedsilo::model::{initial_params, ModelSpec};
use ndarray::Array1;
use silo_node::data::{encode, local_stats, scaling_from, Dataset};
use silo_node::train::{evaluate, train, Mlp, Sgd};

/// Pretrain the built-in model on one CSV and write it for a federation to fine-tune.
///
/// The architecture must match the federation's (`[model] hidden`); the file holds one F32
/// tensor per layer (`dense{i}.weight` [in, out], `dense{i}.bias` [out]), as any framework can
/// write it.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The training data (CSV with a header row, columns as the schema declares).
    #[arg(long)]
    data: PathBuf,
    /// The federation's schema.
    #[arg(long)]
    schema: PathBuf,
    /// Hidden layer widths, as in the federation file, e.g. `--hidden 32` (none: logistic).
    #[arg(long, value_delimiter = ',')]
    hidden: Vec<usize>,
    /// Passes over the data.
    #[arg(long, default_value_t = 20)]
    epochs: u32,
    /// Mini-batch size.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// SGD step size.
    #[arg(long, default_value_t = 0.05)]
    learning_rate: f32,
    /// Seed of the initial weights, the shuffling and the held-out split.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Fraction of rows held out to report the pretrained model's AUC.
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// Where to write the model.
    #[arg(long)]
    out: PathBuf,
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
    let schema = Schema::load(&cli.schema)?;
    let spec = ModelSpec {
        inputs: schema.encoded_width(),
        hidden: cli.hidden.clone(),
    };
    spec.validate()
        .map_err(|e| anyhow::anyhow!("--hidden {:?}: {e}", cli.hidden))?;
    let data = Dataset::load(&cli.data, &schema, cli.holdout, cli.seed)?;
    let scaling = scaling_from(&local_stats(&schema, &data.train));
    let (x, y) = (
        encode(&schema, &data.train, &scaling),
        Array1::from(data.train.labels.clone()),
    );
    let mlp = Mlp::new(&spec);
    let mut params = initial_params(&spec, cli.seed);
    let sgd = Sgd {
        epochs: cli.epochs,
        batch_size: cli.batch_size.max(1),
        learning_rate: cli.learning_rate,
        prox_mu: 0.0,
        train_from: 0,
        seed: cli.seed,
    };
    let out = train(&mlp, &mut params, &x, &y, sgd);
    let held = evaluate(
        &mlp,
        &params,
        &encode(&schema, &data.holdout, &scaling),
        &Array1::from(data.holdout.labels.clone()),
    );
    let auc = held.auc.map_or("n/a".to_string(), |a| format!("{a:.4}"));
    let metadata = HashMap::from([
        (
            "fedsilo.pretrained.data".to_string(),
            cli.data.display().to_string(),
        ),
        (
            "fedsilo.pretrained.rows".to_string(),
            data.train.len().to_string(),
        ),
        ("fedsilo.pretrained.holdout_auc".to_string(), auc.clone()),
        ("fedsilo.spec".to_string(), spec.describe()),
    ]);
    let set = TensorSet::from_layout(&spec.layout(), &params);
    set.write_like(&set.values, &cli.out, metadata)?;
    println!(
        "pretrained `{}` on {} rows of {} for {} epochs: train loss {:.4}, held-out AUC {auc} ({} rows)\nwrote {}",
        spec.describe(),
        data.train.len(),
        cli.data.display(),
        cli.epochs,
        out.last_epoch_loss,
        data.holdout.len(),
        cli.out.display()
    );
    Ok(())
}
