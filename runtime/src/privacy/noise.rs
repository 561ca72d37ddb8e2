//! Gaussian noise for differential privacy, and where its randomness comes from.
//!
//! DP noise must be unpredictable to everyone the guarantee is against, the coordinator
//! included, so [`secure_rng`] seeds a ChaCha20 generator from the operating system, never from
//! anything on the wire (round seeds, names). Seeded generators are for tests and for fault
//! injection only.
//!
//! Samples are drawn in `f64` by the Box–Muller transform and rounded once when added.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// Silo-level DP a silo applies to its own update before sending it (the policy's
/// `privacy.mode = "distributed"`): clip to `clip_norm`, then add N(0, std²) to every value,
/// from the silo's own secure generator.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpdateNoise {
    /// L2 bound C.
    pub clip_norm: f64,
    /// Standard deviation of this silo's share, z·C/√m for a cohort of m.
    pub std: f64,
}

/// A cryptographically secure generator seeded from the operating system's entropy.
pub fn secure_rng() -> ChaCha20Rng {
    ChaCha20Rng::from_os_rng()
}

/// Adds independent N(0, std²) noise to every value (nothing when `std` ≤ 0).
pub fn add_gaussian<R: Rng + ?Sized>(v: &mut [f32], std: f64, rng: &mut R) {
    if std.is_nan() || std <= 0.0 {
        return;
    }
    let mut pairs = v.chunks_exact_mut(2);
    for pair in &mut pairs {
        let (a, b) = standard_pair(rng);
        pair[0] += (std * a) as f32;
        pair[1] += (std * b) as f32;
    }
    if let [last] = pairs.into_remainder() {
        *last += (std * standard_pair(rng).0) as f32;
    }
}

/// Two independent standard normal samples (Box–Muller).
fn standard_pair<R: Rng + ?Sized>(rng: &mut R) -> (f64, f64) {
    // u1 in (0, 1]: ln(u1) is finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    let r = (-2.0 * u1.ln()).sqrt();
    let t = std::f64::consts::TAU * u2;
    (r * t.cos(), r * t.sin())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
        let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    }

    #[test]
    fn the_noise_has_the_intended_variance() {
        // 200 001 draws of N(0, 1.5²) (odd, so the unpaired last draw is exercised): the sample
        // variance of a correct generator is within ±1 % of 2.25 with overwhelming
        // probability; a wrong scale (std² applied twice, a missing √2 in Box–Muller) is far
        // outside.
        let mut v = vec![0.0f32; 200_001];
        add_gaussian(&mut v, 1.5, &mut ChaCha20Rng::seed_from_u64(11));
        let (mean, var) = moments(&v);
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 2.25).abs() < 0.0225, "variance {var}");
        // The two halves of each Box–Muller pair are uncorrelated.
        let cov = v
            .chunks_exact(2)
            .map(|p| p[0] as f64 * p[1] as f64)
            .sum::<f64>()
            / (v.len() / 2) as f64;
        assert!(cov.abs() < 0.03, "covariance of pairs {cov}");
    }

    #[test]
    fn the_secure_generator_is_not_reproducible() {
        let (mut a, mut b) = (vec![0.0f32; 64], vec![0.0f32; 64]);
        add_gaussian(&mut a, 1.0, &mut secure_rng());
        add_gaussian(&mut b, 1.0, &mut secure_rng());
        assert_ne!(a, b);
        let mut z = vec![0.0f32; 8];
        add_gaussian(&mut z, 0.0, &mut secure_rng());
        assert_eq!(z, vec![0.0; 8]);
    }
}
