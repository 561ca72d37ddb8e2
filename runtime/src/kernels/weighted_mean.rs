//! Weighted mean (FedAvg): streaming, and over a batch of updates already in memory.
//!
//! Numeric contract: weights are normalised in `f64` (`wᵢ / Σw`), then each update is added in
//! `f32` with its normalised weight (one multiply-add per value, `saxpy` semantics); the result
//! is within a few ulp·n of the exact weighted mean. Ties play no role.

use ndarray::{ArrayView1, ArrayViewMut1};

use super::tiles::{for_each_tile, zeroed};
use super::KernelError;

/// Lanes per tile of the batch mean: the accumulator tile (16 KiB) stays in L1 while every
/// update's slice of it streams through once.
const MEAN_TILE: usize = 1 << 14;

/// Weighted mean of updates already in memory: reads each input once, tile by tile, on all
/// cores. Preconditions (checked by [`super::Kernel::combine`]): equal lengths, finite values,
/// positive weights.
pub fn weighted_mean(updates: &[&[f32]], weights: &[f64]) -> Vec<f32> {
    let d = updates.first().map_or(0, |u| u.len());
    let total: f64 = weights.iter().sum();
    let w: Vec<f32> = weights.iter().map(|x| (x / total) as f32).collect();
    let mut out = zeroed(d);
    for_each_tile(&mut out, MEAN_TILE, 0, |start, acc, _| {
        let end = start + acc.len();
        for (u, &wi) in updates.iter().zip(&w) {
            axpy(acc, &u[start..end], wi);
        }
    });
    out
}

/// `acc += w·x`, with an AVX2 build chosen at run time where the CPU has it.
fn axpy(acc: &mut [f32], x: &[f32], w: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { axpy_avx2(acc, x, w) };
            return;
        }
    }
    axpy_body(acc, x, w)
}

#[inline(always)]
fn axpy_body(acc: &mut [f32], x: &[f32], w: f32) {
    for (a, v) in acc.iter_mut().zip(x) {
        *a += w * v;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn axpy_avx2(acc: &mut [f32], x: &[f32], w: f32) {
    axpy_body(acc, x, w)
}

/// Streaming weighted mean of equally long vectors: `Σ wᵢ·uᵢ / Σ wᵢ`, folded in as updates
/// arrive, so memory is O(model) whatever the number of updates.
///
/// Numeric contract: the running sum is kept in `f32` (weights as given, so an update's
/// contribution is exact to one rounding); the total weight in `f64`; the final division in
/// `f64`. Invariant: `sum.len()` is fixed at creation; `total_weight` is the sum of the weights
/// folded so far.
#[derive(Debug, Clone)]
pub struct WeightedMean {
    sum: Vec<f32>,
    total_weight: f64,
    count: usize,
}

impl WeightedMean {
    /// An empty accumulator for vectors of `len` values.
    pub fn new(len: usize) -> Self {
        Self {
            sum: vec![0.0; len],
            total_weight: 0.0,
            count: 0,
        }
    }

    /// Number of updates folded in.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Sum of weights folded in.
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    /// Folds in `update` with `weight`. Refuses (and leaves the accumulator untouched) a wrong
    /// length, a non-positive weight, or a non-finite value.
    pub fn fold(&mut self, update: &[f32], weight: f64) -> Result<(), KernelError> {
        if update.len() != self.sum.len() {
            return Err(KernelError::Length {
                index: self.count,
                len: update.len(),
                want: self.sum.len(),
            });
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(KernelError::Weights(format!(
                "weight {weight} must be a positive number"
            )));
        }
        if let Some(index) = update.iter().position(|v| !v.is_finite()) {
            return Err(KernelError::NonFinite {
                update: self.count,
                index,
                value: update[index],
            });
        }
        let mut acc = ArrayViewMut1::from(&mut self.sum[..]);
        acc.scaled_add(weight as f32, &ArrayView1::from(update));
        self.total_weight += weight;
        self.count += 1;
        Ok(())
    }

    /// The mean, or `None` if nothing was folded.
    pub fn finish(self) -> Option<Vec<f32>> {
        if self.count == 0 {
            return None;
        }
        let scale = 1.0 / self.total_weight;
        Some(
            self.sum
                .into_iter()
                .map(|s| (s as f64 * scale) as f32)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;
    use proptest::prelude::*;

    #[test]
    fn refuses_bad_input_without_changing_state() {
        let mut m = WeightedMean::new(2);
        m.fold(&[1.0, 2.0], 1.0).unwrap();
        assert!(matches!(
            m.fold(&[1.0], 1.0),
            Err(KernelError::Length { .. })
        ));
        assert!(matches!(
            m.fold(&[f32::NAN, 0.0], 1.0),
            Err(KernelError::NonFinite { index: 0, .. })
        ));
        assert!(matches!(
            m.fold(&[0.0, 0.0], 0.0),
            Err(KernelError::Weights(_))
        ));
        assert_eq!(m.count(), 1);
        assert_eq!(m.finish().unwrap(), vec![1.0, 2.0]);
    }

    proptest! {
        #[test]
        fn streaming_and_batch_match_the_f64_reference(
            ups in reference::updates(1..12, 1..300),
            ws in proptest::collection::vec(1u32..5000, 12)
        ) {
            let views: Vec<&[f32]> = ups.iter().map(|u| u.as_slice()).collect();
            let w: Vec<f64> = ws[..ups.len()].iter().map(|x| *x as f64).collect();
            let want = reference::weighted_mean(&views, &w);
            let mut m = WeightedMean::new(views[0].len());
            for (u, wi) in views.iter().zip(&w) { m.fold(u, *wi).unwrap(); }
            reference::assert_close(&m.finish().unwrap(), &want, &views, 1e-5)?;
            reference::assert_close(&weighted_mean(&views, &w), &want, &views, 1e-5)?;
        }
    }
}
