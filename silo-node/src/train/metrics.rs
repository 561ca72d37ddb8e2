//! Held-out metrics: binary cross-entropy, accuracy and ROC AUC.

use fedsilo::protocol::EvalMetrics;
use ndarray::{Array1, Array2};

use super::Mlp;

/// ROC AUC by the rank-sum (Mann–Whitney U) statistic, ties sharing their mean rank.
/// `None` when only one class is present.
pub fn roc_auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    let pos = labels.iter().filter(|l| **l > 0.5).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if labels[k] > 0.5 {
                rank_sum_pos += mean_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (pos as f64 * (pos as f64 + 1.0)) / 2.0;
    Some(u / (pos as f64 * neg as f64))
}

/// Scores `params` on `(x, y)`.
pub fn evaluate(mlp: &Mlp, params: &[f32], x: &Array2<f32>, y: &Array1<f32>) -> EvalMetrics {
    let p = mlp.predict(params, x.view());
    let eps = 1e-7f64;
    let n = y.len().max(1) as f64;
    let loss = p
        .iter()
        .zip(y.iter())
        .map(|(&p, &t)| {
            let p = (p as f64).clamp(eps, 1.0 - eps);
            -(t as f64 * p.ln() + (1.0 - t as f64) * (1.0 - p).ln())
        })
        .sum::<f64>()
        / n;
    let correct = p
        .iter()
        .zip(y.iter())
        .filter(|(p, t)| (**p >= 0.5) == (**t > 0.5))
        .count();
    EvalMetrics {
        examples: y.len() as u64,
        loss,
        accuracy: Some(correct as f64 / n),
        r2: None,
        mae: None,
        auc: roc_auc(
            p.as_slice().unwrap_or(&p.to_vec()),
            y.as_slice().unwrap_or(&y.to_vec()),
        ),
        personalized: None,
        business: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0.0, 0.0, 1.0, 1.0]),
            Some(0.75)
        );
        assert_eq!(roc_auc(&[0.5, 0.5], &[0.0, 1.0]), Some(0.5));
        assert_eq!(roc_auc(&[0.5, 0.7], &[1.0, 1.0]), None);
    }

    proptest! {
        #[test]
        fn equals_pairwise_definition(v in proptest::collection::vec((0u8..5, any::<bool>()), 2..40)) {
            let scores: Vec<f32> = v.iter().map(|(s, _)| *s as f32).collect();
            let labels: Vec<f32> = v.iter().map(|(_, l)| if *l { 1.0 } else { 0.0 }).collect();
            let (mut num, mut den) = (0.0, 0.0);
            for i in 0..v.len() { for j in 0..v.len() {
                if labels[i] == 1.0 && labels[j] == 0.0 {
                    den += 1.0;
                    num += if scores[i] > scores[j] { 1.0 } else if scores[i] == scores[j] { 0.5 } else { 0.0 };
                }
            }}
            let got = roc_auc(&scores, &labels);
            if den == 0.0 { prop_assert!(got.is_none()); } else { prop_assert!((got.unwrap() - num / den).abs() < 1e-12); }
        }
    }
}
