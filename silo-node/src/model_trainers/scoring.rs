//! Held-out figures from a model's outputs, by task.
//!
//! A classifier's, from its class probabilities: mean cross-entropy, accuracy of the most
//! probable class, and ROC AUC — of class 1 for a binary task, the mean of each class against
//! the rest for a multiclass one (over the classes present, `None` when the split has a single
//! class). The same figures the tabular MLP reports, so the gate, registry and report read
//! them alike.
//!
//! A regression's, from its predicted values: mean squared error as the loss, mean absolute
//! error, and R² = 1 − SSE / SST against the split's own mean (`None` when every label is the
//! same: nothing to explain), all in the label's units.

use fedsilo::protocol::EvalMetrics;

use crate::train::roc_auc;

/// The figures of `probs` (one row of class probabilities per example) against `labels`.
pub fn class_metrics(probs: &[Vec<f32>], labels: &[usize]) -> EvalMetrics {
    let n = labels.len().min(probs.len());
    let eps = 1e-7f64;
    let (mut loss, mut hits) = (0.0f64, 0usize);
    for (p, &y) in probs.iter().zip(labels) {
        let py = p.get(y).copied().unwrap_or(0.0) as f64;
        loss -= py.clamp(eps, 1.0).ln();
        let best = p
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        hits += usize::from(best == Some(y));
    }
    let classes = probs.first().map_or(0, Vec::len);
    let one_vs_rest = |c: usize| {
        let scores: Vec<f32> = probs
            .iter()
            .map(|p| p.get(c).copied().unwrap_or(0.0))
            .collect();
        let truth: Vec<f32> = labels
            .iter()
            .map(|y| f32::from(u8::from(*y == c)))
            .collect();
        roc_auc(&scores, &truth)
    };
    let auc = if classes == 2 {
        one_vs_rest(1)
    } else {
        let each: Vec<f64> = (0..classes).filter_map(one_vs_rest).collect();
        (!each.is_empty()).then(|| each.iter().sum::<f64>() / each.len() as f64)
    };
    EvalMetrics {
        examples: n as u64,
        loss: loss / n.max(1) as f64,
        accuracy: Some(hits as f64 / n.max(1) as f64),
        auc,
        r2: None,
        mae: None,
        personalized: None,
        business: None,
    }
}

/// The figures of `predicted` values against `targets` (a regression's).
pub fn value_metrics(predicted: &[f64], targets: &[f64]) -> EvalMetrics {
    let n = targets.len().min(predicted.len());
    let (predicted, targets) = (&predicted[..n], &targets[..n]);
    let denom = n.max(1) as f64;
    let sse: f64 = predicted
        .iter()
        .zip(targets)
        .map(|(p, y)| (p - y) * (p - y))
        .sum();
    let mae = predicted
        .iter()
        .zip(targets)
        .map(|(p, y)| (p - y).abs())
        .sum::<f64>()
        / denom;
    let mean = targets.iter().sum::<f64>() / denom;
    let sst: f64 = targets.iter().map(|y| (y - mean) * (y - mean)).sum();
    EvalMetrics {
        examples: n as u64,
        loss: sse / denom,
        accuracy: None,
        auc: None,
        r2: (n > 0 && sst > 0.0).then(|| 1.0 - sse / sst),
        mae: Some(mae),
        personalized: None,
        business: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_multiclass_figures() {
        let m = class_metrics(
            &[vec![0.9, 0.1], vec![0.2, 0.8], vec![0.6, 0.4]],
            &[0, 1, 1],
        );
        assert_eq!(m.examples, 3);
        assert!((m.accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.auc, Some(1.0));
        let want = -((0.9f32 as f64).ln() + (0.8f32 as f64).ln() + (0.4f32 as f64).ln()) / 3.0;
        assert!((m.loss - want).abs() < 1e-9, "{} {want}", m.loss);
        let m = class_metrics(
            &[
                vec![0.8, 0.1, 0.1],
                vec![0.1, 0.8, 0.1],
                vec![0.1, 0.1, 0.8],
            ],
            &[0, 1, 2],
        );
        assert_eq!((m.accuracy, m.auc), (Some(1.0), Some(1.0)));
        assert_eq!(class_metrics(&[vec![0.5, 0.5]], &[1]).auc, None);
    }

    #[test]
    fn regression_figures() {
        let m = value_metrics(&[1.0, 2.0, 4.0], &[1.0, 3.0, 5.0]);
        assert_eq!(m.examples, 3);
        assert!((m.loss - 2.0 / 3.0).abs() < 1e-12, "{}", m.loss);
        assert!((m.mae.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // SST = (1-3)² + 0 + (5-3)² = 8; SSE = 2.
        assert!((m.r2.unwrap() - 0.75).abs() < 1e-12);
        assert_eq!((m.accuracy, m.auc, m.score_name()), (None, None, "R²"));
        let mean_only = value_metrics(&[3.0, 3.0, 3.0], &[1.0, 3.0, 5.0]);
        assert!(
            mean_only.r2.unwrap().abs() < 1e-12,
            "the mean explains nothing"
        );
        assert_eq!(value_metrics(&[1.0, 2.0], &[2.0, 2.0]).r2, None);
    }
}
