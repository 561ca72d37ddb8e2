//! `fedsilo-model`: prepares a model for a federation — its manifest (what trains and travels,
//! the task, the data columns, the pinned files) and the initial values of its trainable
//! tensors. The coordinator and every silo are then given the same manifest.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use fedsilo::data::{FeatureKind, Schema};
use fedsilo::model::files::sha256_file;
use fedsilo::model::manifest::{Manifest, Task};
use fedsilo::model::tensor_file::TensorSet;
use fedsilo_text::exchange::trainable;
use fedsilo_text::lora::{LoraSettings, Target};
use silo_node::model_trainers::recipe::{TextRecipe, TEXT_CLASSIFIER};
use silo_node::model_trainers::text::{build, check_layout, ASSETS};

/// Prepare a model for a federation: write its manifest and initial trainable values.
///
/// Example (the customer-review example's model):
///   fedsilo-model text --model-dir .cache/models/all-MiniLM-L6-v2 \
///       --text review --label score --classes other,great \
///       --lora-rank 8 --lora-layers 4,5 --out model/
///
/// A regression of a numeric label (e.g. a review's stars), standardised as (y − 4) / 1:
///   fedsilo-model text --model-dir .cache/models/all-MiniLM-L6-v2 \
///       --text review --label stars --regression --target-mean 4 --target-std 1 --out model/
///
/// Or take the columns and classes from the CSV's schema.toml (its kind = "text" features,
/// its [target] column and classes), the same file a tabular federation uses:
///   fedsilo-model text --model-dir .cache/models/all-MiniLM-L6-v2 \
///       --schema schema.toml --out model/
///
/// Then, in the federation file: [model] manifest = "model/manifest.toml",
/// initial = "model/initial.safetensors"; and each silo runs with
/// --manifest model/manifest.toml --model-dir <its copy of the model directory>.
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    model: Kind,
}

#[derive(Debug, Subcommand)]
enum Kind {
    /// A text classifier: a pretrained BERT-family encoder (config.json, model.safetensors,
    /// tokenizer.json) with mean pooling and a head, fine-tuned with LoRA.
    Text(TextArgs),
}

