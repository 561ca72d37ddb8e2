//! Top-k sparsification with error feedback (Stich et al. 2018, Karimireddy et al. 2019).
//!
//! A silo sends only the k values of largest magnitude. What it leaves out is kept as a
//! residual and added to the next round's update before choosing again. What it sent is
//! assumed delivered: an update refused or lost with its round takes its values with it.

use serde::{Deserialize, Serialize};

use super::ChunkError;

/// An update reduced to its k largest values, as the silo keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseUpdate {
    len: usize,
    /// Indices, ascending.
    indices: Vec<u32>,
    values: Vec<f32>,
}

/// One chunk of a sparse update, as it travels: the kept values among `offset..offset + len`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sparse {
    /// Index of the chunk's first value in the update.
    pub offset: u64,
    /// Positions of the kept values, as gaps: the first from the chunk's start, each next from
    /// the previous (small numbers, so they encode in one or two bytes).
    pub gaps: Vec<u32>,
    /// The kept values.
    pub values: Vec<f32>,
}

/// The `k` values of `values` with the largest magnitude (ties by index), the rest zero.
pub fn top_k(values: &[f32], k: usize) -> SparseUpdate {
    let k = k.min(values.len());
    let mut order: Vec<u32> = (0..values.len() as u32).collect();
    if k < values.len() && k > 0 {
        order.select_nth_unstable_by(k - 1, |a, b| {
            values[*b as usize]
                .abs()
                .total_cmp(&values[*a as usize].abs())
                .then(a.cmp(b))
        });
    }
    order.truncate(k);
    order.sort_unstable();
    SparseUpdate {
        len: values.len(),
        values: order.iter().map(|i| values[*i as usize]).collect(),
        indices: order,
    }
}

impl SparseUpdate {
    /// Number of kept values.
    pub fn kept(&self) -> usize {
        self.indices.len()
    }

    /// The dense update (zeros where nothing was kept).
    pub fn decode(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.len];
        for (i, v) in self.indices.iter().zip(&self.values) {
            out[*i as usize] = *v;
        }
        out
    }

    /// The kept values among `offset..offset + len` as they travel (`None`: out of range).
    pub fn chunk(&self, offset: usize, len: usize) -> Option<Sparse> {
        let end = offset.checked_add(len)?;
        if end > self.len || len == 0 {
            return None;
        }
        let from = self.indices.partition_point(|i| (*i as usize) < offset);
        let to = self.indices.partition_point(|i| (*i as usize) < end);
        let mut prev = offset as u32;
        let gaps = self.indices[from..to]
            .iter()
            .map(|i| {
                let g = i - prev;
                prev = *i;
                g
            })
            .collect();
        Some(Sparse {
            offset: offset as u64,
            gaps,
            values: self.values[from..to].to_vec(),
        })
    }
}

impl Sparse {
    /// Decodes the chunk, which must hold `len` values starting at `offset`. Malformed chunks
    /// (another offset, gaps and values of different counts, positions repeated or past the
    /// chunk, values not finite) are refused with what is wrong.
    pub fn decode(&self, offset: u64, len: usize) -> Result<Vec<f32>, ChunkError> {
        if self.offset != offset {
            return Err(ChunkError::Offset {
                at: self.offset,
                asked: offset,
            });
        }
        if self.gaps.len() != self.values.len() {
            return Err(ChunkError::Positions {
                positions: self.gaps.len(),
                values: self.values.len(),
            });
        }
        let mut out = vec![0.0f32; len];
        let mut at: u64 = 0;
        for (k, (g, v)) in self.gaps.iter().zip(&self.values).enumerate() {
            if k > 0 && *g == 0 {
                return Err(ChunkError::Repeated(at));
            }
            at += *g as u64;
            if at >= len as u64 {
                return Err(ChunkError::Past { at, len });
            }
            if !v.is_finite() {
                return Err(ChunkError::NonFinite { value: *v, at });
            }
            out[at as usize] = *v;
        }
        Ok(out)
    }
}

/// A silo's memory of what it has not sent yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ErrorFeedback {
    residual: Vec<f32>,
}

