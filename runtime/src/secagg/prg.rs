//! Masks expanded from a 32-byte seed by ChaCha20: the same seed gives the same mask at both
//! ends of a pair (or at the unmasking server for a self-mask), and without the seed the mask
//! is indistinguishable from uniform.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;

use super::quantize::mask;

/// Values per piece of work: pieces are masked in parallel, each from its own position in
/// the keystream, so the result does not depend on how many cores there are.
const BLOCK: usize = 1 << 14;

/// Bytes of keystream per value: 4 for rings up to 32 bits, else 8.
fn width(bits: u32) -> usize {
    if bits <= 32 {
        4
    } else {
        8
    }
}

/// Adds (or, with `subtract`, subtracts) the mask expanded from `seed` to `target`, in
/// Z_{2^bits}, without materialising the mask.
pub fn apply(seed: &[u8; 32], bits: u32, target: &mut [u64], subtract: bool) {
    apply_all(&[(*seed, subtract)], bits, target)
}

/// Applies every mask of `masks` (a seed, and whether to subtract it) to `target`: the same
/// as [`apply`] for each in turn, on all cores, reading `target` once.
pub fn apply_all(masks: &[([u8; 32], bool)], bits: u32, target: &mut [u64]) {
    let (m, w) = (mask(bits), width(bits));
    target
        .par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(k, chunk)| {
            let mut buf = vec![0u8; chunk.len() * w];
            for (seed, subtract) in masks {
                let mut rng = ChaCha20Rng::from_seed(*seed);
                rng.set_word_pos((k * BLOCK * w / 4) as u128);
                rng.fill_bytes(&mut buf);
                let add = |t: &mut u64, r: u64| {
                    *t = if *subtract {
                        t.wrapping_sub(r & m)
                    } else {
                        t.wrapping_add(r & m)
                    } & m
                };
                if w == 4 {
                    for (t, c) in chunk.iter_mut().zip(buf.chunks_exact(4)) {
                        add(t, u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64);
                    }
                } else {
                    for (t, c) in chunk.iter_mut().zip(buf.chunks_exact(8)) {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(c);
                        add(t, u64::from_le_bytes(b));
                    }
                }
            }
        });
}

/// `len` values uniform in Z_{2^bits}, expanded from `seed` (what [`apply`] adds).
pub fn expand(seed: &[u8; 32], len: usize, bits: u32) -> Vec<u64> {
    let mut out = vec![0u64; len];
    apply(seed, bits, &mut out, false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secagg::quantize::Quantizer;

    #[test]
    fn the_same_seed_gives_the_same_mask_and_others_do_not() {
        let (a, b) = ([7u8; 32], [8u8; 32]);
        assert_eq!(expand(&a, 100, 32), expand(&a, 100, 32));
        assert_ne!(expand(&a, 100, 32), expand(&b, 100, 32));
        assert!(expand(&a, 1000, 24).iter().all(|v| *v < 1 << 24));
        // Pieces masked in parallel read the keystream where a single pass would.
        let long = expand(&a, 3 * BLOCK + 5, 32);
        let mut one = ChaCha20Rng::from_seed(a);
        let serial: Vec<u64> = (0..long.len()).map(|_| one.next_u32() as u64).collect();
        assert_eq!(long, serial);
        let mut both = vec![0u64; 100];
        apply_all(&[(a, false), (b, false), (a, true)], 40, &mut both);
        assert_eq!(both, expand(&b, 100, 40));
    }

    /// A masked update seen alone: its bytes pass a chi-squared test for uniformity (255
    /// degrees of freedom; the 0.999 quantile is about 330), while the unmasked encoding fails
    /// it by far — so the test can fail.
    #[test]
    fn a_masked_update_is_indistinguishable_from_uniform_bytes() {
        let chi2 = |v: &[u64]| {
            let mut counts = [0u64; 256];
            let mut n = 0u64;
            for x in v {
                for byte in x.to_le_bytes()[..4].iter() {
                    counts[*byte as usize] += 1;
                    n += 1;
                }
            }
            let e = n as f64 / 256.0;
            counts
                .iter()
                .map(|c| (*c as f64 - e).powi(2) / e)
                .sum::<f64>()
        };
        let q = Quantizer::new(32, 1.0, 10).unwrap();
        // A realistic update: small values around zero.
        let update: Vec<f32> = (0..50_000)
            .map(|i| ((i % 97) as f32 - 48.0) / 500.0)
            .collect();
        let mut masked = q.encode(&update);
        let plain = masked.clone();
        let mask = expand(&[42u8; 32], masked.len(), 32);
        q.add_into(&mut masked, &mask);
        assert!(chi2(&masked) < 330.0, "masked: chi2 {}", chi2(&masked));
        assert!(chi2(&plain) > 10_000.0, "plain: chi2 {}", chi2(&plain));
    }
}
