//! Sets of named `f32` tensors in safetensors files, flattened in name order — the form of
//! update files that `fedsilo aggregate` combines.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use super::{Layout, TensorSpec};
use crate::{Error, Result};

/// Named tensors flattened into one vector. Invariant: `values.len()` is the sum of the
/// shapes' products; tensors are in ascending name order.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSet {
    /// `(name, shape)` in ascending name order.
    pub tensors: Vec<(String, Vec<usize>)>,
    /// All values, tensor after tensor.
    pub values: Vec<f32>,
}

/// `layout`'s tensors in name order, as files keep them.
fn in_name_order(layout: &Layout) -> Vec<&TensorSpec> {
    let mut order: Vec<&TensorSpec> = layout.tensors.iter().collect();
    order.sort_by(|a, b| a.name.cmp(&b.name));
    order
}

impl TensorSet {
    /// Reads a safetensors file; every tensor must be F32. Errors name the file and tensor.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses safetensors bytes read from `origin` (named in errors); every tensor must be F32.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let bad = |m: String| Error::Checkpoint {
            origin: origin.to_string(),
            message: m,
        };
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let mut names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
        names.sort();
        if names.is_empty() {
            return Err(bad("holds no tensors".into()));
        }
        let mut tensors = Vec::with_capacity(names.len());
        let mut values = Vec::new();
        for name in names {
            let t = st
                .tensor(&name)
                .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            if t.dtype() != Dtype::F32 {
                return Err(bad(format!(
                    "tensor `{name}` is {:?}; only F32 is supported",
                    t.dtype()
                )));
            }
            values.extend(
                t.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            tensors.push((name, t.shape().to_vec()));
        }
        Ok(TensorSet { tensors, values })
    }

    /// Checks that `other` (read from `origin`) has the same tensor names and shapes as this
    /// reference set.
    pub fn check_same_layout(&self, other: &TensorSet, origin: &str) -> Result<()> {
        let bad = |m: String| Error::Checkpoint {
            origin: origin.to_string(),
            message: m,
        };
        for (name, shape) in &self.tensors {
            match other.tensors.iter().find(|(n, _)| n == name) {
                None => {
                    return Err(bad(format!(
                        "tensor `{name}` is missing (expected with shape {shape:?})"
                    )))
                }
                Some((_, s)) if s != shape => {
                    return Err(bad(format!(
                        "tensor `{name}` has shape {s:?}, expected {shape:?}"
                    )))
                }
                _ => {}
            }
        }
        if let Some((name, _)) = other
            .tensors
            .iter()
            .find(|(n, _)| !self.tensors.iter().any(|(m, _)| m == n))
        {
            return Err(bad(format!("tensor `{name}` is not expected here")));
        }
        Ok(())
    }

    /// The tensors of `layout` holding `params` (in name order, as files keep them).
    pub fn from_layout(layout: &Layout, params: &[f32]) -> Self {
        let order = in_name_order(layout);
        TensorSet {
            tensors: order
                .iter()
                .map(|t| (t.name.clone(), t.shape.clone()))
                .collect(),
            values: order
                .iter()
                .flat_map(|t| params[t.offset..t.offset + t.len()].iter().copied())
                .collect(),
        }
    }

    /// The parameters in `layout`'s order. The set must hold exactly `layout`'s tensors with
    /// their shapes, and finite values; errors name `origin` and the tensor.
    pub fn to_layout(&self, layout: &Layout, origin: &str) -> Result<Vec<f32>> {
        let expected = TensorSet {
            tensors: in_name_order(layout)
                .iter()
                .map(|t| (t.name.clone(), t.shape.clone()))
                .collect(),
            values: Vec::new(),
        };
        expected.check_same_layout(self, origin)?;
        let mut params = vec![0.0f32; layout.len];
        let mut at = 0;
        for (name, shape) in &self.tensors {
            let len: usize = shape.iter().product();
            let values = &self.values[at..at + len];
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(Error::Checkpoint {
                    origin: origin.to_string(),
                    message: format!("tensor `{name}` holds {} at index {i}", values[i]),
                });
            }
            // check_same_layout found every name in the layout.
            if let Some(t) = layout.tensors.iter().find(|t| t.name == *name) {
                params[t.offset..t.offset + len].copy_from_slice(values);
            }
            at += len;
        }
        Ok(params)
    }

    /// Writes `values` (same layout as `self`) to `path`, with `metadata`.
    pub fn write_like(
        &self,
        values: &[f32],
        path: &Path,
        metadata: HashMap<String, String>,
    ) -> Result<()> {
        let origin = path.display().to_string();
        let bad = |m: String| Error::Checkpoint {
            origin: origin.clone(),
            message: m,
        };
        let mut bufs = Vec::with_capacity(self.tensors.len());
        let mut offset = 0;
        for (name, shape) in &self.tensors {
            let len: usize = shape.iter().product();
            let bytes: Vec<u8> = values[offset..offset + len]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            bufs.push((name.clone(), shape.clone(), bytes));
            offset += len;
        }
        let views = bufs
            .iter()
            .map(|(n, s, b)| {
                TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| bad(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let data = safetensors::serialize(views, Some(metadata)).map_err(|e| bad(e.to_string()))?;
        super::checkpoint::write_atomic(path, &data)
    }
}
