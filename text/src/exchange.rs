//! The trainable tensors — LoRA's `A` and `B` of every adapted projection, and the head — as
//! named f32 values, in the model's own (deterministic) order: what a silo sends after
//! training and receives before the next round. Frozen weights never appear. Values coming in
//! are checked: every trainable tensor present once, with its shape, finite.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use crate::TextError;

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
    out: Vec<Named>,
}

impl ModuleVisitor for Export {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if !p.is_require_grad() {
            return;
        }
        let t = p.val();
        let shape = t.dims().to_vec();
        let values = t
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        self.out.push(Named {
            name: self.path.join("."),
            shape,
            values,
        });
    }
}

/// The trainable tensors of `model`, in its order.
pub fn trainable<M: Module>(model: &M) -> Vec<Named> {
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
        if !p.is_require_grad() || self.error.is_some() {
            return p;
        }
        let name = self.path.join(".");
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
        self.used += 1;
        let t = Tensor::<D>::from_data(
            TensorData::new(n.values.clone(), shape.clone()),
            &p.lazy_device(),
        );
        let id = p.id;
        p.transform_for_load(t, id)
    }
}

/// `model` with its trainable tensors set to `values` (matched by name). Refused, naming the
/// tensor, when one is missing, unknown, of another shape or not finite.
pub fn set_trainable<M: Module>(model: M, values: &[Named]) -> Result<M, TextError> {
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
    let model = model.map(&mut import);
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
