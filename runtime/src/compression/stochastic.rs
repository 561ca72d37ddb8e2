//! 8- and 4-bit quantisation with stochastic rounding (QSGD-style, Alistarh et al. 2017), one
//! scale per block of [`BLOCK`] values.
//!
//! In a block with largest magnitude s, a value x becomes the integer code q in [−L, L]
//! (L = 127 for 8 bits, 7 for 4 bits) just below or above x·L/s, rounded up with probability
//! equal to the remainder. The decoding q·s/L is then unbiased (its expectation is x) and at
//! most one step s/L away from x.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::ChunkError;

/// Values per scale.
pub const BLOCK: usize = 256;

/// An update quantised once, whole, as the silo keeps it: one code per value.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedUpdate {
    bits: u8,
    scales: Vec<f32>,
    codes: Vec<i8>,
}

/// One chunk of a quantised update, as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantized {
    /// Code width: 8 or 4.
    pub bits: u8,
    /// Index of the chunk's first value in the update (blocks are counted from value 0).
    pub offset: u64,
    /// The scales of the blocks the chunk overlaps.
    pub scales: Vec<f32>,
    /// The codes, one per byte (8 bits) or two per byte, low nibble first (4 bits).
    #[serde(with = "serde_bytes")]
    pub codes: Vec<u8>,
}

fn levels(bits: u8) -> i32 {
    (1 << (bits - 1)) - 1
}

/// Quantises `values` to `bits` (8 or 4) with stochastic rounding from `rng`.
pub fn quantize<R: Rng + ?Sized>(values: &[f32], bits: u8, rng: &mut R) -> QuantizedUpdate {
    let l = levels(bits) as f32;
    let mut scales = Vec::with_capacity(values.len().div_ceil(BLOCK));
    let mut codes = Vec::with_capacity(values.len());
    for block in values.chunks(BLOCK) {
        let s = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        scales.push(s);
        for v in block {
            let q = if s > 0.0 {
                let t = v / s * l;
                let lo = t.floor();
                lo + if rng.random::<f32>() < t - lo {
                    1.0
                } else {
                    0.0
                }
            } else {
                0.0
            };
            codes.push(q.clamp(-l, l) as i8);
        }
    }
    QuantizedUpdate {
        bits,
        scales,
        codes,
    }
}

impl QuantizedUpdate {
    /// The decoded update.
    pub fn decode(&self) -> Vec<f32> {
        let l = levels(self.bits) as f32;
        self.codes
            .iter()
            .enumerate()
            .map(|(i, q)| *q as f32 * self.scales[i / BLOCK] / l)
            .collect()
    }

    /// The values `offset..offset + len` as they travel (`None`: out of range).
    pub fn chunk(&self, offset: usize, len: usize) -> Option<Quantized> {
        let end = offset.checked_add(len)?;
        if end > self.codes.len() || len == 0 {
            return None;
        }
        let codes = &self.codes[offset..end];
        let packed = if self.bits == 8 {
            codes.iter().map(|q| *q as u8).collect()
        } else {
            codes
                .chunks(2)
                .map(|p| (p[0] as u8 & 0x0f) | ((*p.get(1).unwrap_or(&0) as u8 & 0x0f) << 4))
                .collect()
        };
        Some(Quantized {
            bits: self.bits,
            offset: offset as u64,
            scales: self.scales[offset / BLOCK..=(end - 1) / BLOCK].to_vec(),
            codes: packed,
        })
    }
}

