//! Byzantine behaviour, for robustness experiments only.
//!
//! A silo started with `--attack` trains honestly and then replaces its update before
//! reporting it, as a poisoned member of a consortium would. The robust kernels
//! (`fedsilo::kernels`) are meant to withstand exactly these:
//!
//! - **sign-flip** — the honest update negated and scaled ×10;
//! - **scale** — the honest update scaled ×10 (a silo claiming more than its share);
//! - **inflate** — the honest update, but 100× the examples it trained on claimed as its
//!   weight;
//! - **nan** — NaN everywhere, as a broken trainer would send;
//! - **gaussian** — pure noise, every value drawn from N(0, 1);
//! - **alie** — "a little is enough" (Baruch et al. 2019): the attacker estimates the mean μ
//!   and standard deviation σ of honest updates per coordinate (here from five honest updates
//!   it computes on random halves of its own data) and sends μ − z·σ with z = 1, a shift that
//!   stays within one standard deviation and so hides among honest updates.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use fedsilo::privacy::noise::add_gaussian;

/// An attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    /// −10 × the honest update.
    SignFlip,
    /// +10 × the honest update.
    Scale,
    /// The honest update with 100× its example count claimed.
    Inflate,
    /// N(0, 1) noise in place of the update.
    Gaussian,
    /// μ − σ of honest updates, per coordinate.
    Alie,
    /// NaN in place of every value (a broken trainer); admission must refuse it.
    Nan,
}

/// How many honest updates the ALIE attacker estimates μ and σ from.
pub const ALIE_SAMPLES: usize = 5;

impl Attack {
    /// The malicious update. `honest` holds the silo's honest update first, then (for ALIE)
    /// further honest updates from resampled data; `seed` makes the noise reproducible.
    pub fn forge(&self, honest: &[Vec<f32>], seed: u64) -> Vec<f32> {
        let first = &honest[0];
        match self {
            Attack::SignFlip => first.iter().map(|v| -10.0 * v).collect(),
            Attack::Scale => first.iter().map(|v| 10.0 * v).collect(),
            Attack::Inflate => first.clone(),
            Attack::Nan => vec![f32::NAN; first.len()],
            Attack::Gaussian => {
                let mut v = vec![0.0f32; first.len()];
                add_gaussian(&mut v, 1.0, &mut ChaCha8Rng::seed_from_u64(seed));
                v
            }
            Attack::Alie => {
                let n = honest.len() as f32;
                (0..first.len())
                    .map(|j| {
                        let mean = honest.iter().map(|u| u[j]).sum::<f32>() / n;
                        let var = honest.iter().map(|u| (u[j] - mean).powi(2)).sum::<f32>() / n;
                        mean - var.sqrt()
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_updates() {
        let h = vec![vec![1.0f32, -2.0], vec![3.0, -2.0]];
        assert_eq!(Attack::SignFlip.forge(&h, 0), vec![-10.0, 20.0]);
        assert_eq!(Attack::Alie.forge(&h, 0), vec![1.0, -2.0]); // μ = (2, −2), σ = (1, 0)
        let g = Attack::Gaussian.forge(&[vec![0.0; 10_000]], 7);
        let m = g.iter().sum::<f32>() / 1e4;
        let v = g.iter().map(|x| (x - m).powi(2)).sum::<f32>() / 1e4;
        assert!(m.abs() < 0.05 && (v - 1.0).abs() < 0.05, "{m} {v}");
        assert_eq!(g, Attack::Gaussian.forge(&[vec![0.0; 10_000]], 7));
    }
}
