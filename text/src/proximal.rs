//! FedProx (Li et al. 2020) on the trainable tensors: the local loss gains μ/2·‖θ − θ₀‖², θ₀
//! the adapters' and head's values when the round's training starts (the global model), which
//! keeps a silo whose data differ from the others' near the federation's model. Its gradient
//! μ·(θ − θ₀) is added to each step's gradient before the optimiser sees it — it depends on no
//! example, so under DP-SGD it is added after the noise and costs no privacy. The loss
//! reported stays the data's.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::exchange::is_trainable;
use crate::TextError;

/// A trainable parameter: its id, shape and values.
#[derive(Debug, Clone)]
pub(crate) struct Trainable {
    pub id: ParamId,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

struct Collect {
    path: Vec<String>,
    out: Vec<Trainable>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if is_trainable(&self.path.join(".")) {
            let t = p.val();
            self.out.push(Trainable {
                id: p.id,
                shape: t.dims().to_vec(),
                // Converted to f32 just before: reading it as f32 cannot fail.
                values: t
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .unwrap_or_default(),
            });
        }
    }
}

/// The trainable parameters of `model`, in its order.
pub(crate) fn trainable_params<M: Module>(model: &M) -> Vec<Trainable> {
    let mut c = Collect {
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

/// A parameter's gradient, taken out of `grads`, as values and the tensor's device.
pub(crate) fn take(
    grads: &mut GradientsParams,
    id: ParamId,
    shape: &[usize],
) -> Result<Option<(Vec<f32>, Device)>, TextError> {
    let t = match shape.len() {
        1 => grads.remove::<1>(id).map(|t| (t.device(), t.into_data())),
        2 => grads.remove::<2>(id).map(|t| (t.device(), t.into_data())),
        d => {
            return Err(TextError::Data(format!(
                "a trainable tensor of {d} dimensions"
            )))
        }
    };
    t.map(|(device, data)| {
        data.convert::<f32>()
            .try_into_vec::<f32>()
            .map(|v| (v, device))
            .map_err(|e| TextError::Data(format!("{e:?}")))
    })
    .transpose()
}

/// Puts a gradient (values of `shape`) back into `grads` on `device`.
pub(crate) fn put(
    grads: &mut GradientsParams,
    id: ParamId,
    shape: &[usize],
    values: Vec<f32>,
    device: &Device,
) {
    let data = TensorData::new(values, shape.to_vec());
    match shape.len() {
        1 => grads.register::<1>(id, Tensor::from_data(data, device)),
        _ => grads.register::<2>(id, Tensor::from_data(data, device)),
    }
}

/// Adds μ·(θ − θ₀) to each trainable parameter's gradient in `grads`, θ read from `model`
/// and θ₀ from `anchor` (taken from the same model). A parameter without a gradient is left
/// as it is.
pub(crate) fn add_proximal<M: Module>(
    grads: &mut GradientsParams,
    model: &M,
    anchor: &[Trainable],
    mu: f64,
) -> Result<(), TextError> {
    let now = trainable_params(model);
    for (a, n) in anchor.iter().zip(&now) {
        let Some((mut g, device)) = take(grads, a.id, &a.shape)? else {
            continue;
        };
        for ((gi, ni), ai) in g.iter_mut().zip(&n.values).zip(&a.values) {
            *gi += (mu * (*ni as f64 - *ai as f64)) as f32;
        }
        put(grads, a.id, &a.shape, g, &device);
    }
    Ok(())
}