impl Quantized {
    /// Decodes the chunk, which must hold `len` values starting at `offset`. Malformed chunks
    /// (another width, offset or length, a scale that is negative or not finite, a code out of
    /// range) are refused with what is wrong.
    pub fn decode(&self, offset: u64, len: usize) -> Result<Vec<f32>, ChunkError> {
        if self.bits != 8 && self.bits != 4 {
            return Err(ChunkError::Bits(self.bits));
        }
        if self.offset != offset {
            return Err(ChunkError::Offset {
                at: self.offset,
                asked: offset,
            });
        }
        if len == 0 {
            return Err(ChunkError::Empty);
        }
        let first = offset as usize / BLOCK;
        let last = (offset as usize + len - 1) / BLOCK;
        if self.scales.len() != last - first + 1 {
            return Err(ChunkError::Scales {
                got: self.scales.len(),
                blocks: last - first + 1,
            });
        }
        if let Some(s) = self.scales.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(ChunkError::Scale(*s));
        }
        let want = if self.bits == 8 { len } else { len.div_ceil(2) };
        if self.codes.len() != want {
            return Err(ChunkError::Codes {
                got: self.codes.len(),
                len,
                bits: self.bits,
            });
        }
        if self.bits == 4 && len % 2 == 1 && self.codes[len / 2] >> 4 != 0 {
            return Err(ChunkError::Padding);
        }
        let l = levels(self.bits);
        let code = |i: usize| -> i32 {
            if self.bits == 8 {
                self.codes[i] as i8 as i32
            } else {
                let nibble = (self.codes[i / 2] >> (4 * (i % 2))) & 0x0f;
                ((nibble << 4) as i8 >> 4) as i32
            }
        };
        (0..len)
            .map(|i| {
                let q = code(i);
                if q.abs() > l {
                    return Err(ChunkError::Code {
                        code: q,
                        at: offset as usize + i,
                    });
                }
                let s = self.scales[(offset as usize + i) / BLOCK - first];
                Ok(q as f32 * s / l as f32)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn update(n: usize) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        (0..n)
            .map(|i| rng.random_range(-1.0f32..1.0) * (1 + i % 7) as f32)
            .collect()
    }

    #[test]
    fn every_value_is_within_one_step_of_its_decoding() {
        let x = update(1000);
        for bits in [8u8, 4] {
            let q = quantize(&x, bits, &mut ChaCha8Rng::seed_from_u64(2));
            let d = q.decode();
            for (i, (a, b)) in x.iter().zip(&d).enumerate() {
                let step = q.scales[i / BLOCK] / levels(bits) as f32;
                assert!(
                    (a - b).abs() <= step * 1.0001,
                    "bits {bits}, value {i}: {a} vs {b}"
                );
            }
        }
    }

    /// Stochastic rounding is unbiased: averaged over many draws the decoding is the value
    /// (to within 4 standard errors), where rounding to nearest would be off by up to half a
    /// step.
    #[test]
    fn stochastic_rounding_is_unbiased() {
        let x = vec![0.3f32, -0.55, 1.0, 0.01];
        let draws = 20_000;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut mean = [0.0f64; 4];
        for _ in 0..draws {
            for (m, v) in mean.iter_mut().zip(quantize(&x, 4, &mut rng).decode()) {
                *m += v as f64 / draws as f64;
            }
        }
        let step = 1.0 / 7.0;
        for (m, v) in mean.iter().zip(&x) {
            let se = step / 2.0 / (draws as f64).sqrt();
            assert!((m - *v as f64).abs() < 4.0 * se, "{m} vs {v}");
        }
    }

    #[test]
    fn chunks_decode_to_the_whole_and_malformed_chunks_are_refused() {
        let x = update(1000);
        for bits in [8u8, 4] {
            let q = quantize(&x, bits, &mut ChaCha8Rng::seed_from_u64(4));
            let mut joined = Vec::new();
            for off in (0..1000).step_by(97) {
                let len = 97.min(1000 - off);
                let c = q.chunk(off, len).unwrap();
                joined.extend(c.decode(off as u64, len).unwrap());
            }
            assert_eq!(joined, q.decode());
            let c = q.chunk(300, 97).unwrap();
            assert!(c
                .decode(301, 97)
                .unwrap_err()
                .to_string()
                .contains("asked for"));
            let mut bad = c.clone();
            bad.scales[0] = f32::NAN;
            assert!(bad
                .decode(300, 97)
                .unwrap_err()
                .to_string()
                .contains("scale"));
            let mut short = c.clone();
            short.codes.pop();
            assert!(short
                .decode(300, 97)
                .unwrap_err()
                .to_string()
                .contains("bytes of codes"));
            if bits == 4 {
                // 97 values: the last byte carries one code and a padding nibble.
                let mut padded = c.clone();
                *padded.codes.last_mut().expect("codes") |= 0x30;
                assert!(padded
                    .decode(300, 97)
                    .unwrap_err()
                    .to_string()
                    .contains("padding"));
            }
        }
        let mut c = quantize(&x, 8, &mut ChaCha8Rng::seed_from_u64(4))
            .chunk(0, 10)
            .unwrap();
        c.codes[3] = 0x80; // −128, outside [−127, 127]
        assert!(c
            .decode(0, 10)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        assert!(quantize(&x, 8, &mut ChaCha8Rng::seed_from_u64(4))
            .chunk(990, 20)
            .is_none());
    }
}
