//! Fixed-point encoding of updates into the ring Z_{2^b}, where masked sums are taken.
//!
//! Each value is clipped to [−r, r] and mapped to an integer in [0, L], where L = ⌊(2^b − 1)/m⌋
//! for at most m silos. The sum of m encodings is then at most m·L < 2^b: it never wraps, so
//! the unmasked sum decodes exactly to the sum of the quantised values. A range and bit width
//! that leave too few levels per value is an error when the quantiser is made, before any
//! round starts, never a wrong model after it.

use rayon::prelude::*;
use thiserror::Error;

/// Levels per value below which a configuration is refused (8 bits of resolution).
pub const MIN_LEVELS: u64 = 256;

/// Why a quantiser cannot be made.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum QuantizeError {
    /// The bit width is outside 16..=64.
    #[error("secure aggregation: ring of {0} bits; allowed 16 to 64")]
    Bits(u32),
    /// The clipping range is not a positive number.
    #[error("secure aggregation: range {0}; must be a positive number (values are clipped to [-range, range])")]
    Range(f64),
    /// The sum of `silos` values would leave fewer than [`MIN_LEVELS`] levels per value.
    #[error("secure aggregation: a {bits}-bit ring summing {silos} updates leaves {levels} levels per value (at least {MIN_LEVELS} needed): raise the bits or lower the number of silos")]
    Overflow {
        /// Ring bits.
        bits: u32,
        /// Largest number of silos summed.
        silos: usize,
        /// Levels per value that would be left.
        levels: u64,
    },
    /// Packed bytes that are not the expected number of ring values.
    #[error("{bytes} bytes are not {values} ring values of {width} bytes")]
    Packed {
        /// Bytes received.
        bytes: usize,
        /// Values expected.
        values: usize,
        /// Bytes per value.
        width: usize,
    },
    /// A packed value above the ring's largest.
    #[error("value {value} is outside the {bits}-bit ring")]
    OutsideRing {
        /// The value.
        value: u64,
        /// Ring bits.
        bits: u32,
    },
}

/// A fixed-point code for one federation: ring width, clipping range, most silos summed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantizer {
    bits: u32,
    range: f64,
    levels: u64,
}

impl Quantizer {
    /// Makes the code, or says why the ring would overflow.
    pub fn new(bits: u32, range: f64, max_silos: usize) -> Result<Self, QuantizeError> {
        if !(16..=64).contains(&bits) {
            return Err(QuantizeError::Bits(bits));
        }
        if !(range.is_finite() && range > 0.0) {
            return Err(QuantizeError::Range(range));
        }
        let m = max_silos.max(1) as u64;
        let levels = mask(bits) / m;
        if levels < MIN_LEVELS {
            return Err(QuantizeError::Overflow {
                bits,
                silos: max_silos,
                levels,
            });
        }
        Ok(Quantizer {
            bits,
            range,
            levels,
        })
    }

    /// Ring width in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The largest difference between a value (within range) and its decoding.
    pub fn step(&self) -> f64 {
        2.0 * self.range / self.levels as f64
    }

    /// Encodes one update (each value clipped to the range, rounded to the nearest level).
    pub fn encode(&self, values: &[f32]) -> Vec<u64> {
        self.encode_scaled(values, 1.0)
    }

    /// Encodes `values` × `weight`, each clipped to the range and rounded to the nearest level
    /// (on all cores).
    pub fn encode_scaled(&self, values: &[f32], weight: f64) -> Vec<u64> {
        let scale = self.levels as f64 / (2.0 * self.range);
        values
            .par_iter()
            .with_min_len(1 << 14)
            .map(|v| {
                let c = (*v as f64 * weight).clamp(-self.range, self.range);
                // Non-negative, so adding ½ and truncating rounds to nearest (callers refuse
                // non-finite values before encoding).
                (((c + self.range) * scale + 0.5) as u64).min(self.levels)
            })
            .collect()
    }

    /// Decodes the ring sum of `count` encodings into the sum of the values.
    pub fn decode_sum(&self, sum: &[u64], count: usize) -> Vec<f32> {
        self.decode_mean(sum, count, 1.0)
    }

    /// Decodes the ring sum of `count` encodings into the sum of the values divided by
    /// `divisor` (computed in f64, rounded to f32 once).
    pub fn decode_mean(&self, sum: &[u64], count: usize, divisor: f64) -> Vec<f32> {
        let scale = self.levels as f64 / (2.0 * self.range);
        sum.iter()
            .map(|s| {
                (((*s & mask(self.bits)) as f64 / scale - count as f64 * self.range) / divisor)
                    as f32
            })
            .collect()
    }

