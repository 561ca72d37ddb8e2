//! A linear projection as BERT's layers use it, with a LoRA adapter run beside its frozen
//! weight: `x·W + b + scale · (x·A)·B`. burn's own `Linear` composes the adapted weight
//! `W + scale · A·B` first and multiplies by that, which makes autodiff compute a gradient of
//! the full `[in, out]` weight — one more large matrix product per projection and step — only
//! to reduce it to `A`'s and `B`'s. Kept apart, the frozen `W` gets no gradient and the
//! adapter's costs `rank / in` of the weight's. The two are the same function (tested).
//!
//! The weights stay in burn's `Linear` with burn's adapter attached (`Module::apply_lora`), so
//! their names, the exchange of the trainable tensors and the pretrained loading are unchanged;
//! only the arithmetic is.

use burn::nn::Linear;
use burn::prelude::*;

/// `linear` applied to the last dimension of `x` `[batch, length, in]`.
pub fn project(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [b, l, d_in] = x.dims();
    let rows = x.reshape([b * l, d_in]);
    let weight = &linear.weight;
    let mut y = match weight.adapter() {
        Some(adapter) => {
            let low = rows
                .clone()
                .matmul(adapter.a.val())
                .matmul(adapter.b.val())
                .mul_scalar(adapter.scale);
            rows.matmul(weight.base()) + low
        }
        None => rows.matmul(weight.val()),
    };
    if let Some(bias) = &linear.bias {
        y = y + bias.val().unsqueeze_dim::<2>(0);
    }
    let d_out = y.dims()[1];
    y.reshape([b, l, d_out])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Lora, Module, Param};
    use burn::nn::LinearConfig;
    use burn::optim::GradientsParams;
    use burn::tensor::Distribution;

    use crate::exchange::{set_trainable, trainable};

    /// A 6→5 projection with a rank-2 adapter whose `B` is not zero (as after training).
    fn adapted(device: &Device) -> Linear {
        device.seed(3);
        let linear = LinearConfig::new(6, 5)
            .init(device)
            .apply_lora(Lora::new(2, 4.0));
        let mut named = trainable(&linear);
        for n in &mut named {
            if n.name.ends_with(".lora.b") {
                n.values = (0..n.values.len()).map(|i| 0.1 * i as f32 - 0.4).collect();
            }
        }
        set_trainable(&linear, &named).unwrap()
    }

    fn values(t: Tensor<3>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn the_adapter_beside_the_weight_is_the_composed_weight() {
        let device = Device::flex();
        let linear = adapted(&device);
        let x = Tensor::<3>::random([2, 3, 6], Distribution::Normal(0.0, 1.0), &device);
        let ours = values(project(&linear, x.clone()));
        let burns = values(linear.forward(x));
        for (a, b) in ours.iter().zip(&burns) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        // The adapter is not zero, so the comparison tests it.
        let plain = Linear {
            weight: Param::from_tensor(linear.weight.base()),
            bias: linear.bias.clone(),
        };
        let x = Tensor::<3>::ones([1, 1, 6], &device);
        assert_ne!(
            values(project(&plain, x.clone())),
            values(project(&linear, x))
        );
    }

    #[test]
    fn only_the_adapter_gets_gradients() {
        let device = Device::flex().autodiff();
        let linear = adapted(&device);
        let x = Tensor::<3>::random([2, 3, 6], Distribution::Normal(0.0, 1.0), &device);
        let grads = project(&linear, x).sum().backward();
        let grads = GradientsParams::from_grads(grads, &linear);
        let adapter = linear.weight.adapter().unwrap();
        assert!(grads.get::<2>(adapter.a.id).is_some());
        assert!(grads.get::<2>(adapter.b.id).is_some());
        assert!(grads.get::<2>(linear.weight.id).is_none());
    }
}
