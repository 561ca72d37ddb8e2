//! Any architecture, trained by a program of the silo's choosing (`--manifest` with
//! `--trainer`): PyTorch with PEFT, scikit-learn, numpy — whatever reads and writes
//! safetensors. The silo keeps the data split and the judgement: it gives the program only the
//! training rows to train on, and for scoring only the rows to score (never their labels); it
//! checks everything that comes back against the manifest — every trainable tensor present
//! with its name and shape, F32, F16 or BF16, finite; probabilities one row per row asked, one
//! column per class, each in [0, 1], or a regression's one finite value per row — before
//! anything leaves, and computes the held-out figures itself.
//!
//! Each call runs `PROGRAM [--trainer-arg ...] WORKDIR` in a private work directory holding
//! `request.json` (`mode`: `train` or `predict`; the plan's `epochs`, `batch_size`,
//! `learning_rate`, `seed`, `prox_mu` (FedProx's μ, the program's to honour); the manifest's
//! `architecture`, `task` (`binary`, `multiclass` or `regression`), `classes`, `text` and `label`
//! columns, `trainable` tensors and `settings`; `model_dir`, the directory of the pinned files)
//! and `base.safetensors` (the trainable tensors). `train` adds `train.csv` (the training
//! rows, every column) and expects `weights.safetensors` (the trained tensors) and `metrics.json`
//! (`{"train_loss": …}`); `predict` adds `rows.csv` (the rows to score, without the label
//! column) and expects `probabilities.json` (`[[p0, p1, …], …]`) — for a regression
//! `predictions.json` instead (`[[value], …]`, in the label's units).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use fedsilo::model::manifest::{Manifest, Task, MAX_TARGET};
use fedsilo::model::tensor_file::TensorSet;
use fedsilo::protocol::{EvalMetrics, TrainPlan};

use super::rows::Holdout;
use super::rows::Labels;
use super::rows::{write_csv, Rows};
use super::scoring::{class_metrics, value_metrics};
use super::{DescribedTrainer, Fitted, ModelTrainer, TrainError};
use crate::external::{input, ExternalError, ExternalTrainer};
use crate::train::dp_sgd::DpSgd;

/// See the module documentation.
#[derive(Debug)]
pub struct ExternalModel {
    manifest: Manifest,
    model_dir: PathBuf,
    runner: ExternalTrainer,
    rows: Rows,
}

#[derive(serde::Serialize)]
struct Request<'a> {
    mode: &'a str,
    epochs: u32,
    batch_size: u32,
    learning_rate: f32,
    seed: u64,
    prox_mu: f32,
    architecture: &'a str,
    task: &'static str,
    classes: Vec<&'a str>,
    text: &'a [String],
    label: &'a str,
    trainable: Vec<serde_json::Value>,
    settings: &'a toml::Table,
    model_dir: &'a Path,
}

/// Rows given to the program: its file name, the header, the rows, and a column left out.
struct RowsFile<'a> {
    name: &'static str,
    header: &'a csv::StringRecord,
    records: &'a [csv::StringRecord],
    drop: Option<usize>,
}

#[derive(serde::Deserialize)]
struct Metrics {
    train_loss: f64,
}

impl ExternalModel {
    /// Checks the manifest's pinned files in `model_dir` and reads the silo's CSV.
    pub fn load(
        manifest: Manifest,
        model_dir: &Path,
        data: &Path,
        holdout: &Holdout,
        runner: ExternalTrainer,
    ) -> Result<Self, TrainError> {
        let names: Vec<&str> = manifest.assets.iter().map(|a| a.name.as_str()).collect();
        fedsilo::model::files::verify(&manifest, model_dir, &names)?;
        let rows = Rows::read(data, holdout, &manifest)?;
        let model_dir = std::fs::canonicalize(model_dir).map_err(|source| {
            fedsilo::model::files::AssetError::Read {
                name: "--model-dir".into(),
                path: model_dir.to_path_buf(),
                source,
            }
        })?;
        Ok(ExternalModel {
            manifest,
            model_dir,
            runner,
            rows,
        })
    }

    fn output(&self, file: &'static str, reason: impl Into<String>) -> TrainError {
        TrainError::External(ExternalError::Output {
            program: self.runner.program.clone(),
            file,
            reason: reason.into(),
        })
    }

    /// The file `name` the program wrote in `dir`, refused unread when larger than `most`
    /// bytes (a runaway program must not exhaust the silo's memory).
    fn read_bounded(
        &self,
        dir: &Path,
        name: &'static str,
        most: u64,
    ) -> Result<Vec<u8>, TrainError> {
        let path = dir.join(name);
        let len = std::fs::metadata(&path)
            .map_err(|e| self.output(name, format!("not written: {e}")))?
            .len();
        if len > most {
            return Err(self.output(
                name,
                format!("{len} bytes, more than the {most} it may hold"),
            ));
        }
        std::fs::read(&path).map_err(|e| self.output(name, format!("unreadable: {e}")))
    }

