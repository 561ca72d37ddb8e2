//! # Model trainers: the silo's one interface to every model it trains
//!
//! A silo trains, scores and personalises through a [`ModelTrainer`]: it holds the silo's data
//! and whatever frozen base its architecture needs, and works on the flat vector of the
//! model's trainable values — the only thing that travels. The trainer actor needs no more:
//! clipping, noise, masking and compression apply to that vector whatever the model.
//!
//! A model with a manifest ([`fedsilo::model::manifest`]) is a [`DescribedTrainer`] too: it was
//! built for that manifest at start and reads the silo's CSV under it.
//! The built-in tabular MLP is built per request instead ([`TabularTrainer`]): its spec and the
//! federation's feature scaling come with each request.
//!
//! | file | concern |
//! |---|---|
//! | `tabular` | the built-in MLP on rows under a schema ([`TabularTrainer`]): plain, DP-SGD, LoRA, or an external program |
//! | `text` | the built-in text classifier ([`TextTrainer`]): fedsilo-text behind this trait |
//! | `external` | any described architecture, trained by the silo's own program ([`ExternalModel`]) |
//! | `rows` | a CSV as whole rows, split by the silo, for an external program |
//! | `recipe` | its `[settings]`: LoRA, sequence length, weight decay |
//! | `text_data` | a text CSV read under the manifest's columns and classes |
//! | `scoring` | held-out figures from class probabilities, or a regression's values |

pub mod external;
pub mod recipe;
pub mod rows;
pub mod scoring;
pub mod tabular;
pub mod text;
pub mod text_data;

use std::path::Path;

use fedsilo::model::manifest::Manifest;
use fedsilo::protocol::{EvalMetrics, Personalize, TrainPlan};

use crate::train::dp_sgd::DpSgd;

pub use external::ExternalModel;
pub use rows::Holdout;
pub use tabular::TabularTrainer;
pub use text::TextTrainer;

