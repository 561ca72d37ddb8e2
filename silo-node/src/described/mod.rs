//! # Trainers of described models
//!
//! A model with a manifest ([`fedsilo::model::manifest`]) is trained by a [`ModelTrainer`]:
//! it holds the silo's data read under the manifest and whatever frozen base the architecture
//! needs (checked by digest), and it trains, scores and predicts with the flat vector of the
//! manifest's trainable tensors — the only thing that travels. The trainer actor needs no more:
//! clipping, noise, masking and compression apply to that vector as to the MLP's.
//!
//! | file | concern |
//! |---|---|
//! | `text` | the built-in text classifier ([`TextTrainer`]): fedsilo-text behind this trait |
//! | `external` | any architecture, trained by the silo's own program ([`ExternalModel`]) |
//! | `rows` | a CSV as whole rows, split by the silo, for an external program |
//! | `recipe` | its `[settings]`: LoRA, sequence length, weight decay |
//! | `text_data` | a text CSV read under the manifest's columns and classes |
//! | `assets` | the manifest's files, checked by SHA-256 |
//! | `scoring` | held-out figures from class probabilities |
//!
//! The built-in tabular MLP (and its external-program variant) are not behind this trait yet:
//! they keep their own paths in `trainer::jobs`.

pub mod assets;
pub mod external;
pub mod recipe;
pub mod rows;
pub mod scoring;
pub mod text;
pub mod text_data;

use std::path::Path;

use fedsilo::model::manifest::Manifest;
use fedsilo::protocol::{EvalMetrics, Personalize, TrainPlan};

use crate::train::dp_sgd::DpSgd;

pub use external::ExternalModel;
pub use rows::Holdout;
pub use text::TextTrainer;

/// Why a described model cannot be loaded, trained or scored.
#[derive(Debug, thiserror::Error)]
pub enum DescribedError {
    /// The text classifier refused (its file, tensor or setting named).
    #[error(transparent)]
    Text(#[from] fedsilo_text::TextError),
    /// The silo's CSV.
    #[error(transparent)]
    Data(#[from] text_data::TextDataError),
    /// A pinned file.
    #[error(transparent)]
    Asset(#[from] assets::AssetError),
    /// The manifest's settings.
    #[error(transparent)]
    Recipe(#[from] recipe::RecipeError),
    /// No trainer in this silo knows the architecture.
    #[error("architecture `{0}`: this silo-node's built-in trainers know `{known}`; train another with --trainer PROGRAM", known = recipe::TEXT_CLASSIFIER)]
    UnknownArchitecture(String),
    /// The model built from the manifest's settings does not have the manifest's tensors.
    #[error("the manifest's trainable tensors do not match the model its settings build: {0}")]
    Layout(String),
    /// The external program failed, or wrote something the manifest does not allow.
    #[error(transparent)]
    External(#[from] crate::external::ExternalError),
    /// The plan asks for something this trainer does not do.
    #[error("{0}")]
    Unsupported(String),
}

/// What a round's local training left.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// The trained values, in the manifest's layout.
    pub params: Vec<f32>,
    /// Mean loss of the last epoch.
    pub loss: f64,
    /// Examples trained on.
    pub examples: usize,
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

/// A trainer of one described model on one silo's data. See the module documentation.
pub trait ModelTrainer: Send + Sync + std::fmt::Debug {
    /// The manifest it was built for.
    fn manifest(&self) -> &Manifest;
    /// Training rows (0: an evaluate-only silo).
    fn train_rows(&self) -> usize;
    /// Why its training rows cannot train the task, if they cannot.
    fn unusable(&self) -> Option<String>;
    /// Whether `plan` is one this trainer can train with; asked before anything is charged to
    /// the silo's privacy ledger, so that a plan refused later cannot spend its budget.
    fn check_plan(&self, plan: &TrainPlan) -> Result<(), DescribedError> {
        let ok = plan.epochs >= 1
            && plan.batch_size >= 1
            && plan.learning_rate.is_finite()
            && plan.learning_rate > 0.0
            && plan.prox_mu.is_finite()
            && plan.prox_mu >= 0.0;
        if ok {
            Ok(())
        } else {
            Err(DescribedError::Unsupported(format!(
                "plan of {} epochs, batch size {}, learning rate {}, prox_mu {}: epochs and batch size at least 1, a positive learning rate, prox_mu 0 or more",
                plan.epochs, plan.batch_size, plan.learning_rate, plan.prox_mu
            )))
        }
    }

    /// Trains from `base` (the trainable values) for `plan`, shuffling with `seed`; with `dp`,
    /// under the silo's own record-level DP-SGD (lots and noise from the operating system's
    /// generator, not the seed).
    fn train(
        &self,
        base: &[f32],
        plan: &TrainPlan,
        seed: u64,
        dp: Option<DpSgd>,
    ) -> Result<Fitted, DescribedError>;
    /// FedPer personalisation: `params` with its head — started from `own` (this silo's head,
    /// from an earlier round) when given and of the right size — fine-tuned alone on the
    /// training rows as `p` says; the whole model and the head's values. `Ok(None)`: this
    /// architecture has no head the trainer can tune alone.
    fn personalise(
        &self,
        params: &[f32],
        own: Option<&[f32]>,
        p: &Personalize,
    ) -> Result<Option<Personalised>, DescribedError> {
        let _ = (params, own, p);
        Ok(None)
    }

    /// Scores `params` on the held-out rows with the metrics of the task.
    fn evaluate(&self, params: &[f32]) -> Result<EvalMetrics, DescribedError>;
    /// Class probabilities for each row of the CSV at `path` (the manifest's columns; the
    /// label column may be absent).
    fn predict(&self, params: &[f32], path: &Path) -> Result<Vec<Vec<f32>>, DescribedError>;
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
) -> Result<Box<dyn ModelTrainer>, DescribedError> {
    if let Some(runner) = external {
        return Ok(Box::new(ExternalModel::load(
            manifest, model_dir, data, holdout, runner,
        )?));
    }
    match manifest.architecture.as_str() {
        recipe::TEXT_CLASSIFIER => Ok(Box::new(TextTrainer::load(
            manifest, model_dir, data, holdout,
        )?)),
        other => Err(DescribedError::UnknownArchitecture(other.to_string())),
    }
}
