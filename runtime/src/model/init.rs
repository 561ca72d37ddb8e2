//! Seeded initialisation.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ModelSpec;

/// Initial parameters: weights uniform in ±√(6 / (fan_in + fan_out)) (Glorot), biases zero.
/// Deterministic in `seed`.
pub fn initial_params(spec: &ModelSpec, seed: u64) -> Vec<f32> {
    let layout = spec.layout();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut params = vec![0.0f32; layout.len];
    for t in &layout.tensors {
        if t.shape.len() == 2 {
            let limit = (6.0 / (t.shape[0] + t.shape[1]) as f64).sqrt() as f32;
            for p in &mut params[t.offset..t.offset + t.len()] {
                *p = rng.random_range(-limit..limit);
            }
        }
    }
    params
}
