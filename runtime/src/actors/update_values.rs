//! An admitted update's values as the Aggregator holds them: in memory, or spilled to disk
//! ([`crate::model::spill`]) when a round's updates together would exceed the coordinator's
//! memory bound — and the combination of a cohort that holds spilled ones, a slice of
//! coordinates at a time.
//!
//! Only coordinate-wise kernels (mean, trimmed mean, median) combine slice by slice: every
//! output coordinate depends on that coordinate of the inputs alone, so combining slices in
//! silo order gives the very bits the whole vectors give (tested below) — an auditor's
//! `fedsilo aggregate` of the round still reproduces its digest. Kernels that compare whole
//! updates (Krum, Bulyan, custom ones) and the cosine screen keep every update in memory; the
//! round does not spill for them ([`spills`]).

use crate::kernels::{Kernel, KernelError};
use crate::model::spill::Spilled;

/// Coordinates combined at a time from spilled updates: at most 256 Ki values (1 MiB) per
/// update, fewer for large cohorts so that the slices of all of them stay within
/// [`SLICES_BYTES`].
pub const SLICE: usize = 1 << 18;
/// The slices of a whole cohort together, at most (with at least 4 Ki values per update).
pub const SLICES_BYTES: usize = 8 << 20;

/// Coordinates per slice for a cohort of `n`.
pub fn slice_len(n: usize) -> usize {
    (SLICES_BYTES / 4 / n.max(1)).clamp(4096, SLICE)
}

/// An update's values.
#[derive(Debug)]
pub enum Values {
    /// In memory.
    Memory(Vec<f32>),
    /// On disk.
    Spilled(Spilled),
}

impl Values {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::Memory(v) => v.len(),
            Values::Spilled(s) => s.len(),
        }
    }

    /// Whether it has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first value that is not finite, and the L2 norm (NaN if there is such a value).
    pub fn facts(&self) -> (Option<usize>, f64) {
        match self {
            Values::Memory(v) => {
                let first = v.iter().position(|x| !x.is_finite());
                let norm = if first.is_some() {
                    f64::NAN
                } else {
                    crate::kernels::clip::l2_norm(v)
                };
                (first, norm)
            }
            Values::Spilled(s) => (s.first_non_finite(), s.norm()),
        }
    }
}

/// Whether a round combining with `kernel` (and the cosine screen if `cosine`) may spill its
/// updates: only if every step works a slice of coordinates at a time.
pub fn spills(kernel: &Kernel, cosine: bool) -> bool {
    !cosine
        && matches!(
            kernel,
            Kernel::Mean | Kernel::TrimmedMean { .. } | Kernel::Median
        )
}

/// Why a cohort with spilled updates could not be combined.
#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    /// The kernel refused a slice.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// A spilled update could not be read back.
    #[error("reading a spilled update back: {0}")]
    Read(#[from] std::io::Error),
    /// The kernel needs whole updates.
    #[error("{0} needs whole updates in memory; this round's updates were spilled to disk")]
    NotSliceable(&'static str),
}

/// Combines `updates` (in silo order) with `kernel` and `weights`, a [`SLICE`] of coordinates
/// at a time; `scale[i]`: the clipping factor of update `i`, applied as
/// [`crate::kernels::clip::clip_l2`] applies it.
pub fn combine_by_slices(
    kernel: &Kernel,
    updates: &[&Values],
    weights: &[f64],
    scale: &[Option<f32>],
) -> Result<Vec<f32>, SliceError> {
    if !spills(kernel, false) {
        return Err(SliceError::NotSliceable(kernel.name()));
    }
    let len = updates.first().map_or(0, |u| u.len());
    if let Some((i, u)) = updates.iter().enumerate().find(|(_, u)| u.len() != len) {
        return Err(KernelError::Length {
            index: i,
            len: u.len(),
            want: len,
        }
        .into());
    }
    let mut out = Vec::with_capacity(len);
    let mut buffers: Vec<Vec<f32>> = vec![Vec::new(); updates.len()];
    let slice = slice_len(updates.len());
    let mut start = 0;
    loop {
        let end = (start + slice).min(len);
        for ((u, buf), s) in updates.iter().zip(&mut buffers).zip(scale) {
            buf.clear();
            match u {
                Values::Memory(v) => buf.extend_from_slice(&v[start..end]),
                Values::Spilled(f) => {
                    buf.resize(end - start, 0.0);
                    f.read(start, buf)?;
                }
            }
            if let Some(s) = s {
                buf.iter_mut().for_each(|v| *v *= *s);
            }
        }
        let views: Vec<&[f32]> = buffers.iter().map(|b| b.as_slice()).collect();
        out.extend_from_slice(&kernel.combine(&views, weights)?.values);
        start = end;
        if start >= len {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::clip::clip_l2;
    use crate::model::spill::SpillWriter;

    fn spill(dir: &std::path::Path, v: &[f32]) -> Values {
        let mut w = SpillWriter::create(dir).unwrap();
        for c in v.chunks(1000) {
            w.push(c).unwrap();
        }
        Values::Spilled(w.finish().unwrap())
    }

    #[test]
    fn slices_give_the_bits_whole_updates_give() {
        let dir = tempfile::tempdir().unwrap();
        let n = SLICE * 2 + 12_345;
        let updates: Vec<Vec<f32>> = (0..5)
            .map(|k| {
                (0..n)
                    .map(|i| {
                        (((i * 2654435761usize + k * 97) % 10007) as f32 / 1000.0 - 5.0)
                            * (k + 1) as f32
                    })
                    .collect()
            })
            .collect();
        let weights = [3.0, 1.0, 7.0, 2.0, 5.0];
        let clip = 900.0;
        for kernel in [
            Kernel::Mean,
            Kernel::TrimmedMean { trim: 0.2 },
            Kernel::Median,
        ] {
            let mut whole: Vec<Vec<f32>> = updates.clone();
            for u in &mut whole {
                clip_l2(u, clip);
            }
            let views: Vec<&[f32]> = whole.iter().map(|u| u.as_slice()).collect();
            let expected = kernel.combine(&views, &weights).unwrap().values;
            // Half of them spilled, half in memory.
            let held: Vec<Values> = updates
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    if i % 2 == 0 {
                        spill(dir.path(), u)
                    } else {
                        Values::Memory(u.clone())
                    }
                })
                .collect();
            let scale: Vec<Option<f32>> = held
                .iter()
                .map(|v| {
                    let norm = v.facts().1;
                    (norm > clip).then(|| (clip / norm) as f32)
                })
                .collect();
            assert!(
                scale.iter().any(|s| s.is_some()),
                "the test clips something"
            );
            let refs: Vec<&Values> = held.iter().collect();
            let got = combine_by_slices(&kernel, &refs, &weights, &scale).unwrap();
            assert!(
                got.iter()
                    .map(|v| v.to_bits())
                    .eq(expected.iter().map(|v| v.to_bits())),
                "{}",
                kernel.name()
            );
        }
    }

    #[test]
    fn whole_update_kernels_are_not_sliced() {
        let refs: Vec<&Values> = Vec::new();
        let e = combine_by_slices(&Kernel::Krum { byzantine: 1 }, &refs, &[], &[]).unwrap_err();
        assert!(e.to_string().contains("needs whole updates"), "{e}");
        assert!(
            !spills(&Kernel::Mean, true),
            "the cosine screen needs whole updates"
        );
    }
}
