//! Architectures and their parameter layouts.

use serde::{Deserialize, Serialize};

/// A feed-forward binary classifier: `inputs` → hidden layers (ReLU) → 1 logit (sigmoid).
/// With no hidden layers it is logistic regression. Invariant: every size is ≥ 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Width of the encoded feature vector.
    pub inputs: usize,
    /// Widths of the hidden layers (empty: logistic regression).
    pub hidden: Vec<usize>,
}

/// One named tensor inside the flat parameter vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name, e.g. `dense0.weight`.
    pub name: String,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// Index of its first value in the flat vector.
    pub offset: usize,
}

impl TensorSpec {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether it has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The tensors of a model in flat order. Invariant: tensors are contiguous and non-overlapping,
/// in order, and `len` is the sum of their sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The tensors.
    pub tensors: Vec<TensorSpec>,
    /// Total number of parameters.
    pub len: usize,
}

/// The widest layer a model may have.
pub const MAX_WIDTH: usize = 1 << 20;
/// The most parameters a model may have (400 MB of `f32`).
pub const MAX_PARAMETERS: usize = 100_000_000;

impl ModelSpec {
    /// Layer widths from input to output: `[inputs, hidden..., 1]`.
    pub fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.inputs];
        w.extend_from_slice(&self.hidden);
        w.push(1);
        w
    }

    /// Validates sizes: every width at least 1 and at most [`MAX_WIDTH`], at most
    /// [`MAX_PARAMETERS`] parameters in all (checked without overflow), so a model is refused
    /// before anything is allocated for it.
    pub fn validate(&self) -> Result<(), super::ModelError> {
        use super::ModelError;
        if self.inputs == 0 {
            return Err(ModelError::NoInputs);
        }
        if let Some(i) = self.hidden.iter().position(|h| *h == 0) {
            return Err(ModelError::EmptyLayer(i));
        }
        let widths = self.widths();
        if let Some(w) = widths.iter().find(|w| **w > MAX_WIDTH) {
            return Err(ModelError::TooWide(*w));
        }
        let params = widths.windows(2).try_fold(0usize, |acc, w| {
            w[0].checked_mul(w[1])
                .and_then(|m| m.checked_add(w[1]))
                .and_then(|n| acc.checked_add(n))
        });
        match params {
            Some(n) if n <= MAX_PARAMETERS => Ok(()),
            _ => Err(ModelError::TooLarge(self.describe())),
        }
    }

    /// The parameter layout: for each layer `i`, `dense{i}.weight` `[in, out]` then
    /// `dense{i}.bias` `[out]`.
    pub fn layout(&self) -> Layout {
        let widths = self.widths();
        let mut tensors = Vec::new();
        let mut offset = 0;
        for (i, pair) in widths.windows(2).enumerate() {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            tensors.push(TensorSpec {
                name: format!("dense{i}.weight"),
                shape: vec![fan_in, fan_out],
                offset,
            });
            offset += fan_in * fan_out;
            tensors.push(TensorSpec {
                name: format!("dense{i}.bias"),
                shape: vec![fan_out],
                offset,
            });
            offset += fan_out;
        }
        Layout {
            tensors,
            len: offset,
        }
    }

    /// A short description, e.g. `mlp 68-32-1` or `logistic 68-1`.
    pub fn describe(&self) -> String {
        let w: Vec<String> = self.widths().iter().map(|w| w.to_string()).collect();
        let kind = if self.hidden.is_empty() {
            "logistic"
        } else {
            "mlp"
        };
        format!("{kind} {}", w.join("-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn layout_is_contiguous() {
        let s = ModelSpec {
            inputs: 5,
            hidden: vec![4, 3],
        };
        let l = s.layout();
        assert_eq!(l.tensors.len(), 6);
        assert_eq!(l.len, 5 * 4 + 4 + 4 * 3 + 3 + 3 + 1);
        let mut next = 0;
        for t in &l.tensors {
            assert_eq!(t.offset, next);
            next += t.len();
        }
        assert_eq!(next, l.len);
        assert_eq!(s.describe(), "mlp 5-4-3-1");
    }
}
