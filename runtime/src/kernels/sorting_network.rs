//! Sorting networks, applied to many columns at once.
//!
//! Order statistics over a handful of values per coordinate (n = 10 or 50 silos) are not a job
//! for a per-coordinate `select_nth`: its branches defeat vectorisation. Instead the n values of
//! a tile of T coordinates are laid out as n rows of T lanes, and a fixed sequence of
//! compare-exchange operations (Batcher's odd–even merge sort) is applied row against row. Each
//! compare-exchange is a branch-free `min`/`max` over T lanes, which the compiler turns into
//! SIMD instructions; on x86-64 a copy compiled for AVX2 is chosen at run time when the CPU has it.
//!
//! Invariant of [`SortingNetwork::sort_columns`]: afterwards every column (lane) is sorted
//! ascending, for any input without NaN. Equal values are interchangeable, so ties need no rule.

/// A sorting network for `n` inputs: a list of compare-exchange pairs `(a, b)`, `a < b`.
#[derive(Debug, Clone)]
pub struct SortingNetwork {
    n: usize,
    pairs: Vec<(usize, usize)>,
}

impl SortingNetwork {
    /// Batcher's odd–even merge sort for `n` inputs (built for the next power of two; pairs
    /// touching padding are dropped, which is exact since padding would be +∞).
    pub fn batcher(n: usize) -> Self {
        let size = n.next_power_of_two();
        let mut pairs = Vec::new();
        let mut p = 1;
        while p < size {
            let mut k = p;
            while k >= 1 {
                let mut j = k % p;
                while j + k < size {
                    for i in 0..k.min(size - j - k) {
                        if (i + j) / (2 * p) == (i + j + k) / (2 * p) && i + j + k < n {
                            pairs.push((i + j, i + j + k));
                        }
                    }
                    j += 2 * k;
                }
                k /= 2;
            }
            p *= 2;
        }
        Self { n, pairs }
    }

    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.n
    }

    /// Number of compare-exchange operations.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the network has no comparators (n ≤ 1).
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Sorts each of the `lanes` columns of `rows` (row-major `n × lanes`) ascending.
    pub fn sort_columns(&self, rows: &mut [f32], lanes: usize) {
        debug_assert_eq!(rows.len(), self.n * lanes);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { sort_columns_avx2(&self.pairs, rows, lanes) };
                return;
            }
        }
        sort_columns_portable(&self.pairs, rows, lanes);
    }
}

#[inline(always)]
fn sort_columns_body(pairs: &[(usize, usize)], rows: &mut [f32], lanes: usize) {
    for &(a, b) in pairs {
        let (lo, hi) = rows.split_at_mut(b * lanes);
        let ra = &mut lo[a * lanes..(a + 1) * lanes];
        let rb = &mut hi[..lanes];
        for (x, y) in ra.iter_mut().zip(rb.iter_mut()) {
            let (p, q) = (*x, *y);
            let swap = q < p;
            *x = if swap { q } else { p };
            *y = if swap { p } else { q };
        }
    }
}

fn sort_columns_portable(pairs: &[(usize, usize)], rows: &mut [f32], lanes: usize) {
    sort_columns_body(pairs, rows, lanes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sort_columns_avx2(pairs: &[(usize, usize)], rows: &mut [f32], lanes: usize) {
    sort_columns_body(pairs, rows, lanes)
}

/// Lanes per tile for `n` rows: the tile (n × lanes × 4 bytes) stays within about 64 KiB so it
/// lives in L1/L2 while the network runs over it; a multiple of 16 for clean SIMD.
pub fn tile_lanes(n: usize) -> usize {
    ((16 * 1024 / n.max(1)) / 16 * 16).clamp(64, 2048)
}

/// Copies coordinates `start..start + lanes` of every update into `rows` (row i = update i).
pub fn gather(updates: &[&[f32]], start: usize, lanes: usize, rows: &mut [f32]) {
    for (i, u) in updates.iter().enumerate() {
        rows[i * lanes..(i + 1) * lanes].copy_from_slice(&u[start..start + lanes]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_are_batchers() {
        assert_eq!(SortingNetwork::batcher(1).len(), 0);
        assert_eq!(SortingNetwork::batcher(2).len(), 1);
        assert_eq!(SortingNetwork::batcher(4).len(), 5);
        assert_eq!(SortingNetwork::batcher(8).len(), 19);
        assert_eq!(SortingNetwork::batcher(16).len(), 63);
    }

    #[test]
    fn sorts_every_0_1_input_up_to_12() {
        // The 0-1 principle: a network that sorts all 0-1 sequences sorts everything.
        for n in 1..=12 {
            let net = SortingNetwork::batcher(n);
            let lanes = 1 << n;
            let mut rows = vec![0.0f32; n * lanes];
            for lane in 0..lanes {
                for i in 0..n {
                    rows[i * lanes + lane] = ((lane >> i) & 1) as f32;
                }
            }
            net.sort_columns(&mut rows, lanes);
            for lane in 0..lanes {
                for i in 1..n {
                    assert!(
                        rows[(i - 1) * lanes + lane] <= rows[i * lanes + lane],
                        "n={n} lane={lane}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn sorts_columns(n in 1usize..70, lanes in 1usize..40, seed in any::<u64>()) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut rows: Vec<f32> = (0..n * lanes).map(|_| rng.random_range(-3i32..3) as f32 * 0.5).collect();
            let mut want: Vec<Vec<f32>> = (0..lanes).map(|l| (0..n).map(|i| rows[i * lanes + l]).collect()).collect();
            for w in &mut want { w.sort_by(|a, b| a.total_cmp(b)); }
            SortingNetwork::batcher(n).sort_columns(&mut rows, lanes);
            for (l, w) in want.iter().enumerate() {
                let got: Vec<f32> = (0..n).map(|i| rows[i * lanes + l]).collect();
                prop_assert_eq!(&got, w);
            }
        }
    }
}