    /// Runs the program once in a fresh directory: `request.json`, `base.safetensors` and
    /// `rows` in; `read` takes what it wrote out.
    fn call<T>(
        &self,
        mode: &str,
        plan: &TrainPlan,
        seed: u64,
        params: &[f32],
        rows: RowsFile<'_>,
        read: impl FnOnce(&Path) -> Result<T, TrainError>,
    ) -> Result<T, TrainError> {
        let dir = self.runner.private_dir()?;
        let path = |f: &str| dir.path().join(f);
        let layout = self.manifest.described().layout();
        let set = TensorSet::from_layout(&layout, params);
        set.write_like(&set.values, &path("base.safetensors"), HashMap::new())
            .map_err(|e| input("base.safetensors", e))?;
        write_csv(&path(rows.name), rows.header, rows.records, rows.drop)
            .map_err(|e| input(rows.name, e))?;
        let request = Request {
            mode,
            epochs: plan.epochs,
            batch_size: plan.batch_size,
            learning_rate: plan.learning_rate,
            seed,
            prox_mu: plan.prox_mu,
            architecture: &self.manifest.architecture,
            task: match self.manifest.task {
                Task::Binary { .. } => "binary",
                Task::Multiclass { .. } => "multiclass",
                Task::Regression { .. } => "regression",
            },
            classes: self.manifest.task.classes(),
            text: &self.manifest.data.text,
            label: &self.manifest.data.label,
            trainable: self
                .manifest
                .trainable
                .iter()
                .map(|t| serde_json::json!({"name": t.name, "shape": t.shape}))
                .collect(),
            settings: &self.manifest.settings,
            model_dir: &self.model_dir,
        };
        let json = serde_json::to_vec_pretty(&request).map_err(|e| input("request.json", e))?;
        std::fs::write(path("request.json"), json).map_err(|e| input("request.json", e))?;
        self.runner.execute(dir.path())?;
        read(dir.path())
    }

    /// Class probabilities of `records` (no labels given) — a regression's values — checked.
    fn outputs(
        &self,
        params: &[f32],
        header: &csv::StringRecord,
        records: &[csv::StringRecord],
    ) -> Result<Vec<Vec<f32>>, TrainError> {
        let plan = TrainPlan {
            epochs: 0,
            batch_size: 0,
            learning_rate: 0.0,
            seed: 0,
            noise: None,
            prox_mu: 0.0,
            compression: fedsilo::compression::Compression::None,
            lora: None,
        };
        let classes = self.manifest.task.outputs();
        let regression = self.manifest.task.is_regression();
        let (file, shape) = if regression {
            ("predictions.json", "[[value], …]")
        } else {
            ("probabilities.json", "[[p0, p1, …], …]")
        };
        let probs: Vec<Vec<f32>> = self.call(
            "predict",
            &plan,
            0,
            params,
            RowsFile {
                name: "rows.csv",
                header,
                records,
                drop: header.iter().position(|h| h == self.manifest.data.label),
            },
            |dir| {
                // Room for every value written out at length, and no more.
                let most = 1024 + records.len() as u64 * (classes as u64 + 1) * 32;
                let bytes = self.read_bounded(dir, file, most)?;
                serde_json::from_slice(&bytes).map_err(|e| {
                    self.output(
                        file,
                        format!("{e} (expected {shape}, one row per row of rows.csv)"),
                    )
                })
            },
        )?;
        if probs.len() != records.len() {
            return Err(self.output(
                file,
                format!("{} rows for {} rows asked", probs.len(), records.len()),
            ));
        }
        for (i, p) in probs.iter().enumerate() {
            if regression {
                match p.as_slice() {
                    [v] if v.is_finite() && (*v as f64).abs() <= MAX_TARGET => continue,
                    _ => {
                        return Err(self.output(
                            file,
                            format!("row {i} is {p:?}: a regression's row is one finite value, at most 1e12 in magnitude"),
                        ))
                    }
                }
            }
            if p.len() != classes {
                return Err(self.output(
                    file,
                    format!("row {i} has {} values for {classes} classes", p.len()),
                ));
            }
            let sum: f64 = p.iter().map(|v| *v as f64).sum();
            if (sum - 1.0).abs() > 1e-3 {
                return Err(self.output(
                    file,
                    format!("row {i} sums to {sum}, not 1: one probability per class, as a softmax gives"),
                ));
            }
            if let Some(v) = p
                .iter()
                .find(|v| !(v.is_finite() && (0.0..=1.0).contains(*v)))
            {
                return Err(self.output(file, format!("row {i} holds {v}, not a probability")));
            }
        }
        Ok(probs)
    }
}

