//! How a model scored on one silo's held-out split: the figures the validation gate, the
//! registry, the report and the comparison table all read.
//!
//! A classifier's headline score is its ROC AUC, a regression's its R² (the share of the
//! label's variance on the split that the model explains: 1 is perfect, 0 is predicting the
//! split's mean, below 0 is worse than that). Both are "higher is better" and near [0, 1], so
//! the gate's drop rules, the registry's mean and the tables read one [`EvalMetrics::score`]
//! whatever the task; [`EvalMetrics::score_name`] says which it is.

use serde::{Deserialize, Serialize};

/// Metrics of a model on one silo's held-out split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Held-out examples scored.
    pub examples: u64,
    /// Mean loss: cross-entropy for a classifier, squared error (in the label's units) for a
    /// regression.
    pub loss: f64,
    /// A classifier's accuracy (threshold 0.5, or the most probable class); `None` for a
    /// regression.
    pub accuracy: Option<f64>,
    /// A classifier's ROC AUC; `None` when the split has a single class, and for a regression.
    pub auc: Option<f64>,
    /// A regression's R²; `None` when the split's labels are all equal, and for a classifier.
    #[serde(default)]
    pub r2: Option<f64>,
    /// A regression's mean absolute error, in the label's units.
    #[serde(default)]
    pub mae: Option<f64>,
    /// With personalisation: the same figures for the silo's personalised model (the global
    /// body with the silo's own head).
    #[serde(default)]
    pub personalized: Option<PersonalizedMetrics>,
    /// With the policy's `[business]`: capture, lift, precision and recall (and the silo's
    /// expected value, if it shares it) on the same rows ([`crate::model::business`]).
    #[serde(default)]
    pub business: Option<crate::model::business::BusinessMetrics>,
}

/// A personalised model's held-out figures (flat, so that a frame cannot nest them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonalizedMetrics {
    /// Mean loss, as [`EvalMetrics::loss`].
    pub loss: f64,
    /// Accuracy; `None` for a regression.
    pub accuracy: Option<f64>,
    /// ROC AUC; `None` when the split has a single class, and for a regression.
    pub auc: Option<f64>,
    /// R² of a regression.
    #[serde(default)]
    pub r2: Option<f64>,
    /// Mean absolute error of a regression.
    #[serde(default)]
    pub mae: Option<f64>,
}

impl EvalMetrics {
    /// The headline score: AUC for a classifier, R² for a regression (see the module
    /// documentation).
    pub fn score(&self) -> Option<f64> {
        self.auc.or(self.r2)
    }

    /// What [`score`](Self::score) is: `"R²"` when it is a regression's, else `"AUC"`.
    pub fn score_name(&self) -> &'static str {
        if self.is_regression() {
            "R²"
        } else {
            "AUC"
        }
    }

    /// Whether these are a regression's figures.
    pub fn is_regression(&self) -> bool {
        self.accuracy.is_none() && self.auc.is_none() && (self.mae.is_some() || self.r2.is_some())
    }

    /// What the validator accepts: every figure a finite number in its range (a loss and an
    /// absolute error of 0 or more, accuracy and AUC in [0, 1], R² at most 1), and figures of
    /// one kind — a classifier's (accuracy, AUC) or a regression's (R², MAE), never both, so
    /// that a silo cannot slip an R² into a classifier's gate.
    pub fn is_valid(&self) -> bool {
        let p = self.personalized.as_ref();
        figures_valid(self.loss, self.accuracy, self.auc, self.r2, self.mae)
            && p.is_none_or(|p| figures_valid(p.loss, p.accuracy, p.auc, p.r2, p.mae))
            && p.is_none_or(|p| {
                (p.accuracy.is_some() || p.auc.is_some())
                    == (self.accuracy.is_some() || self.auc.is_some())
            })
            && self
                .business
                .as_ref()
                .is_none_or(crate::model::business::BusinessMetrics::is_valid)
    }
}

fn figures_valid(
    loss: f64,
    accuracy: Option<f64>,
    auc: Option<f64>,
    r2: Option<f64>,
    mae: Option<f64>,
) -> bool {
    let unit = |v: Option<f64>| v.is_none_or(|v| (0.0..=1.0).contains(&v));
    let classifier = accuracy.is_some() || auc.is_some();
    let regression = r2.is_some() || mae.is_some();
    loss.is_finite()
        && loss >= 0.0
        && unit(accuracy)
        && unit(auc)
        && r2.is_none_or(|v| v.is_finite() && v <= 1.0)
        && mae.is_none_or(|v| v.is_finite() && v >= 0.0)
        && !(classifier && regression)
}

/// The name of the headline score of a set of figures: `"R²"` when any is a regression's.
pub fn score_name<'a>(all: impl IntoIterator<Item = &'a EvalMetrics>) -> &'static str {
    if all.into_iter().any(EvalMetrics::is_regression) {
        "R²"
    } else {
        "AUC"
    }
}

/// The example-weighted mean of the headline scores of `all` (each silo's figures), over the
/// ones that have a score; `None` if none has.
pub fn weighted_score<'a>(all: impl IntoIterator<Item = &'a EvalMetrics>) -> Option<f64> {
    let (mut sum, mut n) = (0.0, 0.0);
    for m in all {
        if let Some(s) = m.score() {
            sum += s * m.examples as f64;
            n += m.examples as f64;
        }
    }
    (n > 0.0).then(|| sum / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(accuracy: Option<f64>, auc: Option<f64>, r2: Option<f64>) -> EvalMetrics {
        EvalMetrics {
            examples: 10,
            loss: 0.5,
            accuracy,
            auc,
            r2,
            mae: r2.map(|_| 0.3),
            personalized: None,
            business: None,
        }
    }

    #[test]
    fn the_headline_is_auc_for_a_classifier_and_r2_for_a_regression() {
        let c = metrics(Some(0.9), Some(0.8), None);
        assert_eq!((c.score(), c.score_name()), (Some(0.8), "AUC"));
        let r = metrics(None, None, Some(0.4));
        assert_eq!((r.score(), r.score_name()), (Some(0.4), "R²"));
        assert_eq!(score_name([&c, &r]), "R²");
        assert_eq!(score_name([&c]), "AUC");
        assert!(c.is_valid() && r.is_valid());
        for broken in [
            EvalMetrics {
                mae: Some(f64::NAN),
                ..r.clone()
            },
            EvalMetrics {
                mae: Some(-1.0),
                ..r.clone()
            },
            EvalMetrics {
                r2: Some(1.5),
                ..r.clone()
            },
            EvalMetrics {
                auc: Some(1.2),
                ..c.clone()
            },
            EvalMetrics {
                loss: -0.1,
                ..c.clone()
            },
            // A classifier's figures with an R² slipped in, and the reverse.
            EvalMetrics {
                r2: Some(1.0),
                auc: None,
                ..c.clone()
            },
            EvalMetrics {
                auc: Some(0.9),
                ..r.clone()
            },
        ] {
            assert!(!broken.is_valid(), "{broken:?}");
        }
    }

    #[test]
    fn figures_stored_before_regression_existed_still_read() {
        let old = r#"{"examples":3,"loss":0.4,"accuracy":0.9,"auc":0.8}"#;
        let m: EvalMetrics = serde_json::from_str(old).unwrap();
        assert_eq!((m.accuracy, m.r2, m.score()), (Some(0.9), None, Some(0.8)));
    }
}
