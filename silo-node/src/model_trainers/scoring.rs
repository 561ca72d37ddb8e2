//! A classifier's held-out figures from its class probabilities: mean cross-entropy, accuracy
//! of the most probable class, and ROC AUC — of class 1 for a binary task, the mean of each
//! class against the rest for a multiclass one (over the classes present, `None` when the
//! split has a single class). The same figures the tabular MLP reports, so the gate, registry
//! and report read them alike.

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
        accuracy: hits as f64 / n.max(1) as f64,
        auc,
        personalized: None,
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
        assert!((m.accuracy - 2.0 / 3.0).abs() < 1e-12);
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
        assert_eq!((m.accuracy, m.auc), (1.0, Some(1.0)));
        assert_eq!(class_metrics(&[vec![0.5, 0.5]], &[1]).auc, None);
    }
}