impl ErrorFeedback {
    /// Adds the residual to `update`, keeps the `fraction` of values of largest magnitude, and
    /// remembers the rest. A model of another size starts from no residual.
    pub fn compress(&mut self, update: &[f32], fraction: f64) -> SparseUpdate {
        if self.residual.len() != update.len() {
            self.residual = vec![0.0; update.len()];
        }
        let corrected: Vec<f32> = update
            .iter()
            .zip(&self.residual)
            .map(|(u, r)| u + r)
            .collect();
        let k = ((fraction * update.len() as f64).ceil() as usize).max(1);
        let sent = top_k(&corrected, k);
        self.residual = corrected;
        for i in &sent.indices {
            self.residual[*i as usize] = 0.0;
        }
        sent
    }

    /// What has not been sent yet.
    pub fn residual(&self) -> &[f32] {
        &self.residual
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_largest_magnitudes() {
        let s = top_k(&[0.1, -3.0, 2.0, 0.0, -2.5], 2);
        assert_eq!(s.decode(), vec![0.0, -3.0, 0.0, 0.0, -2.5]);
        assert_eq!(top_k(&[1.0, 2.0], 5).kept(), 2);
    }

    /// Error feedback: nothing top-k drops is lost. After each round the residual is exactly
    /// what was corrected but not sent, and over rounds what was sent plus the residual is
    /// what the silo's updates add up to.
    #[test]
    fn error_feedback_accumulates_what_top_k_dropped() {
        let rounds = [
            vec![4.0f32, 1.0, -2.0, 0.5, 3.0, -1.0],
            vec![1.0, 1.0, 1.0, 1.0, -4.0, 2.0],
            vec![-0.5, 2.0, 0.0, 2.0, 1.0, -1.0],
        ];
        let mut ef = ErrorFeedback::default();
        let mut sent_total = [0.0f32; 6];
        let mut update_total = [0.0f32; 6];
        for u in &rounds {
            let before = ef.residual().to_vec();
            let sent = ef.compress(u, 0.34);
            assert_eq!(sent.kept(), 3);
            let dense = sent.decode();
            for i in 0..6 {
                let corrected = u[i] + before.get(i).copied().unwrap_or(0.0);
                assert_eq!(ef.residual()[i], corrected - dense[i], "coordinate {i}");
                sent_total[i] += dense[i];
                update_total[i] += u[i];
            }
        }
        for i in 0..6 {
            assert_eq!(
                sent_total[i] + ef.residual()[i],
                update_total[i],
                "coordinate {i}"
            );
        }
        // A coordinate too small to be chosen in round 1 (index 3: 0.5) is sent once it has
        // accumulated (0.5 + 1.0 + 2.0 = 3.5 by round 3).
        assert_eq!(ef.residual()[3], 0.0);
    }

    #[test]
    fn chunks_decode_to_the_whole_and_malformed_chunks_are_refused() {
        let x: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
        let s = top_k(&x, 100);
        let mut joined = Vec::new();
        for off in (0..1000).step_by(97) {
            let len = 97.min(1000 - off);
            joined.extend(s.chunk(off, len).unwrap().decode(off as u64, len).unwrap());
        }
        assert_eq!(joined, s.decode());
        let c = s.chunk(97, 97).unwrap();
        assert!(!c.gaps.is_empty());
        assert!(c
            .decode(0, 97)
            .unwrap_err()
            .to_string()
            .contains("asked for"));
        let mut past = c.clone();
        past.gaps[0] = 500;
        assert!(past
            .decode(97, 97)
            .unwrap_err()
            .to_string()
            .contains("past the chunk"));
        let mut twice = c.clone();
        assert!(twice.gaps.len() > 1, "the chunk keeps several values");
        twice.gaps[1] = 0;
        assert!(twice
            .decode(97, 97)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let mut nan = c.clone();
        nan.values[0] = f32::NAN;
        assert!(nan
            .decode(97, 97)
            .unwrap_err()
            .to_string()
            .contains("non-finite"));
        let mut uneven = c;
        uneven.values.pop();
        assert!(uneven
            .decode(97, 97)
            .unwrap_err()
            .to_string()
            .contains("positions for"));
    }
}