    /// Adds the ring values packed in `bytes` (what [`pack`] made) into `sum`. A length that is
    /// not `sum.len()` values, or a value outside the ring, is an error and `sum` is untouched.
    pub fn add_packed(&self, sum: &mut [u64], bytes: &[u8]) -> Result<(), QuantizeError> {
        let w = packed_width(self.bits);
        if bytes.len() != sum.len() * w {
            return Err(QuantizeError::Packed {
                bytes: bytes.len(),
                values: sum.len(),
                width: w,
            });
        }
        let m = mask(self.bits);
        let value = |c: &[u8]| {
            let mut v = [0u8; 8];
            v[..w].copy_from_slice(c);
            u64::from_le_bytes(v)
        };
        if self.bits as usize != 8 * w {
            if let Some(x) = bytes.chunks_exact(w).map(value).find(|x| *x > m) {
                return Err(QuantizeError::OutsideRing {
                    value: x,
                    bits: self.bits,
                });
            }
        }
        if w == 4 {
            for (s, c) in sum.iter_mut().zip(bytes.chunks_exact(4)) {
                *s = s.wrapping_add(u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64) & m;
            }
        } else {
            for (s, c) in sum.iter_mut().zip(bytes.chunks_exact(w)) {
                *s = s.wrapping_add(value(c)) & m;
            }
        }
        Ok(())
    }

    /// Adds `b` into `a` in the ring.
    pub fn add_into(&self, a: &mut [u64], b: &[u64]) {
        let m = mask(self.bits);
        a.iter_mut()
            .zip(b)
            .for_each(|(x, y)| *x = x.wrapping_add(*y) & m);
    }
}

/// Bytes per value on the wire: ⌈bits / 8⌉ (4 for a 32-bit ring, the size of an `f32`).
pub fn packed_width(bits: u32) -> usize {
    bits.div_ceil(8) as usize
}

/// Ring values as little-endian bytes, [`packed_width`] each.
pub fn pack(values: &[u64], bits: u32) -> Vec<u8> {
    let w = packed_width(bits);
    let mut out = vec![0u8; values.len() * w];
    for (b, x) in out.chunks_exact_mut(w).zip(values) {
        b.copy_from_slice(&x.to_le_bytes()[..w]);
    }
    out
}

/// 2^bits − 1.
pub fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_ring_too_small_for_the_silos_is_refused_before_any_round() {
        assert_eq!(
            Quantizer::new(16, 1.0, 1000),
            Err(QuantizeError::Overflow {
                bits: 16,
                silos: 1000,
                levels: 65,
            })
        );
        let e = Quantizer::new(16, 1.0, 1000).unwrap_err().to_string();
        assert!(e.contains("raise the bits"), "{e}");
        assert!(Quantizer::new(32, 1.0, 1000).is_ok());
        assert_eq!(Quantizer::new(8, 1.0, 2), Err(QuantizeError::Bits(8)));
        assert_eq!(
            Quantizer::new(32, f64::NAN, 2)
                .map(|_| ())
                .unwrap_err()
                .to_string(),
            QuantizeError::Range(f64::NAN).to_string()
        );
    }

    #[test]
    fn ring_values_pack_to_whole_bytes_and_malformed_packings_are_refused() {
        let v = vec![0u64, 1, 0xfff_ffff, 0xffff_ffff];
        let q = Quantizer::new(32, 1.0, 2).unwrap();
        assert_eq!(pack(&v, 32).len(), 16);
        let mut sum = vec![0u64; 4];
        q.add_packed(&mut sum, &pack(&v, 32)).unwrap();
        assert_eq!(sum, v);
        assert!(q
            .add_packed(&mut sum, &[1, 2, 3])
            .unwrap_err()
            .to_string()
            .contains("not 4 ring values"));
        assert_eq!(sum, v, "untouched by a refused packing");
        // 20 bits travel in 3 bytes; a value above 2^20 − 1 is refused.
        let q20 = Quantizer::new(20, 1.0, 2).unwrap();
        let mut one = vec![0u64; 2];
        q20.add_packed(&mut one, &pack(&[5, 1 << 19], 20)).unwrap();
        assert_eq!(one, vec![5, 1 << 19]);
        let e = q20
            .add_packed(&mut one, &[0xff, 0xff, 0xff, 0, 0, 0])
            .unwrap_err();
        assert!(matches!(e, QuantizeError::OutsideRing { .. }), "{e}");
        assert_eq!(one, vec![5, 1 << 19]);
    }

    proptest! {
        /// The ring sum of m encodings never wraps and decodes to the sum of the values within
        /// m quantisation steps (half a step each, rounded).
        #[test]
        fn the_sum_decodes_within_the_quantisation_error(
            updates in proptest::collection::vec(proptest::collection::vec(-2.0f32..2.0, 16), 1..12),
            bits in prop_oneof![Just(24u32), Just(32), Just(48), Just(64)],
        ) {
            let m = updates.len();
            let q = Quantizer::new(bits, 1.5, m).unwrap();
            let mut sum = vec![0u64; 16];
            for u in &updates {
                q.add_into(&mut sum, &q.encode(u));
            }
            let got = q.decode_sum(&sum, m);
            for (i, g) in got.iter().enumerate() {
                let want: f64 = updates.iter().map(|u| (u[i] as f64).clamp(-1.5, 1.5)).sum();
                prop_assert!((*g as f64 - want).abs() <= m as f64 * q.step() / 2.0 + 1e-4,
                    "coordinate {}: {} vs {} (step {})", i, g, want, q.step());
            }
        }
    }
}
