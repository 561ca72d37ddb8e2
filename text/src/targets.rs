//! What the texts are labelled with, and the loss that trains towards it.
//!
//! A classifier's head has one output per class and trains on the cross-entropy of its
//! logits; a regression's head has a single output and trains on the squared error against
//! numbers the caller has already standardised (fedsilo's silo divides `y − mean` by the
//! manifest's `std`, so a head that starts near zero starts near the data's centre whatever
//! the label's units). The head's width says which a model is: one output cannot be a
//! classifier (a softmax over one class is always 1).

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;

use crate::TextError;

/// The labels of a set of texts.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Class indices, for a head with one output per class (at least two).
    Classes(Vec<usize>),
    /// Standardised numbers, for a head with one output.
    Values(Vec<f32>),
}

impl Targets {
    /// How many texts are labelled.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes(c) => c.len(),
            Targets::Values(v) => v.len(),
        }
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether these targets fit a head of `outputs` outputs: classes below its width (two
    /// or more), or values (finite) for a single output.
    pub fn check(&self, outputs: usize) -> Result<(), TextError> {
        match self {
            Targets::Classes(_) if outputs < 2 => Err(TextError::Data(format!(
                "class labels for a head of {outputs} output: a classifier needs one per class"
            ))),
            Targets::Classes(c) => match c.iter().position(|l| *l >= outputs) {
                Some(i) => Err(TextError::Data(format!(
                    "example {i}: label {} of a {outputs}-class head",
                    c[i]
                ))),
                None => Ok(()),
            },
            Targets::Values(_) if outputs != 1 => Err(TextError::Data(format!(
                "numeric targets for a head of {outputs} outputs: a regression has one"
            ))),
            Targets::Values(v) => match v.iter().position(|y| !y.is_finite()) {
                Some(i) => Err(TextError::Data(format!(
                    "example {i}: target {} is not a number",
                    v[i]
                ))),
                None => Ok(()),
            },
        }
    }

    /// The mean loss of the head's outputs `out` (`[batch.len(), outputs]`) for the texts
    /// `batch` (indices into these targets).
    pub(crate) fn loss(&self, out: Tensor<2>, batch: &[usize]) -> Tensor<1> {
        let device = out.device();
        let n = batch.len();
        match self {
            Targets::Classes(c) => {
                let y: Vec<i64> = batch.iter().map(|i| c[*i] as i64).collect();
                let y = Tensor::<1, Int>::from_data(TensorData::new(y, [n]), &device);
                CrossEntropyLossConfig::new().init(&device).forward(out, y)
            }
            Targets::Values(v) => {
                let y: Vec<f32> = batch.iter().map(|i| v[*i]).collect();
                let y = Tensor::<1>::from_data(TensorData::new(y, [n]), &device);
                let d = out.reshape([n]) - y;
                (d.clone() * d).mean()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_must_fit_the_head() {
        assert!(Targets::Classes(vec![0, 1]).check(2).is_ok());
        assert!(Targets::Classes(vec![0, 2]).check(2).is_err());
        assert!(Targets::Classes(vec![0, 0]).check(1).is_err());
        assert!(Targets::Values(vec![0.5, -1.0]).check(1).is_ok());
        assert!(Targets::Values(vec![0.5]).check(2).is_err());
        assert!(Targets::Values(vec![f32::NAN]).check(1).is_err());
    }

    #[test]
    fn the_regression_loss_is_the_mean_squared_error() {
        let device = Device::flex();
        let out = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 4.0], [3, 1]), &device);
        let t = Targets::Values(vec![1.0, 3.0, 5.0, 100.0]);
        let loss: f32 = t.loss(out, &[0, 1, 2]).into_scalar();
        assert!((loss - 2.0 / 3.0).abs() < 1e-6, "{loss}");
    }
}
