//! Record-level DP-SGD (Abadi et al. 2016), inside the built-in trainers: a silo protects its
//! own customers from everyone else, the coordinator included.
//!
//! Each step samples a lot by Poisson sampling (every row independently with probability
//! q = L / n, L the expected lot size), computes each sampled row's gradient, clips it to L2
//! norm `clip`, sums, adds Gaussian noise N(0, (z · clip)²) to every coordinate, divides by L
//! and takes an SGD step. The privacy spent is that of the Poisson-subsampled Gaussian
//! mechanism with rate q, multiplier z and one composition per step
//! ([`fedsilo::privacy::rdp`]).

use ndarray::{Array1, Array2, Axis};
use rand::Rng;

use fedsilo::kernels::clip::clip_l2;
use fedsilo::privacy::noise::add_gaussian;

use super::sgd::proximal;
use super::{Mlp, Sgd, TrainOutcome};

/// DP-SGD settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSgd {
    /// Per-example L2 clipping norm C (> 0).
    pub clip: f32,
    /// Noise multiplier z (≥ 0): the noise standard deviation is z·C.
    pub noise_multiplier: f32,
}

/// What a DP-SGD run did, for the accountant.
#[derive(Debug, Clone, PartialEq)]
pub struct DpSgdOutcome {
    /// Loss and examples, as plain training reports them.
    pub outcome: TrainOutcome,
    /// Sampling rate q.
    pub sampling_rate: f64,
    /// Steps taken (compositions of the mechanism).
    pub steps: u64,
}

/// The expected lot size over `n` rows: `batch_size`, at least 1 and at most n.
pub fn lot(n: usize, batch_size: usize) -> usize {
    batch_size.clamp(1, n.max(1))
}

/// The lot schedule of a DP-SGD run over `n` rows: sampling rate q = L / n for an expected lot
/// size L = `batch_size` (at most n), and `epochs · ⌈n / L⌉` steps.
pub fn schedule(n: usize, batch_size: usize, epochs: u32) -> (f64, u64) {
    let lot = lot(n, batch_size);
    (
        lot as f64 / n.max(1) as f64,
        epochs as u64 * n.div_ceil(lot) as u64,
    )
}

/// Trains `params` in place with DP-SGD: `sgd.epochs · ⌈n / L⌉` steps with expected lot size
/// `L = sgd.batch_size`. Lots and noise are drawn from `rng`, which must be unpredictable to
/// everyone the guarantee is against ([`fedsilo::privacy::noise::secure_rng`]); `sgd.seed`,
/// which comes from the coordinator's plan, is not used.
pub fn train_dp<R: Rng + ?Sized>(
    mlp: &Mlp,
    params: &mut [f32],
    x: &Array2<f32>,
    y: &Array1<f32>,
    sgd: Sgd,
    dp: DpSgd,
    rng: &mut R,
) -> DpSgdOutcome {
    let n = x.nrows();
    let (q, steps) = schedule(n, sgd.batch_size, sgd.epochs);
    let lot = lot(n, sgd.batch_size);
    let mut grad = vec![0.0f32; mlp.len()];
    let mut sum = vec![0.0f32; mlp.len()];
    let (mut loss_sum, mut loss_n) = (0.0f64, 0usize);
    let anchor = (sgd.prox_mu > 0.0).then(|| params.to_vec());
    for _ in 0..steps {
        sum.iter_mut().for_each(|v| *v = 0.0);
        for i in 0..n {
            if rng.random::<f64>() >= q {
                continue;
            }
            let xi = x.select(Axis(0), &[i]);
            let yi = y.select(Axis(0), &[i]);
            loss_sum += mlp.loss_and_grad(params, xi.view(), yi.view(), &mut grad);
            loss_n += 1;
            clip_l2(&mut grad, dp.clip as f64);
            sum.iter_mut().zip(&grad).for_each(|(s, g)| *s += g);
        }
        add_gaussian(&mut sum, (dp.noise_multiplier * dp.clip) as f64, rng);
        if let Some(w0) = &anchor {
            // The proximal term depends on no record: it is added after clipping and noise, at
            // the scale of a lot's summed gradient.
            proximal(&mut sum, params, w0, sgd.prox_mu * lot as f32);
        }
        let scale = sgd.learning_rate / lot as f32;
        params
            .iter_mut()
            .zip(&sum)
            .for_each(|(p, g)| *p -= scale * g);
    }
    DpSgdOutcome {
        outcome: TrainOutcome {
            last_epoch_loss: loss_sum / loss_n.max(1) as f64,
            examples: n,
        },
        sampling_rate: q,
        steps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo::model::{initial_params, ModelSpec};
    use fedsilo::privacy::rdp::epsilon;
    use rand::SeedableRng;

    #[test]
    fn dp_sgd_still_learns_and_its_spend_is_accounted() {
        let (x, y) = crate::train::separable(2000, 5);
        let spec = ModelSpec {
            inputs: 2,
            hidden: vec![],
        };
        let mlp = Mlp::new(&spec);
        let mut p = initial_params(&spec, 1);
        let before = crate::train::evaluate(&mlp, &p, &x, &y).loss;
        let sgd = Sgd {
            epochs: 5,
            batch_size: 100,
            learning_rate: 0.5,
            prox_mu: 0.0,
            train_from: 0,
            seed: 3,
        };
        let out = train_dp(
            &mlp,
            &mut p,
            &x,
            &y,
            sgd,
            DpSgd {
                clip: 1.0,
                noise_multiplier: 1.0,
            },
            &mut rand_chacha::ChaCha20Rng::seed_from_u64(3),
        );
        let after = crate::train::evaluate(&mlp, &p, &x, &y).loss;
        assert!(after < before * 0.7, "{before} -> {after}");
        assert_eq!(out.steps, 5 * 20);
        assert!((out.sampling_rate - 0.05).abs() < 1e-12);
        let (eps, _) = epsilon(out.sampling_rate, 1.0, out.steps, 1e-5).unwrap();
        assert!(eps > 0.0 && eps < 10.0, "{eps}");
    }
}
