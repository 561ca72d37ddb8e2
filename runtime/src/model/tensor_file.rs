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

/// A tensor's values as f32 when it is stored as F32, F16 or BF16 (exactly: every half-precision
/// value is an f32 value); `None` for other dtypes.
pub fn as_f32(t: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = t.data();
    match t.dtype() {
        Dtype::F32 => Some(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F16 => Some(
            data.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        Dtype::BF16 => Some(
            data.chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        _ => None,
    }
}

impl TensorSet {
    /// Reads a safetensors file; tensors stored as F32, F16 or BF16 are read as f32 (exactly:
    /// every half-precision value is an f32 value). Errors name the file and tensor.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses safetensors bytes read from `origin` (named in errors); F32, F16 and BF16 tensors
    /// are read as f32.
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
            let Some(v) = as_f32(&t) else {
                return Err(bad(format!(
                    "tensor `{name}` is {:?}; F32, F16 and BF16 are supported",
                    t.dtype()
                )));
            };
            values.extend(v);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_tensors_load_exactly_as_f32_and_other_dtypes_are_named() {
        let wanted = [0.5f32, -2.25, 1024.0, 0.0];
        let f16: Vec<u8> = wanted
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let bf16: Vec<u8> = wanted
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let f32b: Vec<u8> = wanted.iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![
            ("a", TensorView::new(Dtype::F16, vec![4], &f16).unwrap()),
            (
                "b",
                TensorView::new(Dtype::BF16, vec![2, 2], &bf16).unwrap(),
            ),
            ("c", TensorView::new(Dtype::F32, vec![4], &f32b).unwrap()),
        ];
        let bytes = safetensors::serialize(views, None).unwrap();
        let set = TensorSet::from_bytes(&bytes, "mixed.safetensors").unwrap();
        assert_eq!(set.values, [wanted, wanted, wanted].concat());
        assert_eq!(set.tensors[1], ("b".to_string(), vec![2, 2]));
        let ints: Vec<u8> = [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![("ids", TensorView::new(Dtype::I64, vec![2], &ints).unwrap())];
        let bytes = safetensors::serialize(views, None).unwrap();
        let e = TensorSet::from_bytes(&bytes, "ids.safetensors")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ids.safetensors") && e.contains("I64"), "{e}");
    }
}
