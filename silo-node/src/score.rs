//! `silo-node score`: the silo's own customers scored with the model deployed there, offline.
//!
//! The deployed version is read from the silo's deployment directory and checked again — the
//! coordinator's signature against the consortium CA of the silo's kit, the values against the
//! note's digest — so a file changed on disk is refused rather than scored with. Nothing is
//! sent anywhere: this runs without a coordinator, on as many rows as the file holds.
//!
//! The output is the input's columns, then the scores, then `model_version` and
//! `model_digest` on every row, so that each score says which model made it. It is written to
//! a temporary file beside the output and renamed into place: a scoring killed half-way leaves
//! no half-written file behind. The scores: for a binary model `p_<positive>`, for several
//! classes `p_<class>` each, and `predicted` (the most probable class); for a regression
//! `prediction`, in the label's units.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fedsilo::data::Schema;
use fedsilo::deploy::{DeployError, DeployStore, Deployed};
use fedsilo::identity::signature::{CaCheck, SignatureError};
use fedsilo::model::manifest::{Manifest, Task};
use fedsilo::model::Architecture;

use crate::data::{Dataset, Split};
use crate::model_trainers::tabular::{How, TabularTrainer};
use crate::model_trainers::{ModelTrainer, TrainError};

/// What the deployed model is scored as: the federation's schema (the built-in MLP), or a
/// model's manifest with the directory of its files.
#[derive(Debug, Clone)]
pub enum ScoredModel {
    /// Tabular rows under this schema.
    Schema(PathBuf),
    /// The model of this manifest, its files in `model_dir`.
    Manifest {
        /// The manifest.
        manifest: PathBuf,
        /// Its files.
        model_dir: PathBuf,
    },
}

/// What `silo-node score` needs.
#[derive(Debug, Clone)]
pub struct ScoreSettings {
    /// The silo's certificate kit (its `ca.pem` checks the deployment's signature).
    pub kit: PathBuf,
    /// The silo's deployment directory (`--deploy-dir` of the running node).
    pub deploy_dir: PathBuf,
    /// The coordinator's node name the deployment must be signed by.
    pub coordinator_name: String,
    /// The rows to score (CSV with a header; the label column may be absent).
    pub input: PathBuf,
    /// Where the scored rows go.
    pub output: PathBuf,
    /// How to read the rows.
    pub model: ScoredModel,
}

/// What was scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Rows scored.
    pub rows: usize,
    /// The deployed version scored with.
    pub version: u64,
    /// Its digest (hex).
    pub digest: String,
}

