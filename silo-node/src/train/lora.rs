//! Training LoRA adapters (Hu et al. 2021) on a frozen base: the silo's side of a LoRA
//! federation. The adapters' layout and the merge are [`fedsilo::model::lora`]'s.
//!
//! Gradients come from the full model's: with G = ∂L/∂W for an adapted layer's merged weight,
//! ∂L/∂A = (α/r)·G·Bᵀ and ∂L/∂B = (α/r)·Aᵀ·G.

use fedsilo::model::lora::Adapters;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::sgd::proximal;
use super::{Mlp, Sgd, TrainOutcome};

/// Mean loss of the adapted model on a batch, and its gradient with respect to the adapters
/// written into `grad` (`adapters.len` values, overwritten). `base` stays frozen.
pub fn loss_and_grad(
    lora: &Adapters,
    mlp: &Mlp,
    base: &[f32],
    adapters: &[f32],
    x: ArrayView2<f32>,
    y: ArrayView1<f32>,
    grad: &mut [f32],
) -> f64 {
    let merged = lora.merge(base, adapters);
    let mut full = vec![0.0f32; merged.len()];
    let loss = mlp.loss_and_grad(&merged, x, y, &mut full);
    let r = lora.rank;
    for l in &lora.layers {
        let g = |i: usize, j: usize| full[l.weight + i * l.fan_out + j];
        let a = |i: usize, k: usize| adapters[l.a + i * r + k];
        let b = |k: usize, j: usize| adapters[l.b + k * l.fan_out + j];
        for i in 0..l.fan_in {
            for k in 0..r {
                grad[l.a + i * r + k] =
                    lora.scale * (0..l.fan_out).map(|j| g(i, j) * b(k, j)).sum::<f32>();
            }
        }
        for k in 0..r {
            for j in 0..l.fan_out {
                grad[l.b + k * l.fan_out + j] =
                    lora.scale * (0..l.fan_in).map(|i| a(i, k) * g(i, j)).sum::<f32>();
            }
        }
    }
    loss
}

/// Trains `adapters` in place on `(x, y)` over the frozen `base`: mini-batch SGD as `sgd`
/// says (FedProx's term, if any, on the adapters). Deterministic in `sgd.seed`.
pub fn train_adapters(
    lora: &Adapters,
    mlp: &Mlp,
    base: &[f32],
    adapters: &mut [f32],
    x: &Array2<f32>,
    y: &Array1<f32>,
    sgd: Sgd,
) -> TrainOutcome {
    let n = x.nrows();
    let mut rng = ChaCha8Rng::seed_from_u64(sgd.seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut grad = vec![0.0f32; adapters.len()];
    let anchor = (sgd.prox_mu > 0.0).then(|| adapters.to_vec());
    let mut last_epoch_loss = f64::NAN;
    for _ in 0..sgd.epochs {
        order.shuffle(&mut rng);
        let (mut loss_sum, mut batches) = (0.0, 0usize);
        for idx in order.chunks(sgd.batch_size.max(1)) {
            let (xb, yb) = (x.select(Axis(0), idx), y.select(Axis(0), idx));
            loss_sum += loss_and_grad(lora, mlp, base, adapters, xb.view(), yb.view(), &mut grad);
            batches += 1;
            if let Some(w0) = &anchor {
                proximal(&mut grad, adapters, w0, sgd.prox_mu);
            }
            for (p, g) in adapters.iter_mut().zip(&grad) {
                *p -= sgd.learning_rate * g;
            }
        }
        last_epoch_loss = loss_sum / batches.max(1) as f64;
    }
    TrainOutcome {
        last_epoch_loss,
        examples: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::evaluate;
    use fedsilo::model::initial_params;
    use fedsilo::model::lora::LoraPlan;
    use fedsilo::model::ModelSpec;
    use ndarray::array;

    fn setup() -> (ModelSpec, Adapters) {
        let model = ModelSpec {
            inputs: 2,
            hidden: vec![4],
        };
        let plan = LoraPlan {
            rank: 2,
            layers: vec![0, 1],
            alpha: Some(2.0),
        };
        let lora = Adapters::new(&model, &plan).unwrap();
        (model, lora)
    }

    /// The adapters' gradient against finite differences of the adapted model's loss.
    #[test]
    fn adapter_gradients_match_finite_differences() {
        let (model, lora) = setup();
        let mlp = Mlp::new(&model);
        let base = initial_params(&model, 1);
        // Non-zero B, so that both factors have a gradient.
        let adapters: Vec<f32> = lora
            .init(3)
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.1 * ((i % 5) as f32 - 2.0))
            .collect();
        let x = array![[0.5f32, -1.0], [1.5, 0.3], [-0.2, 0.8]];
        let y = array![1.0f32, 0.0, 1.0];
        let mut g = vec![0.0; lora.len];
        loss_and_grad(&lora, &mlp, &base, &adapters, x.view(), y.view(), &mut g);
        let mut scratch = vec![0.0; lora.len];
        for i in 0..adapters.len() {
            let eps = 1e-2f32;
            let mut p = adapters.clone();
            p[i] += eps;
            let lp = loss_and_grad(&lora, &mlp, &base, &p, x.view(), y.view(), &mut scratch);
            p[i] -= 2.0 * eps;
            let lm = loss_and_grad(&lora, &mlp, &base, &p, x.view(), y.view(), &mut scratch);
            let num = (lp - lm) / (2.0 * eps as f64);
            assert!(
                (num - g[i] as f64).abs() < 2e-3,
                "adapter value {i}: numeric {num} vs analytic {}",
                g[i]
            );
        }
    }

    /// Training the adapters alone lowers the loss of the merged model; the base is untouched.
    #[test]
    fn adapters_learn_while_the_base_stays_frozen() {
        let (model, lora) = setup();
        let mlp = Mlp::new(&model);
        let (x, y) = crate::train::separable(300, 2);
        let base = initial_params(&model, 1);
        let mut adapters = lora.init(3);
        let before = evaluate(&mlp, &lora.merge(&base, &adapters), &x, &y).loss;
        let sgd = Sgd {
            epochs: 20,
            batch_size: 32,
            learning_rate: 0.5,
            prox_mu: 0.0,
            train_from: 0,
            seed: 1,
        };
        train_adapters(&lora, &mlp, &base, &mut adapters, &x, &y, sgd);
        let merged = lora.merge(&base, &adapters);
        let after = evaluate(&mlp, &merged, &x, &y).loss;
        assert!(after < before * 0.7, "{before} -> {after}");
        // Only adapted weights move: every bias is the base's.
        for t in model
            .layout()
            .tensors
            .iter()
            .filter(|t| t.name.ends_with("bias"))
        {
            let r = t.offset..t.offset + t.len();
            assert_eq!(merged[r.clone()], base[r], "{}", t.name);
        }
    }
}
