//! A custom aggregation kernel: the weighted geometric median of the updates (the point that
//! minimises the weighted sum of Euclidean distances to them), by Weiszfeld's algorithm, as in
//! RFA (Pillutla, Kakade and Harchaoui, 2019). Unlike a coordinate-wise median it is one point
//! of the updates' span, and a minority of updates, however far away, cannot drag it far.

use fedsilo::kernels::custom::CombineRule;

/// Weiszfeld's iteration, bounded.
pub struct GeometricMedian {
    /// At most this many iterations.
    pub iterations: usize,
    /// Stop when a step moves the estimate by less than this, relative to its norm.
    pub tolerance: f64,
}

fn distance(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).powi(2))
        .sum::<f64>()
        .sqrt()
}

impl CombineRule for GeometricMedian {
    fn combine(&self, updates: &[&[f32]], weights: &[f64]) -> Vec<f32> {
        let len = updates[0].len();
        let total: f64 = weights.iter().sum();
        // Start from the weighted mean.
        let mut z = vec![0f64; len];
        for (u, w) in updates.iter().zip(weights) {
            for (zi, x) in z.iter_mut().zip(u.iter()) {
                *zi += w / total * *x as f64;
            }
        }
        for _ in 0..self.iterations {
            let mut next = vec![0f64; len];
            let mut norm = 0.0;
            for (u, w) in updates.iter().zip(weights) {
                // A point on the estimate itself gets a large but finite weight.
                let beta = w / distance(u, &z).max(1e-12);
                norm += beta;
                for (ni, x) in next.iter_mut().zip(u.iter()) {
                    *ni += beta * *x as f64;
                }
            }
            next.iter_mut().for_each(|v| *v /= norm);
            let step = next
                .iter()
                .zip(&z)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                .sqrt();
            let size = z.iter().map(|v| v * v).sum::<f64>().sqrt();
            z = next;
            if step <= self.tolerance * (1.0 + size) {
                break;
            }
        }
        z.into_iter().map(|v| v as f32).collect()
    }

    fn min_updates(&self) -> usize {
        3
    }
}
