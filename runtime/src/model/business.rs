//! Business metrics of a binary classifier on a silo's held-out rows: what a consortium judges
//! a model by, computed where the rows are. From the model's scores and the true labels:
//!
//! - **capture at k %**: the share of all positives among the k % highest-scored rows (recall
//!   at a fixed outreach budget: "the top 10 % of risk scores hold 48 % of churners");
//! - **lift at k %**: that slice's positive rate over the whole split's;
//! - **precision and recall** of the rows scored at or above a threshold;
//! - with a silo's own cost matrix, the **expected value per 1,000 rows** of acting on the
//!   rows at or above the threshold: value of a true positive, minus the costs of false
//!   positives and false negatives, in the silo's currency.
//!
//! Only these aggregates leave a silo. Ties at the k % cut are broken by row order, so the
//! figure is deterministic; the slice holds `ceil(k % × n)` rows.

use serde::{Deserialize, Serialize};

/// What the federation's policy asks every silo to compute (`[business]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusinessSpec {
    /// The k of capture and lift at the top k % (each in (0, 100]).
    pub top_percent: Vec<f64>,
    /// The score at or above which a row counts as flagged.
    pub threshold: f64,
}

impl From<&fedsilo_policies::business::BusinessRules> for BusinessSpec {
    fn from(r: &fedsilo_policies::business::BusinessRules) -> Self {
        Self {
            top_percent: r.top_percent.clone(),
            threshold: r.threshold,
        }
    }
}

/// A silo's cost matrix, declared at the silo (in its own currency).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostMatrix {
    /// What a true positive is worth (e.g. a churner kept).
    pub true_positive: f64,
    /// What a false positive costs (an offer to a customer who would have stayed).
    pub false_positive: f64,
    /// What a false negative costs (a churner missed).
    pub false_negative: f64,
    /// The currency, for people (e.g. `EUR`).
    pub currency: String,
}

/// Capture and lift at one k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopShare {
    /// k, in percent.
    pub percent: f64,
    /// Share of all positives in the top k % (0 to 1).
    pub capture: f64,
    /// The top k %'s positive rate over the split's.
    pub lift: f64,
}

/// A silo's business figures for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusinessMetrics {
    /// Capture and lift at each k the policy asked for.
    pub top: Vec<TopShare>,
    /// The threshold precision and recall are at.
    pub threshold: f64,
    /// Precision of the rows at or above it (`None`: no row is).
    pub precision: Option<f64>,
    /// Recall of the rows at or above it.
    pub recall: f64,
    /// The split's positive rate.
    pub base_rate: f64,
    /// With the silo's cost matrix, if it shares it: the expected value per 1,000 rows of
    /// acting on the rows at or above the threshold, and the currency.
    #[serde(default)]
    pub value_per_1000: Option<(f64, String)>,
}

impl BusinessMetrics {
    /// Whether the figures are what a silo can honestly report: shares in [0, 1], a lift no
    /// more than 1 / base rate, at most [`fedsilo_policies::business::MAX_TOP`] slices, every
    /// number finite (a hostile silo's figures are refused at the gate like any other).
    pub fn is_valid(&self) -> bool {
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        let max_lift = 1.0 / self.base_rate.max(f64::MIN_POSITIVE) + 1e-9;
        self.top.len() <= fedsilo_policies::business::MAX_TOP
            && self.base_rate > 0.0
            && unit(self.base_rate)
            && unit(self.recall)
            && self.precision.is_none_or(unit)
            && self.threshold.is_finite()
            && self.top.iter().all(|t| {
                t.percent.is_finite()
                    && unit(t.capture)
                    && t.lift.is_finite()
                    && (0.0..=max_lift).contains(&t.lift)
            })
            && self
                .value_per_1000
                .as_ref()
                .is_none_or(|(v, c)| v.is_finite() && c.len() <= 16)
    }

    /// Capture at the first k asked for.
    pub fn capture(&self) -> Option<f64> {
        self.top.first().map(|t| t.capture)
    }
}

