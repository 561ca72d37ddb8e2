//! FedProx (Li et al. 2020) on the trainable tensors: the local loss gains μ/2·‖θ − θ₀‖², θ₀
//! the adapters' and head's values when the round's training starts (the global model), which
//! keeps a silo whose data differ from the others' near the federation's model. Its gradient
//! μ·(θ − θ₀) is added to each step's gradient before the optimiser sees it — it depends on no
//! example, so under DP-SGD it is added after the noise and costs no privacy. The loss
//! reported stays the data's.

use burn::module::{Module, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::exchange::Named;
use crate::TextError;

pub(crate) use crate::exchange::trainable_params;

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
    anchor: &[(ParamId, Named)],
    mu: f64,
) -> Result<(), TextError> {
    let now = trainable_params(model);
    for ((id, a), (_, n)) in anchor.iter().zip(&now) {
        let Some((mut g, device)) = take(grads, *id, &a.shape)? else {
            continue;
        };
        for ((gi, ni), ai) in g.iter_mut().zip(&n.values).zip(&a.values) {
            *gi += (mu * (*ni as f64 - *ai as f64)) as f32;
        }
        put(grads, *id, &a.shape, g, &device);
    }
    Ok(())
}