impl ModelTrainer for ExternalModel {
    fn train_rows(&self) -> usize {
        self.rows.train.len()
    }

    fn train(
        &self,
        base: &[f32],
        plan: &TrainPlan,
        seed: u64,
        dp: Option<DpSgd>,
    ) -> Result<Fitted, TrainError> {
        if dp.is_some() {
            return Err(TrainError::Unsupported(
                "record-level DP-SGD (--dp-clip) runs in fedsilo's own trainers, not in an external program".into(),
            ));
        }
        let layout = self.manifest.described().layout();
        let (params, loss) = self.call(
            "train",
            plan,
            seed,
            base,
            RowsFile {
                name: "train.csv",
                header: &self.rows.header,
                records: &self.rows.train,
                drop: None,
            },
            |dir| {
                let origin = format!("{} (weights.safetensors)", self.runner.program.display());
                let Ok(meta) = std::fs::metadata(dir.join("weights.safetensors")) else {
                    return Err(TrainError::External(ExternalError::NoWeights {
                        program: self.runner.program.clone(),
                    }));
                };
                // The tensors as F32 and a generous header: nothing larger is read.
                let most = (1u64 << 20) + 4 * layout.len as u64;
                if meta.len() > most {
                    return Err(self.output(
                        "weights.safetensors",
                        format!(
                            "{} bytes, more than the manifest's tensors take ({most} at most)",
                            meta.len()
                        ),
                    ));
                }
                let params = TensorSet::read(&dir.join("weights.safetensors"))
                    .and_then(|set| set.to_layout(&layout, &origin))
                    .map_err(|e| TrainError::External(ExternalError::Weights(e)))?;
                let bytes = self.read_bounded(dir, "metrics.json", 64 * 1024)?;
                let m: Metrics = serde_json::from_slice(&bytes).map_err(|e| {
                    self.output(
                        "metrics.json",
                        format!("{e} (expected {{\"train_loss\": number}})"),
                    )
                })?;
                if !m.train_loss.is_finite() {
                    return Err(
                        self.output("metrics.json", format!("train_loss is {}", m.train_loss))
                    );
                }
                Ok((params, m.train_loss))
            },
        )?;
        Ok(Fitted::from_trained(
            base,
            &params,
            loss,
            self.rows.train.len(),
        ))
    }

    fn evaluate(&self, params: &[f32]) -> Result<EvalMetrics, TrainError> {
        let out = self.outputs(params, &self.rows.header, &self.rows.holdout)?;
        Ok(match &self.rows.holdout_labels {
            Labels::Classes(c) => class_metrics(&out, c),
            Labels::Values(v) => {
                let predicted: Vec<f64> = out.iter().map(|r| r[0] as f64).collect();
                value_metrics(&predicted, v)
            }
        })
    }

    fn predict(&self, params: &[f32], path: &Path) -> Result<Vec<Vec<f32>>, TrainError> {
        let (header, records) = Rows::unlabelled(path, &self.manifest)?;
        self.outputs(params, &header, &records)
    }
}