/// The figures of `scores` (the positive class's probability per row) against `labels` (0 or
/// 1); `None` when the split has no positive (nothing to capture) or no rows.
pub fn business_metrics(
    scores: &[f32],
    labels: &[f32],
    spec: &BusinessSpec,
    costs: Option<&CostMatrix>,
) -> Option<BusinessMetrics> {
    let n = scores.len().min(labels.len());
    let positive = |i: usize| labels[i] > 0.5;
    let positives = (0..n).filter(|&i| positive(i)).count();
    if n == 0 || positives == 0 {
        return None;
    }
    let base_rate = positives as f64 / n as f64;
    let mut order: Vec<usize> = (0..n).collect();
    // Highest score first; ties by row order (a stable sort).
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let top = spec
        .top_percent
        .iter()
        .map(|&k| {
            let take = ((k / 100.0 * n as f64).ceil() as usize).clamp(1, n);
            let hit = order[..take].iter().filter(|&&i| positive(i)).count();
            TopShare {
                percent: k,
                capture: hit as f64 / positives as f64,
                lift: (hit as f64 / take as f64) / base_rate,
            }
        })
        .collect();
    let (mut tp, mut fp) = (0usize, 0usize);
    for (i, score) in scores.iter().enumerate().take(n) {
        if f64::from(*score) >= spec.threshold {
            if positive(i) {
                tp += 1;
            } else {
                fp += 1;
            }
        }
    }
    let fneg = positives - tp;
    let value_per_1000 = costs.map(|c| {
        let total = tp as f64 * c.true_positive
            - fp as f64 * c.false_positive
            - fneg as f64 * c.false_negative;
        (total / n as f64 * 1000.0, c.currency.clone())
    });
    Some(BusinessMetrics {
        top,
        threshold: spec.threshold,
        precision: (tp + fp > 0).then(|| tp as f64 / (tp + fp) as f64),
        recall: tp as f64 / positives as f64,
        base_rate,
        value_per_1000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(top: &[f64]) -> BusinessSpec {
        BusinessSpec {
            top_percent: top.to_vec(),
            threshold: 0.5,
        }
    }

    #[test]
    fn capture_lift_precision_recall_and_value_by_hand() {
        // 10 rows, 4 positives. By score: 0.9 (+), 0.8 (−), 0.7 (+), 0.6 (+), 0.4 (−), 0.3 (+), …
        let scores = [0.9, 0.1, 0.8, 0.2, 0.7, 0.6, 0.4, 0.3, 0.05, 0.15];
        let labels = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0];
        let costs = CostMatrix {
            true_positive: 100.0,
            false_positive: 10.0,
            false_negative: 50.0,
            currency: "EUR".into(),
        };
        let b =
            business_metrics(&scores, &labels, &spec(&[10.0, 30.0, 50.0]), Some(&costs)).unwrap();
        // Top 10 % = 1 row (+): capture 1/4, lift (1/1)/(4/10) = 2.5.
        assert_eq!((b.top[0].capture, b.top[0].lift), (0.25, 2.5));
        // Top 30 % = 3 rows (+ − +): capture 2/4, lift (2/3)/0.4.
        assert_eq!(b.top[1].capture, 0.5);
        assert!((b.top[1].lift - (2.0 / 3.0) / 0.4).abs() < 1e-12);
        // Top 50 % = 5 rows (+ − + + −): capture 3/4.
        assert_eq!(b.top[2].capture, 0.75);
        // At 0.5: flagged 0.9 0.8 0.7 0.6 → tp 3, fp 1, fn 1.
        assert_eq!(
            (b.precision, b.recall, b.base_rate),
            (Some(0.75), 0.75, 0.4)
        );
        // (3·100 − 1·10 − 1·50) / 10 rows × 1000.
        assert_eq!(b.value_per_1000, Some((24_000.0, "EUR".into())));
        assert_eq!(b.capture(), Some(0.25));
        assert!(b.is_valid());
        // What a hostile silo might send instead is refused.
        for bad in [
            BusinessMetrics {
                recall: 1.5,
                ..b.clone()
            },
            BusinessMetrics {
                top: vec![TopShare {
                    percent: 10.0,
                    capture: f64::NAN,
                    lift: 1.0,
                }],
                ..b.clone()
            },
            BusinessMetrics {
                top: vec![TopShare {
                    percent: 10.0,
                    capture: 0.5,
                    lift: 1e9,
                }],
                ..b.clone()
            },
            BusinessMetrics {
                top: vec![b.top[0].clone(); 9],
                ..b.clone()
            },
            BusinessMetrics {
                value_per_1000: Some((f64::INFINITY, "EUR".into())),
                ..b.clone()
            },
        ] {
            assert!(!bad.is_valid(), "{bad:?}");
        }
    }

    #[test]
    fn a_perfect_ranking_captures_everything_within_the_base_rate_and_ties_are_stable() {
        let scores = [0.2, 0.9, 0.9, 0.1];
        let labels = [0.0, 1.0, 1.0, 0.0];
        let b = business_metrics(&scores, &labels, &spec(&[50.0, 100.0]), None).unwrap();
        assert_eq!((b.top[0].capture, b.top[0].lift), (1.0, 2.0));
        assert_eq!((b.top[1].capture, b.top[1].lift), (1.0, 1.0));
        assert_eq!(b.value_per_1000, None, "no cost matrix: no value");
        // Equal scores at the cut: row order decides, the same every time.
        let tied = business_metrics(&[0.5; 4], &[0.0, 1.0, 0.0, 1.0], &spec(&[25.0]), None);
        assert_eq!(tied.unwrap().top[0].capture, 0.0);
        // Nothing to capture, or nothing at all: no figures.
        assert!(business_metrics(&[0.5, 0.6], &[0.0, 0.0], &spec(&[10.0]), None).is_none());
        assert!(business_metrics(&[], &[], &spec(&[10.0]), None).is_none());
    }
}