/// Why scoring failed.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The kit's CA.
    #[error(transparent)]
    Ca(#[from] SignatureError),
    /// The deployment: nothing deployed, changed on disk, not signed by the coordinator.
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// The schema file.
    #[error("--schema: {0}")]
    Schema(fedsilo::Error),
    /// The manifest file.
    #[error("--manifest: {0}")]
    Manifest(fedsilo::model::manifest::ManifestError),
    /// The deployed model is not the one the command line describes.
    #[error("the deployed v{version} is {deployed}; {given}")]
    WrongModel {
        /// The version.
        version: u64,
        /// What it is.
        deployed: String,
        /// What the command line gave, and what to give instead.
        given: String,
    },
    /// Reading the rows or running the model.
    #[error("--in {}: {source}", path.display())]
    Rows {
        /// The input.
        path: PathBuf,
        /// What went wrong.
        source: Box<TrainError>,
    },
    /// Reading the input again, or writing the output.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Scores `s.input` into `s.output` with the deployed version.
pub fn score(s: &ScoreSettings) -> Result<Scored, ScoreError> {
    let ca = CaCheck::load(&s.kit.join("ca.pem"))?;
    let deployed = DeployStore::new(&s.deploy_dir, ca, &s.coordinator_name).deployed()?;
    let (columns, scores) = run_model(s, &deployed)?;
    let rows = write(s, &deployed, &columns, &scores)?;
    Ok(Scored {
        rows,
        version: deployed.note.version,
        digest: deployed.note.digest.hex(),
    })
}

/// The score columns' names and each row's scores.
type Scores = (Vec<String>, Vec<Vec<String>>);

/// Runs the deployed model on the input's rows.
fn run_model(s: &ScoreSettings, d: &Deployed) -> Result<Scores, ScoreError> {
    let version = d.note.version;
    let wrong = |given: &str| ScoreError::WrongModel {
        version,
        deployed: d.note.spec.describe(),
        given: given.to_string(),
    };
    let rows_error = |source| ScoreError::Rows {
        path: s.input.clone(),
        source: Box::new(source),
    };
    match (&d.note.spec, &s.model) {
        (Architecture::Mlp(mlp), ScoredModel::Schema(path)) => {
            let schema = Schema::load(path).map_err(ScoreError::Schema)?;
            if schema.encoded_width() != mlp.inputs
                || schema.numeric_count() != d.note.scaling.mean.len()
            {
                return Err(wrong(&format!(
                    "--schema {} encodes {} inputs with {} numeric features: not the federation's schema",
                    path.display(),
                    schema.encoded_width(),
                    schema.numeric_count()
                )));
            }
            let (negative, positive) = binary_names(&schema);
            let data = Dataset {
                schema,
                train: Split::default(),
                holdout: Split::default(),
                skipped_rows: 0,
                unseen_levels: 0,
            };
            let how = How::BuiltIn { attack: None };
            let trainer =
                TabularTrainer::new(Arc::new(data), mlp.clone(), d.note.scaling.clone(), how);
            let p = trainer.predict(&d.values, &s.input).map_err(rows_error)?;
            let task = Task::Binary { negative, positive };
            Ok(columns_of(&task, p))
        }
        (
            Architecture::Described(described),
            ScoredModel::Manifest {
                manifest,
                model_dir,
            },
        ) => {
            let m = Manifest::load(manifest).map_err(ScoreError::Manifest)?;
            if m.digest != described.manifest {
                return Err(wrong(&format!(
                    "--manifest {} is another manifest ({})",
                    manifest.display(),
                    m.digest.short()
                )));
            }
            if m.architecture != crate::model_trainers::recipe::TEXT_CLASSIFIER {
                return Err(wrong(&format!(
                    "silo-node scores the built-in `{}`; a `{}` model is scored by the program that trains it",
                    crate::model_trainers::recipe::TEXT_CLASSIFIER,
                    m.architecture
                )));
            }
            let p = crate::model_trainers::text::score_file(&m, model_dir, &d.values, &s.input)
                .map_err(rows_error)?;
            Ok(columns_of(&m.task, p))
        }
        (Architecture::Mlp(_), ScoredModel::Manifest { .. }) => Err(wrong(
            "give --schema (the federation's schema.toml), not --manifest",
        )),
        (Architecture::Described(_), ScoredModel::Schema(_)) => Err(wrong(
            "give --manifest and --model-dir (the model's), not --schema",
        )),
    }
}

/// A schema's class names: its first negative value and its positive one.
fn binary_names(schema: &Schema) -> (String, String) {
    let t = &schema.target;
    match t.classes.as_slice() {
        [n, p] => (n.clone(), p.clone()),
        _ => (
            t.negative
                .first()
                .cloned()
                .unwrap_or_else(|| "negative".into()),
            t.positive.clone(),
        ),
    }
}

/// The score columns of `task` and each row's values.
fn columns_of(task: &Task, outputs: Vec<Vec<f32>>) -> Scores {
    let classes: Vec<String> = match task {
        Task::Regression { .. } => {
            let rows = outputs
                .iter()
                .map(|r| vec![r.first().map_or(String::new(), |v| v.to_string())])
                .collect();
            return (vec!["prediction".into()], rows);
        }
        Task::Binary { negative, positive } => vec![negative.clone(), positive.clone()],
        Task::Multiclass { classes } => classes.clone(),
    };
    let binary = classes.len() == 2;
    let mut columns: Vec<String> = if binary {
        vec![format!("p_{}", classes[1])]
    } else {
        classes.iter().map(|c| format!("p_{c}")).collect()
    };
    columns.push("predicted".into());
    let rows = outputs
        .iter()
        .map(|p| {
            let best = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            let mut row: Vec<String> = if binary {
                vec![format!("{:.6}", p.get(1).copied().unwrap_or(f32::NAN))]
            } else {
                p.iter().map(|v| format!("{v:.6}")).collect()
            };
            row.push(classes.get(best).cloned().unwrap_or_default());
            row
        })
        .collect();
    (columns, rows)
}

/// Writes the input's rows with their scores and the model's version and digest; returns the
/// rows written.
fn write(
    s: &ScoreSettings,
    d: &Deployed,
    columns: &[String],
    scores: &[Vec<String>],
) -> Result<usize, ScoreError> {
    let file_error = |path: &Path, e: &dyn std::fmt::Display| ScoreError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut reader = csv::Reader::from_path(&s.input).map_err(|e| file_error(&s.input, &e))?;
    let header = reader
        .headers()
        .map_err(|e| file_error(&s.input, &e))?
        .clone();
    let dir = match s.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| file_error(&s.output, &e))?;
    let mut out = csv::Writer::from_writer(tmp.as_file());
    let version = d.note.version.to_string();
    let digest = d.note.digest.hex();
    let mut head: Vec<&str> = header.iter().collect();
    head.extend(columns.iter().map(String::as_str));
    head.extend(["model_version", "model_digest"]);
    out.write_record(&head)
        .map_err(|e| file_error(&s.output, &e))?;
    let mut n = 0;
    for record in reader.records() {
        let record = record.map_err(|e| file_error(&s.input, &e))?;
        let Some(row) = scores.get(n) else {
            return Err(file_error(
                &s.input,
                &format!("has more rows than were scored ({})", scores.len()),
            ));
        };
        let mut fields: Vec<&str> = record.iter().collect();
        fields.extend(row.iter().map(String::as_str));
        fields.extend([version.as_str(), digest.as_str()]);
        out.write_record(&fields)
            .map_err(|e| file_error(&s.output, &e))?;
        n += 1;
    }
    if n != scores.len() {
        return Err(file_error(
            &s.input,
            &format!("{n} rows read again, {} scored", scores.len()),
        ));
    }
    out.flush().map_err(|e| file_error(&s.output, &e))?;
    drop(out);
    tmp.as_file()
        .sync_all()
        .map_err(|e| file_error(&s.output, &e))?;
    tmp.persist(&s.output)
        .map_err(|e| file_error(&s.output, &e.error))?;
    Ok(n)
}
