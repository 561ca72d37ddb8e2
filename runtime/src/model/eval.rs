//! How a model scored on one silo's held-out split: the figures the validation gate, the
//! registry, the report and the comparison table all read.

use serde::{Deserialize, Serialize};

/// Metrics of a model on one silo's held-out split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Held-out examples scored.
    pub examples: u64,
    /// Mean binary cross-entropy.
    pub loss: f64,
    /// Accuracy at threshold 0.5.
    pub accuracy: f64,
    /// ROC AUC; `None` when the split has a single class.
    pub auc: Option<f64>,
    /// With personalisation: the same figures for the silo's personalised model (the global
    /// body with the silo's own head).
    #[serde(default)]
    pub personalized: Option<PersonalizedMetrics>,
}

/// A personalised model's held-out figures (flat, so that a frame cannot nest them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalizedMetrics {
    /// Mean binary cross-entropy.
    pub loss: f64,
    /// Accuracy at threshold 0.5.
    pub accuracy: f64,
    /// ROC AUC; `None` when the split has a single class.
    pub auc: Option<f64>,
}
