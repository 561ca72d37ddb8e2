//! Dropout with masks drawn in bulk. burn's `Dropout` draws every mask element through its
//! generic sampler on a ChaCha generator, which cost a quarter of a MiniLM training step
//! (docs/performance.md). Here one 64-bit seed per call comes from burn's generator — so
//! `device.seed(s)` still makes a run reproducible, as long as no other thread of the process
//! draws from that process-wide generator meanwhile (a silo trains one job at a time) — and a
//! SplitMix64 stream expands it into
//! the mask, two elements per draw, with the `1 / keep` scale folded into the kept values: one
//! pass to make the mask, one multiplication to apply it.
//!
//! The module holding the probability stays burn's [`Dropout`] (its `training` flag, cleared
//! by `freeze`, is honoured); only its forward pass is replaced. As burn's, it does nothing
//! on a device without autodiff (inference), when frozen, or at probability 0.

use burn::nn::Dropout;
use burn::prelude::*;
use burn::tensor::Distribution;

/// SplitMix64 (Steele, Lea and Flood, 2014): a fast generator whose outputs pass BigCrush —
/// ample for dropout masks.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `n` mask values from `seed`: `1 / keep` with probability `keep`, else 0.
fn mask(n: usize, keep: f64, seed: u64) -> Vec<f32> {
    // An element is kept when its 32 random bits fall below keep · 2³².
    let threshold = (keep * 4_294_967_296.0).min(4_294_967_295.0) as u64;
    let scale = (1.0 / keep) as f32;
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let r = rng.next();
        for half in [r & 0xFFFF_FFFF, r >> 32] {
            out.push(if half < threshold { scale } else { 0.0 });
        }
    }
    out.truncate(n);
    out
}

/// A seed from burn's generator on `device` (two uniform draws make its 64 bits).
fn seed(device: &Device) -> u64 {
    let draws = Tensor::<1>::random([2], Distribution::Uniform(0.0, 1.0), device)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    draws
        .iter()
        .fold(0u64, |s, d| (s << 32) | u64::from(d.to_bits()))
}

/// `x` with each element zeroed with `layer`'s probability and the rest scaled by
/// `1 / (1 − p)`, while training; `x` itself otherwise.
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !layer.training.is_enabled() || !device.is_autodiff() || layer.prob == 0.0 {
        return x;
    }
    let shape = x.shape();
    let values = mask(shape.num_elements(), 1.0 - layer.prob, seed(&device));
    let mask = Tensor::<D>::from_data(TensorData::new(values, shape), &device);
    x * mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::DropoutConfig;

    #[test]
    fn a_mask_keeps_about_the_asked_share_scaled() {
        let m = mask(100_001, 0.9, 7);
        assert_eq!(m.len(), 100_001);
        let kept = m.iter().filter(|v| **v != 0.0).count() as f64 / m.len() as f64;
        assert!((kept - 0.9).abs() < 0.005, "kept {kept}");
        let scale = (1.0 / 0.9) as f32;
        assert!(m.iter().all(|v| *v == 0.0 || *v == scale));
        // The mean is preserved: E[mask] = 1.
        let mean = m.iter().map(|v| f64::from(*v)).sum::<f64>() / m.len() as f64;
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn masks_differ_by_seed_and_repeat_by_seed() {
        assert_eq!(mask(1000, 0.5, 1), mask(1000, 0.5, 1));
        assert_ne!(mask(1000, 0.5, 1), mask(1000, 0.5, 2));
    }

    #[test]
    fn it_acts_only_while_training_on_an_autodiff_device() {
        let layer = DropoutConfig::new(0.5).init();
        let x = |d: &Device| Tensor::<2>::ones([64, 64], d);
        let inference = Device::flex();
        assert_eq!(
            dropout(&layer, x(&inference)).into_data(),
            x(&inference).into_data()
        );
        let training = Device::flex().autodiff();
        let dropped = dropout(&layer, x(&training))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let zeros = dropped.iter().filter(|v| **v == 0.0).count();
        assert!((1500..2600).contains(&zeros), "{zeros} of 4096 zeroed");
        assert!(dropped.iter().all(|v| *v == 0.0 || *v == 2.0));
        let frozen = layer.clone().freeze();
        assert_eq!(
            dropout(&frozen, x(&training)).into_data(),
            x(&training).into_data()
        );
        let off = DropoutConfig::new(0.0).init();
        assert_eq!(
            dropout(&off, x(&training)).into_data(),
            x(&training).into_data()
        );
    }
}
