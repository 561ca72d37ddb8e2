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
    /// Shuffling seed.
    pub seed: u64,
}

/// Trains `params` in place: `epochs` passes over `(x, y)` in shuffled mini-batches, plain SGD.
/// Deterministic in `sgd.seed`.
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
        seed,
    } = sgd;
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
            for (p, g) in params.iter_mut().zip(&grad) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo::model::{initial_params, ModelSpec};

    #[test]
    fn learns_a_separable_problem() {
        let (x, y) = crate::train::separable(400, 5);
        for hidden in [vec![], vec![8]] {
            let spec = ModelSpec { inputs: 2, hidden };
            let mlp = Mlp::new(&spec);
            let mut p = initial_params(&spec, 1);
            let first = train(
                &mlp,
                &mut p,
                &x,
                &y,
                Sgd {
                    epochs: 1,
                    batch_size: 16,
                    learning_rate: 0.5,
                    seed: 1,
                },
            )
            .last_epoch_loss;
            let later = train(
                &mlp,
                &mut p,
                &x,
                &y,
                Sgd {
                    epochs: 30,
                    batch_size: 16,
                    learning_rate: 0.5,
                    seed: 2,
                },
            )
            .last_epoch_loss;
            assert!(later < first * 0.5, "{:?}: {first} -> {later}", spec);
        }
    }
}
