//! The trainable tensors — LoRA's `A` and `B` of every adapted projection, and the head — as
//! named f32 values, in the model's own (deterministic) order: what a silo sends after
//! training and receives before the next round. Frozen weights never appear. Which tensors
//! those are is decided by their paths, not by whether burn tracks their gradients (it tracks
//! none on a device without autodiff). Values coming in are checked before anything changes:
//! every trainable tensor present once, with its shape, finite and at most [`MAX_ABS`] in
//! magnitude; a refused set leaves the model as it was.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

use crate::TextError;

/// The largest magnitude accepted for a trainable value: adapters and a head are small (their
/// values sit well below 10); 10⁴ leaves room and keeps a hostile value from overflowing a
/// forward pass.
pub const MAX_ABS: f32 = 1e4;

/// Whether the parameter at `path` trains (and travels).
pub fn is_trainable(path: &str) -> bool {
    path.ends_with(".lora.a") || path.ends_with(".lora.b") || path.starts_with("head.")
}

/// One tensor by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    /// Its path in the model, e.g. `encoder.encoder.layers.0.mha.query.weight.lora.a`.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<f32>,
}

struct Export {
    path: Vec<String>,
    out: Vec<(ParamId, Named)>,
}

impl ModuleVisitor for Export {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        let name = self.path.join(".");
        if !is_trainable(&name) {
            return;
        }
        let t = p.val();
        let shape = t.dims().to_vec();
        // The tensor was just converted to f32: reading it as f32 cannot fail.
        let values = t
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        self.out.push((
            p.id,
            Named {
                name,
                shape,
                values,
            },
        ));
    }
}

/// The trainable tensors of `model`, in its order.
pub fn trainable<M: Module>(model: &M) -> Vec<Named> {
    trainable_params(model)
        .into_iter()
        .map(|(_, n)| n)
        .collect()
}

/// [`trainable`] with each tensor's parameter id (for work on gradients).
pub(crate) fn trainable_params<M: Module>(model: &M) -> Vec<(ParamId, Named)> {
    let mut e = Export {
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut e);
    e.out
}

struct Import<'a> {
    path: Vec<String>,
    values: &'a BTreeMap<&'a str, &'a Named>,
    used: usize,
    error: Option<TextError>,
}

impl ModuleMapper for Import<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.path.join(".");
        if !is_trainable(&name) || self.error.is_some() {
            return p;
        }
        let Some(n) = self.values.get(name.as_str()) else {
            self.error = Some(TextError::Exchange {
                name,
                reason: "missing from the values received".into(),
            });
            return p;
        };
        let shape = p.lazy_shape().dims::<D>().to_vec();
        if n.shape != shape || n.values.len() != shape.iter().product::<usize>() {
            self.error = Some(TextError::Exchange {
                name,
                reason: format!("shape {:?} received, the model's is {shape:?}", n.shape),
            });
            return p;
        }
        if let Some(i) = n.values.iter().position(|v| !v.is_finite()) {
            self.error = Some(TextError::Exchange {
                name,
                reason: format!("value {} at index {i} is not finite", n.values[i]),
            });
            return p;
        }
        if let Some(i) = n.values.iter().position(|v| v.abs() > MAX_ABS) {
            self.error = Some(TextError::Exchange {
                name,
                reason: format!("value {} at index {i} is beyond ±{MAX_ABS}", n.values[i]),
            });
            return p;
        }
        self.used += 1;
        let t = Tensor::<D>::from_data(
            TensorData::new(n.values.clone(), shape.clone()),
            &p.lazy_device(),
        );
        let id = p.id;
        p.transform_for_load(t, id)
    }
}

/// A copy of `model` with its trainable tensors set to `values` (matched by name). Refused,
/// naming the tensor, when one is missing, unknown, given twice, of another shape, not finite
/// or beyond [`MAX_ABS`]; `model` itself is never changed.
pub fn set_trainable<M: Module>(model: &M, values: &[Named]) -> Result<M, TextError> {
    let mut by_name = BTreeMap::new();
    for n in values {
        if by_name.insert(n.name.as_str(), n).is_some() {
            return Err(TextError::Exchange {
                name: n.name.clone(),
                reason: "given twice".into(),
            });
        }
    }
    let mut import = Import {
        path: Vec::new(),
        values: &by_name,
        used: 0,
        error: None,
    };
    // Modules share their tensors: the copy is cheap, and the original survives a refusal.
    let model = model.clone().map(&mut import);
    if let Some(e) = import.error {
        return Err(e);
    }
    if import.used != by_name.len() {
        let known: std::collections::BTreeSet<String> =
            trainable(&model).into_iter().map(|n| n.name).collect();
        let unknown = by_name
            .keys()
            .find(|k| !known.contains(**k))
            .map_or_else(String::new, |k| (*k).to_string());
        return Err(TextError::Exchange {
            name: unknown,
            reason: "not a trainable tensor of this model".into(),
        });
    }
    Ok(model)
}