impl DescribedTrainer for ExternalModel {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn unusable(&self) -> Option<String> {
        self.rows.single_class(&self.manifest)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) const SCRIPT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/trainers/numpy_bow.py"
    );

    /// The numpy trainer's model (16 buckets) and a silo's reviews, as an [`ExternalModel`]
    /// whose program misbehaves as `fail` says.
    fn model(dir: &Path, fail: Option<&str>) -> (ExternalModel, Vec<f32>) {
        model_of(dir, fail, false)
    }

    /// `numpy_bow.py --init` into `out` with `buckets` buckets, a classifier of the reviews'
    /// `score` (other, great) or a regression of it: the manifest and initial values.
    pub(crate) fn init_bow(out: &Path, buckets: usize, regression: bool) -> (Manifest, Vec<f32>) {
        let task: &[&str] = if regression {
            &["--regression"]
        } else {
            &["--classes", "other,great"]
        };
        let made = std::process::Command::new("python3")
            .args([SCRIPT, "--init"])
            .arg(out)
            .args(["--text", "review", "--label", "score"])
            .args(["--buckets", &buckets.to_string()])
            .args(task)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        let manifest = Manifest::load(&out.join("manifest.toml")).unwrap();
        let initial = TensorSet::read(&out.join("initial.safetensors"))
            .unwrap()
            .to_layout(&manifest.described().layout(), "initial")
            .unwrap();
        (manifest, initial)
    }

    /// 20 reviews at `path`, alternately pleased and not: `great`/`other`, or 5 and 1 stars
    /// for a regression.
    pub(crate) fn reviews(path: &Path, regression: bool) {
        let mut text = String::from("review,score\n");
        for i in 0..20 {
            text.push_str(match (i % 2 == 0, regression) {
                (true, false) => "great tasty love,great\n",
                (false, false) => "bad stale awful,other\n",
                (true, true) => "great tasty love,5\n",
                (false, true) => "bad stale awful,1\n",
            });
        }
        std::fs::write(path, text).unwrap();
    }

    /// [`model`], a regression of the reviews' stars (5 and 1) when `regression`.
    fn model_of(dir: &Path, fail: Option<&str>, regression: bool) -> (ExternalModel, Vec<f32>) {
        let out = dir.join("bow");
        let (manifest, initial) = init_bow(&out, 16, regression);
        let data = dir.join("reviews.csv");
        reviews(&data, regression);
        let mut args = vec![SCRIPT.to_string()];
        if let Some(f) = fail {
            args.extend(["--fail-with".to_string(), f.to_string()]);
        }
        let runner = ExternalTrainer {
            program: "python3".into(),
            args,
            timeout: Duration::from_secs(60),
            workdir: dir.to_path_buf(),
            owner: "t".into(),
        };
        let holdout = Holdout::Fraction {
            fraction: 0.25,
            seed: 1,
        };
        (
            ExternalModel::load(manifest, &out, &data, &holdout, runner).unwrap(),
            initial,
        )
    }

    fn plan() -> TrainPlan {
        TrainPlan {
            epochs: 20,
            batch_size: 4,
            learning_rate: 0.5,
            seed: 1,
            noise: None,
            prox_mu: 0.0,
            compression: fedsilo::compression::Compression::None,
            lora: None,
        }
    }

    #[test]
    fn a_program_trains_and_scores_a_model_the_silo_does_not_know() {
        let dir = tempfile::tempdir().unwrap();
        let (m, initial) = model(dir.path(), None);
        assert_eq!((m.train_rows(), m.rows.holdout.len()), (15, 5));
        let trained = m
            .train(&initial, &plan(), 1, None)
            .unwrap()
            .applied_to(&initial);
        assert_eq!(trained.len(), 16 * 2 + 2);
        assert_ne!(trained, initial);
        let metrics = m.evaluate(&trained).unwrap();
        assert_eq!(metrics.examples, 5);
        assert_eq!(metrics.accuracy, Some(1.0), "{metrics:?}");
        // DP-SGD is the built-in trainers'.
        let dp = DpSgd {
            clip: 1.0,
            noise_multiplier: 1.0,
        };
        assert!(m.train(&initial, &plan(), 1, Some(dp)).is_err());
        // No work directory is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("fedsilo-trainer-")
            })
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn what_a_program_writes_wrong_is_refused_with_what_was_wrong() {
        for (fail, said) in [
            ("wrong-shape", "tensor `w`"),
            ("nan", "NaN"),
            ("bad-probabilities", "not 1"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (m, initial) = model(dir.path(), Some(fail));
            let e = match m.train(&initial, &plan(), 1, None) {
                Err(e) => e.to_string(),
                Ok(f) => m.evaluate(&f.applied_to(&initial)).unwrap_err().to_string(),
            };
            assert!(e.contains(said), "{fail}: {e}");
        }
    }

    #[test]
    fn a_program_fits_a_regression_and_its_predictions_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (m, initial) = model_of(dir.path(), None, true);
        let plan = TrainPlan {
            learning_rate: 0.1,
            ..plan()
        };
        let trained = m
            .train(&initial, &plan, 1, None)
            .unwrap()
            .applied_to(&initial);
        let metrics = m.evaluate(&trained).unwrap();
        assert_eq!((metrics.accuracy, metrics.auc), (None, None), "{metrics:?}");
        assert!(metrics.r2.is_some_and(|r| r > 0.9), "{metrics:?}");
        assert!(metrics.mae.is_some_and(|e| e < 0.5), "{metrics:?}");
        assert_eq!(metrics.score_name(), "R²");
        let rows = dir.path().join("score.csv");
        std::fs::write(&rows, "review\ngreat tasty love\nbad stale awful\n").unwrap();
        let p = m.predict(&trained, &rows).unwrap();
        assert!(
            p[0][0] > 4.0 && p[1][0] < 2.0,
            "in the label's units: {p:?}"
        );
        let (bad, _) = model_of(&dir.path().join("nan"), Some("huge-prediction"), true);
        let e = bad.evaluate(&trained).unwrap_err().to_string();
        assert!(
            e.contains("predictions.json") && e.contains("one finite value"),
            "{e}"
        );
    }
}
