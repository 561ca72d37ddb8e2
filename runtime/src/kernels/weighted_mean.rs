//! Streaming weighted mean (FedAvg).

use ndarray::{ArrayView1, ArrayViewMut1};

/// Streaming weighted mean of equally long vectors: `Σ wᵢ·uᵢ / Σ wᵢ`.
///
/// Numeric contract: the running sum is kept in `f32` (one fused multiply-add per value and
/// update, BLAS `saxpy` semantics); weights are summed in `f64` and the final scale `1 / Σ wᵢ`
/// is computed in `f64`. Invariant: `sum.len()` is fixed at creation; `total_weight` is the
/// sum of the weights folded so far.
#[derive(Debug, Clone)]
pub struct WeightedMean {
    sum: Vec<f32>,
    total_weight: f64,
    count: usize,
}

/// Why a fold was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FoldError {
    /// The update has another length.
    #[error("update has {got} values, the model has {want}")]
    Length {
        /// Expected.
        want: usize,
        /// Got.
        got: usize,
    },
    /// Weight not finite and positive.
    #[error("weight {0} is not a positive finite number")]
    Weight(f64),
    /// A value is NaN or infinite.
    #[error("update value {index} is {value} (not finite)")]
    NonFinite {
        /// Position.
        index: usize,
        /// The value.
        value: f32,
    },
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
    pub fn fold(&mut self, update: &[f32], weight: f64) -> Result<(), FoldError> {
        if update.len() != self.sum.len() {
            return Err(FoldError::Length {
                want: self.sum.len(),
                got: update.len(),
            });
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(FoldError::Weight(weight));
        }
        if let Some(index) = update.iter().position(|v| !v.is_finite()) {
            return Err(FoldError::NonFinite {
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
    use proptest::prelude::*;

    #[test]
    fn refuses_bad_input_without_changing_state() {
        let mut m = WeightedMean::new(2);
        m.fold(&[1.0, 2.0], 1.0).unwrap();
        assert!(matches!(m.fold(&[1.0], 1.0), Err(FoldError::Length { .. })));
        assert!(matches!(
            m.fold(&[f32::NAN, 0.0], 1.0),
            Err(FoldError::NonFinite { index: 0, .. })
        ));
        assert!(matches!(
            m.fold(&[0.0, 0.0], 0.0),
            Err(FoldError::Weight(_))
        ));
        assert_eq!(m.count(), 1);
        assert_eq!(m.finish().unwrap(), vec![1.0, 2.0]);
    }

    proptest! {
        #[test]
        fn matches_f64_reference(
            ups in proptest::collection::vec((proptest::collection::vec(-100.0f32..100.0, 8), 1u32..5000), 1..12)
        ) {
            let mut m = WeightedMean::new(8);
            for (u, w) in &ups { m.fold(u, *w as f64).unwrap(); }
            let got = m.finish().unwrap();
            let tw: f64 = ups.iter().map(|(_, w)| *w as f64).sum();
            for i in 0..8 {
                let want: f64 = ups.iter().map(|(u, w)| u[i] as f64 * *w as f64).sum::<f64>() / tw;
                prop_assert!((got[i] as f64 - want).abs() <= 1e-3 * (1.0 + want.abs()), "{} vs {}", got[i], want);
            }
        }
    }
}
