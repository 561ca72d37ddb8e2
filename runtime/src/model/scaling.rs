//! Feature scaling from pooled statistics: each silo sends only counts, sums and sums of
//! squares of its numeric features; their sums give the pooled mean and standard deviation
//! (the same as if the rows were pooled), which every silo then applies. The coordinator
//! combines the silos' statistics with [`combine_stats`]; a silo uses it on its own for a
//! local-only baseline.

use serde::{Deserialize, Serialize};

/// Feature standardisation agreed by the federation: `(x − mean) / std` per numeric feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    /// Mean of each numeric feature, in schema order.
    pub mean: Vec<f32>,
    /// Standard deviation of each numeric feature (> 0).
    pub std: Vec<f32>,
}

/// Mean and standard deviation from pooled counts, sums and sums of squares. A feature with no
/// values or no spread gets mean 0 / std 1 (it then passes through unscaled).
pub fn combine_stats(count: &[u64], sum: &[f64], sum_sq: &[f64]) -> Scaling {
    let mut mean = Vec::with_capacity(count.len());
    let mut std = Vec::with_capacity(count.len());
    for i in 0..count.len() {
        if count[i] == 0 {
            mean.push(0.0);
            std.push(1.0);
            continue;
        }
        let n = count[i] as f64;
        let m = sum[i] / n;
        let var = (sum_sq[i] / n - m * m).max(0.0);
        let s = var.sqrt();
        mean.push(m as f32);
        std.push(if s > 1e-9 { s as f32 } else { 1.0 });
    }
    Scaling { mean, std }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_statistics_equal_the_statistics_of_the_pool() {
        // Two silos: [1, 2, 3] and [10, 20].
        let silo = |v: &[f64]| {
            (
                v.len() as u64,
                v.iter().sum::<f64>(),
                v.iter().map(|x| x * x).sum::<f64>(),
            )
        };
        let (a, b) = (silo(&[1.0, 2.0, 3.0]), silo(&[10.0, 20.0]));
        let s = combine_stats(&[a.0 + b.0], &[a.1 + b.1], &[a.2 + b.2]);
        let all = [1.0f64, 2.0, 3.0, 10.0, 20.0];
        let m = all.iter().sum::<f64>() / 5.0;
        let sd = (all.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 5.0).sqrt();
        assert!((s.mean[0] as f64 - m).abs() < 1e-5);
        assert!((s.std[0] as f64 - sd).abs() < 1e-4);
        let z = combine_stats(&[0, 3], &[0.0, 6.0], &[0.0, 12.0]);
        assert_eq!((z.mean[0], z.std[0]), (0.0, 1.0));
        assert_eq!(z.std[1], 1.0); // constant feature: no spread
    }
}