#[derive(Debug, clap::Args)]
struct TextArgs {
    /// The pretrained encoder's directory (config.json, model.safetensors, tokenizer.json);
    /// each file is pinned in the manifest by its SHA-256.
    #[arg(long)]
    model_dir: PathBuf,
    /// The silos' CSV described once (schema.toml): its `kind = "text"` features are the text
    /// columns, its [target] the label and classes. Instead of --text, --label and --classes.
    #[arg(long, conflicts_with_all = ["text", "label", "classes"])]
    schema: Option<PathBuf>,
    /// A text column of the silos' CSV (repeat for several; joined with a space).
    #[arg(long = "text", required_unless_present = "schema")]
    text: Vec<String>,
    /// The label column.
    #[arg(long, required_unless_present = "schema")]
    label: Option<String>,
    /// The label values, class 0 first (two: binary, negative then positive), e.g.
    /// `other,great`.
    #[arg(long, value_delimiter = ',', required_unless_present_any = ["schema", "regression"])]
    classes: Vec<String>,
    /// The label is a number, not a class: a one-output head trained on the squared error.
    #[arg(long, conflicts_with_all = ["classes", "schema"])]
    regression: bool,
    /// A regression's label centre: the head learns (y − mean) / std, so that it starts near
    /// the data whatever the label's units. Roughly the label's mean.
    #[arg(long, requires = "regression", allow_negative_numbers = true)]
    target_mean: Option<f64>,
    /// A regression's label spread (> 0), roughly its standard deviation.
    #[arg(long, requires = "regression")]
    target_std: Option<f64>,
    /// LoRA rank (0: no adapters; only the head trains on the frozen encoder).
    #[arg(long, default_value_t = 8)]
    lora_rank: usize,
    /// LoRA alpha (the adapters add alpha/rank · A·B). Default: twice the rank.
    #[arg(long)]
    lora_alpha: Option<f64>,
    /// The encoder layers that get adapters (0-based), e.g. `4,5`; the layers below the lowest
    /// are computed once per text and cached. Default: every layer.
    #[arg(long, value_delimiter = ',')]
    lora_layers: Vec<usize>,
    /// Which projections get adapters: attention, feed-forward (or both).
    #[arg(long, value_delimiter = ',', default_value = "attention,feed-forward")]
    lora_targets: Vec<String>,
    /// Tokens per text (longer texts are truncated).
    #[arg(long, default_value_t = 128)]
    max_length: usize,
    /// AdamW's weight decay.
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Dropout in the encoder while training, in [0, 1). Default: the model's own (0.1 for
    /// MiniLM); 0 trains about a quarter faster on the CPU, without that regularisation.
    #[arg(long)]
    dropout: Option<f64>,
    /// Seed of the adapters' and the head's initial values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The directory to write manifest.toml and initial.safetensors into (created; existing
    /// files are not overwritten).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.model {
        Kind::Text(a) => text(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fedsilo-model: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn recipe(a: &TextArgs) -> anyhow::Result<TextRecipe> {
    let lora = if a.lora_rank == 0 {
        None
    } else {
        let targets = a
            .lora_targets
            .iter()
            .map(|t| match t.as_str() {
                "attention" => Ok(Target::Attention),
                "feed-forward" => Ok(Target::FeedForward),
                other => bail!("--lora-targets {other}: allowed are attention and feed-forward"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Some(LoraSettings {
            rank: a.lora_rank,
            alpha: a.lora_alpha.unwrap_or(2.0 * a.lora_rank as f64),
            targets,
            layers: (!a.lora_layers.is_empty()).then(|| a.lora_layers.clone()),
        })
    };
    let r = TextRecipe {
        base: a
            .model_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        max_length: a.max_length,
        lora,
        weight_decay: a.weight_decay,
        dropout: a.dropout,
    };
    // The same checks a silo makes when it reads the settings back.
    TextRecipe::from_table(&r.to_table())?;
    Ok(r)
}

/// The CSV's text columns, label column and its classes (none for a regression): from
/// --schema, or as given.
fn columns(a: &TextArgs) -> anyhow::Result<(Vec<String>, String, Vec<String>)> {
    let Some(path) = &a.schema else {
        let label = a
            .label
            .clone()
            .context("--label is required without --schema")?;
        return Ok((a.text.clone(), label, a.classes.clone()));
    };
    let schema = Schema::load(path)?;
    let text: Vec<String> = schema
        .text_columns()
        .into_iter()
        .map(String::from)
        .collect();
    if text.is_empty() {
        bail!("--schema {}: no feature has kind = \"text\"; a text model needs at least one text column", path.display());
    }
    let t = &schema.target;
    let Some(classes) = t.classes() else {
        bail!("--schema {}: [target] has several negative values ({}); a text model needs one value per class: write classes = [...] instead", path.display(), t.negative.join(", "));
    };
    let unused: Vec<&str> = schema
        .features
        .iter()
        .filter(|f| f.kind != FeatureKind::Text)
        .map(|f| f.column.as_str())
        .collect();
    if !unused.is_empty() {
        eprintln!(
            "fedsilo-model: note: the text model reads only the text column(s); {} not used",
            unused.join(", ")
        );
    }
    Ok((
        text,
        t.column.clone(),
        classes.into_iter().map(String::from).collect(),
    ))
}

fn text(a: &TextArgs) -> anyhow::Result<()> {
    let recipe = recipe(a)?;
    let (text_columns, label, classes) = columns(a)?;
    let (manifest_path, initial_path) = (
        a.out.join("manifest.toml"),
        a.out.join("initial.safetensors"),
    );
    // The manifest is written last: without it, an initial.safetensors is what a killed
    // earlier run left, and is replaced.
    if manifest_path.exists() {
        bail!("{} exists: fedsilo-model does not overwrite a model a federation may be using; choose another --out", manifest_path.display());
    }
    let outputs = if a.regression { 1 } else { classes.len() };
    let built = build(&recipe, &a.model_dir, outputs, a.seed)
        .with_context(|| format!("--model-dir {}", a.model_dir.display()))?;
    let tensors = trainable(&built.model);
    let mut doc = toml::Table::new();
    doc.insert("architecture".into(), TEXT_CLASSIFIER.into());
    let mut task = toml::Table::new();
    if a.regression {
        task.insert("kind".into(), "regression".into());
        task.insert("mean".into(), a.target_mean.unwrap_or(0.0).into());
        task.insert("std".into(), a.target_std.unwrap_or(1.0).into());
    } else {
        task.insert(
            "kind".into(),
            if classes.len() == 2 {
                "binary"
            } else {
                "multiclass"
            }
            .into(),
        );
        task.insert("classes".into(), classes.into());
    }
    doc.insert("task".into(), task.into());
    let mut data = toml::Table::new();
    data.insert("text".into(), text_columns.into());
    data.insert("label".into(), label.into());
    doc.insert("data".into(), data.into());
    let trainable_tables: Vec<toml::Value> = tensors
        .iter()
        .map(|t| {
            let mut e = toml::Table::new();
            e.insert("name".into(), t.name.clone().into());
            let shape: Vec<toml::Value> = t.shape.iter().map(|d| (*d as i64).into()).collect();
            e.insert("shape".into(), shape.into());
            e.into()
        })
        .collect();
    doc.insert("trainable".into(), trainable_tables.into());
    let mut assets = Vec::new();
    for name in ASSETS {
        let path = a.model_dir.join(name);
        let sha = sha256_file(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut e = toml::Table::new();
        e.insert("name".into(), name.into());
        e.insert("sha256".into(), sha.into());
        assets.push(toml::Value::from(e));
    }
    doc.insert("asset".into(), assets.into());
    doc.insert("settings".into(), recipe.to_table().into());
    let text = format!(
        "# Written by fedsilo-model {}: a `{TEXT_CLASSIFIER}` on {}.\n# Give this file to the coordinator ([model] manifest) and to every silo (--manifest).\n{}",
        env!("CARGO_PKG_VERSION"),
        recipe.base,
        toml::to_string(&doc).context("writing the manifest")?
    );
    let manifest = Manifest::parse(&text).context("the manifest just written")?;
    if let Task::Regression { mean, std } = manifest.task {
        println!(
            "  a regression of `{}`, learnt as ({} − {mean}) / {std}",
            manifest.data.label, manifest.data.label
        );
    }
    check_layout(&manifest, &tensors)?;
    let layout = manifest.described().layout();
    let values: Vec<f32> = tensors
        .iter()
        .flat_map(|t| t.values.iter().copied())
        .collect();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let set = TensorSet::from_layout(&layout, &values);
    let meta = HashMap::from([
        ("fedsilo.manifest".to_string(), manifest.digest.hex()),
        (
            "fedsilo.architecture".to_string(),
            TEXT_CLASSIFIER.to_string(),
        ),
    ]);
    // Each file whole or not at all: written beside, then renamed into place.
    let staged = a.out.join(".initial.safetensors.tmp");
    set.write_like(&set.values, &staged, meta)?;
    std::fs::rename(&staged, &initial_path)
        .with_context(|| format!("writing {}", initial_path.display()))?;
    let staged = a.out.join(".manifest.toml.tmp");
    std::fs::write(&staged, &text)
        .and_then(|_| std::fs::rename(&staged, &manifest_path))
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    println!(
        "wrote {} (manifest {}) and {}",
        manifest_path.display(),
        manifest.digest.short(),
        initial_path.display()
    );
    println!(
        "  {} trainable tensors, {} values ({:.2} MB per update); frozen below layer {}",
        tensors.len(),
        layout.len,
        layout.len as f64 * 4.0 / 1e6,
        built.frozen_prefix
    );
    Ok(())
}