/// Why a model cannot be loaded, trained or scored.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The text classifier refused (its file, tensor or setting named).
    #[error(transparent)]
    Text(#[from] fedsilo_text::TextError),
    /// The silo's CSV.
    #[error(transparent)]
    Data(#[from] text_data::TextDataError),
    /// A pinned file.
    #[error(transparent)]
    Asset(#[from] fedsilo::model::files::AssetError),
    /// The manifest's settings.
    #[error(transparent)]
    Recipe(#[from] recipe::RecipeError),
    /// No trainer in this silo knows the architecture.
    #[error("architecture `{0}`: this silo-node's built-in trainers know `{known}`; train another with --trainer PROGRAM", known = recipe::TEXT_CLASSIFIER)]
    UnknownArchitecture(String),
    /// The model built from the manifest's settings does not have the manifest's tensors.
    #[error("the manifest's trainable tensors do not match the model its settings build: {0}")]
    Layout(String),
    /// The rows to score cannot be read under the schema.
    #[error(transparent)]
    Rows(#[from] fedsilo::Error),
    /// The external program failed, or wrote something the manifest does not allow.
    #[error(transparent)]
    External(#[from] crate::external::ExternalError),
    /// The plan asks for something this trainer does not do.
    #[error("{0}")]
    Unsupported(String),
}

/// Held-out rows as a binary classifier scored them: the positive class's score and the label
/// (0 or 1) of each row.
pub type ScoredRows = (Vec<f32>, Vec<f32>);

/// What a round's local training left.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// The update: trained values minus the base, in the model's layout.
    pub update: Vec<f32>,
    /// Mean loss of the last epoch.
    pub loss: f64,
    /// Examples trained on.
    pub examples: usize,
}

impl Fitted {
    /// What training from `base` to `trained` left.
    pub fn from_trained(base: &[f32], trained: &[f32], loss: f64, examples: usize) -> Self {
        Fitted {
            update: trained.iter().zip(base).map(|(n, b)| n - b).collect(),
            loss,
            examples,
        }
    }

    /// The trained values: `base` with the update applied.
    pub fn applied_to(&self, base: &[f32]) -> Vec<f32> {
        base.iter().zip(&self.update).map(|(b, u)| b + u).collect()
    }
}

/// A personalised model: the whole trainable vector and its head's values alone (what the
/// silo keeps between rounds).
#[derive(Debug, Clone, PartialEq)]
pub struct Personalised {
    /// The global model with this silo's fine-tuned head, in the manifest's layout.
    pub params: Vec<f32>,
    /// The head's values, in the manifest's order.
    pub head: Vec<f32>,
}

/// A trainer of one model on one silo's data. See the module documentation.
pub trait ModelTrainer: Send + Sync + std::fmt::Debug {
    /// Training rows (0: an evaluate-only silo).
    fn train_rows(&self) -> usize;
    /// Whether `plan` is one this trainer can train with; asked before anything is charged to
    /// the silo's privacy ledger, so that a plan refused later cannot spend its budget.
    fn check_plan(&self, plan: &TrainPlan) -> Result<(), TrainError> {
        let ok = plan.epochs >= 1
            && plan.batch_size >= 1
            && plan.learning_rate.is_finite()
            && plan.learning_rate > 0.0
            && plan.prox_mu.is_finite()
            && plan.prox_mu >= 0.0;
        if ok {
            Ok(())
        } else {
            Err(TrainError::Unsupported(format!(
                "plan of {} epochs, batch size {}, learning rate {}, prox_mu {}: epochs and batch size at least 1, a positive learning rate, prox_mu 0 or more",
                plan.epochs, plan.batch_size, plan.learning_rate, plan.prox_mu
            )))
        }
    }

    /// Trains from `base` (the trainable values) for `plan`, shuffling with `seed`; with `dp`,
    /// under the silo's own record-level DP-SGD (lots and noise from the operating system's
    /// generator, not the seed). Returns the update, not the trained values.
    fn train(
        &self,
        base: &[f32],
        plan: &TrainPlan,
        seed: u64,
        dp: Option<DpSgd>,
    ) -> Result<Fitted, TrainError>;
    /// FedPer personalisation: `params` with its head — started from `own` (this silo's head,
    /// from an earlier round) when given and of the right size — fine-tuned alone on the
    /// training rows as `p` says; the whole model and the head's values. `Ok(None)`: this
    /// architecture has no head the trainer can tune alone.
    fn personalise(
        &self,
        params: &[f32],
        own: Option<&[f32]>,
        p: &Personalize,
    ) -> Result<Option<Personalised>, TrainError> {
        let _ = (params, own, p);
        Ok(None)
    }

    /// Scores `params` on the held-out rows with the metrics of the task.
    fn evaluate(&self, params: &[f32]) -> Result<EvalMetrics, TrainError>;

    /// The positive class's score and the label (0 or 1) of each held-out row, for the
    /// business metrics (`fedsilo::model::business`); `None` for a trainer that does not
    /// score a binary task this way (the metrics are then left out).
    fn holdout_scores(&self, params: &[f32]) -> Result<Option<ScoredRows>, TrainError> {
        let _ = params;
        Ok(None)
    }
    /// Class probabilities — or a regression's value, in the label's units, in a row of one —
    /// for each row of the CSV at `path`, in the file's order (the model's columns; the label
    /// column may be absent).
    fn predict(&self, params: &[f32], path: &Path) -> Result<Vec<Vec<f32>>, TrainError>;
}

/// The trainer of a model with a manifest, built for it when the silo starts.
pub trait DescribedTrainer: ModelTrainer {
    /// The manifest it was built for.
    fn manifest(&self) -> &Manifest;
    /// Why its training rows cannot train the task, if they cannot.
    fn unusable(&self) -> Option<String>;
}

/// The pinned files [`load`] reads for `manifest`: every file the manifest pins for the
/// silo's own program (`external`: it decides what it reads), the built-in trainer's own list
/// otherwise.
pub fn needed_files(manifest: &Manifest, external: bool) -> Result<Vec<&str>, TrainError> {
    if external {
        return Ok(manifest.assets.iter().map(|a| a.name.as_str()).collect());
    }
    match manifest.architecture.as_str() {
        recipe::TEXT_CLASSIFIER => Ok(text::ASSETS.to_vec()),
        other => Err(TrainError::UnknownArchitecture(other.to_string())),
    }
}

/// The trainer for `manifest`'s architecture, over the assets in `model_dir` and the silo's
/// CSV at `data` (its held-out rows as `holdout` says): the silo's own program when it names
/// one (`external`), else the built-in trainer of the architecture.
pub fn load(
    manifest: Manifest,
    model_dir: &Path,
    data: &Path,
    holdout: &Holdout,
    external: Option<crate::external::ExternalTrainer>,
) -> Result<Box<dyn DescribedTrainer>, TrainError> {
    if let Some(runner) = external {
        return Ok(Box::new(ExternalModel::load(
            manifest, model_dir, data, holdout, runner,
        )?));
    }
    match manifest.architecture.as_str() {
        recipe::TEXT_CLASSIFIER => Ok(Box::new(TextTrainer::load(
            manifest, model_dir, data, holdout,
        )?)),
        other => Err(TrainError::UnknownArchitecture(other.to_string())),
    }
}
