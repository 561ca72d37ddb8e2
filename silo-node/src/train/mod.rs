//! The built-in trainers: logistic regression and a small MLP (ReLU hidden layers, sigmoid
//! output), trained by mini-batch SGD on binary cross-entropy. Forward and backward passes are
//! matrix products through ndarray, which hands them to BLAS (`sgemm`).

pub mod dp_sgd;
pub mod lora;
mod metrics;
mod mlp;
pub mod personal;
mod sgd;

pub use metrics::{evaluate, roc_auc};
pub use mlp::Mlp;
pub use sgd::{train, Sgd, TrainOutcome};

/// A linearly separable toy problem for the trainers' tests: `n` points uniform in [−1, 1]²,
/// label 1 where x₀ + x₁/2 > 0. Deterministic in `seed`.
#[cfg(test)]
pub(crate) fn separable(n: usize, seed: u64) -> (ndarray::Array2<f32>, ndarray::Array1<f32>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x = ndarray::Array2::from_shape_fn((n, 2), |_| rng.random_range(-1.0f32..1.0));
    let y = ndarray::Array1::from_iter(x.rows().into_iter().map(|r| {
        if r[0] + 0.5 * r[1] > 0.0 {
            1.0
        } else {
            0.0
        }
    }));
    (x, y)
}
