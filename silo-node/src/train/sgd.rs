//! Mini-batch SGD.

use ndarray::{Array1, Array2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Mlp;

/// What a training run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// Mean loss over the batches of the last epoch.
    pub last_epoch_loss: f64,
    /// Examples seen per epoch.
    pub examples: usize,
}

/// SGD hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    /// Passes over the data.
    pub epochs: u32,
    /// Mini-batch size (≥ 1).
    pub batch_size: usize,
    /// Step size.
    pub learning_rate: f32,
    /// FedProx μ: adds μ/2·‖w − w₀‖² to the loss, w₀ being the parameters training starts
    /// from (the global model), so each step also pulls by μ(w − w₀). 0: plain SGD.
    pub prox_mu: f32,
    /// Only parameters from this index on are trained, the rest frozen (0: all). The last
    /// dense layer is a suffix of the layout, so personalisation trains the head this way.
    pub train_from: usize,
    /// Shuffling seed.
    pub seed: u64,
}

/// Trains `params` in place: `epochs` passes over `(x, y)` in shuffled mini-batches, SGD with
/// FedProx's proximal term when `sgd.prox_mu` > 0. Deterministic in `sgd.seed`.
pub fn train(
    mlp: &Mlp,
    params: &mut [f32],
    x: &Array2<f32>,
    y: &Array1<f32>,
    sgd: Sgd,
) -> TrainOutcome {
    let Sgd {
        epochs,
        batch_size,
        learning_rate,
        prox_mu,
        train_from,
        seed,
    } = sgd;
    let anchor = (prox_mu > 0.0).then(|| params.to_vec());
    let n = x.nrows();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..n).collect();
    let mut grad = vec![0.0f32; mlp.len()];
    let mut last_epoch_loss = f64::NAN;
    for _ in 0..epochs {
        order.shuffle(&mut rng);
        let (mut loss_sum, mut batches) = (0.0, 0usize);
        for idx in order.chunks(batch_size.max(1)) {
            let xb = x.select(Axis(0), idx);
            let yb = y.select(Axis(0), idx);
            loss_sum += mlp.loss_and_grad(params, xb.view(), yb.view(), &mut grad);
            batches += 1;
            if let Some(w0) = &anchor {
                proximal(&mut grad, params, w0, prox_mu);
            }
            let from = train_from.min(params.len());
            for (p, g) in params[from..].iter_mut().zip(&grad[from..]) {
                *p -= learning_rate * g;
            }
        }
        last_epoch_loss = loss_sum / batches.max(1) as f64;
    }
    TrainOutcome {
        last_epoch_loss,
        examples: n,
    }
}

/// Adds the gradient of FedProx's proximal term μ/2·‖w − w₀‖², i.e. μ(w − w₀), to `grad`.
pub fn proximal(grad: &mut [f32], params: &[f32], anchor: &[f32], mu: f32) {
    for ((g, p), a) in grad.iter_mut().zip(params).zip(anchor) {
        *g += mu * (p - a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo::model::{initial_params, ModelSpec};

    fn sgd(epochs: u32, prox_mu: f32, seed: u64) -> Sgd {
        Sgd {
            epochs,
            batch_size: 16,
            learning_rate: 0.5,
            prox_mu,
            train_from: 0,
            seed,
        }
    }

    /// FedProx with μ = 0 is plain local SGD, step for step: checked against a plain
    /// mini-batch SGD loop written out here.
    #[test]
    fn fedprox_with_mu_zero_is_plain_local_sgd() {
        let (x, y) = crate::train::separable(300, 9);
        let spec = ModelSpec {
            inputs: 2,
            hidden: vec![4],
        };
        let mlp = Mlp::new(&spec);
        let mut fedprox = initial_params(&spec, 3);
        train(&mlp, &mut fedprox, &x, &y, sgd(3, 0.0, 5));
        let mut plain = initial_params(&spec, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut order: Vec<usize> = (0..x.nrows()).collect();
        let mut grad = vec![0.0f32; mlp.len()];
        for _ in 0..3 {
            order.shuffle(&mut rng);
            for idx in order.chunks(16) {
                let (xb, yb) = (x.select(Axis(0), idx), y.select(Axis(0), idx));
                mlp.loss_and_grad(&plain, xb.view(), yb.view(), &mut grad);
                for (p, g) in plain.iter_mut().zip(&grad) {
                    *p -= 0.5 * g;
                }
            }
        }
        assert_eq!(fedprox, plain);
    }

    /// The proximal term is the gradient of μ/2·‖w − w₀‖² (finite differences), and a larger μ
    /// keeps the local model closer to where it started.
    #[test]
    fn the_proximal_term_pulls_towards_the_global_model() {
        let (p, a, mu) = ([0.3f32, -1.2, 2.0], [0.1f32, 0.4, 2.5], 0.7f32);
        let mut g = [0.0f32; 3];
        proximal(&mut g, &p, &a, mu);
        let f = |w: &[f32]| {
            mu as f64 / 2.0
                * w.iter()
                    .zip(&a)
                    .map(|(x, y)| ((x - y) as f64).powi(2))
                    .sum::<f64>()
        };
        for i in 0..3 {
            let (mut hi, mut lo) = (p, p);
            hi[i] += 1e-3;
            lo[i] -= 1e-3;
            let numeric = (f(&hi) - f(&lo)) / 2e-3;
            assert!(
                (numeric - g[i] as f64).abs() < 1e-3,
                "{numeric} vs {}",
                g[i]
            );
        }
        let (x, y) = crate::train::separable(300, 9);
        let spec = ModelSpec {
            inputs: 2,
            hidden: vec![4],
        };
        let mlp = Mlp::new(&spec);
        let start = initial_params(&spec, 3);
        let drift = |mu: f32| {
            let mut w = start.clone();
            train(&mlp, &mut w, &x, &y, sgd(5, mu, 5));
            w.iter()
                .zip(&start)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
                .sqrt()
        };
        let (d0, d1, d10) = (drift(0.0), drift(0.1), drift(1.0));
        assert!(d0 > d1 && d1 > d10, "drift {d0} > {d1} > {d10} expected");
    }

    #[test]
    fn learns_a_separable_problem() {
        let (x, y) = crate::train::separable(400, 5);
        for hidden in [vec![], vec![8]] {
            let spec = ModelSpec { inputs: 2, hidden };
            let mlp = Mlp::new(&spec);
            let mut p = initial_params(&spec, 1);
            let first = train(&mlp, &mut p, &x, &y, sgd(1, 0.0, 1)).last_epoch_loss;
            let later = train(&mlp, &mut p, &x, &y, sgd(30, 0.0, 2)).last_epoch_loss;
            assert!(later < first * 0.5, "{:?}: {first} -> {later}", spec);
        }
    }
}
