//! Coordinate-wise trimmed mean and median, by sorting networks over tiles of coordinates.
//!
//! Each worker takes a tile of coordinates, gathers the n updates' values for it into an
//! `n × lanes` buffer (the only copy: O(tile) memory), sorts every column with a
//! [`SortingNetwork`], and reduces the sorted rows. Peak memory is the inputs, the output and
//! one tile per core.
//!
//! Numeric contract: inputs must be finite (checked before). Sorting is exact; the trimmed
//! mean sums the kept values in `f32` in ascending order and multiplies by `1 / (n − 2k)`, the
//! median of an even count is `(a + b) / 2` in `f32` — within a few ulp of the `f64` reference.
//! Ties need no rule: equal values are interchangeable.

use super::sorting_network::{gather, tile_lanes, SortingNetwork};
use super::tiles::{for_each_tile, zeroed};
use super::weighted_mean::weighted_mean;

/// Coordinate-wise trimmed mean (Yin et al. 2018): for each coordinate drop the `k` smallest
/// and `k` largest of the n values and average the rest, unweighted. Requires `2k < n`.
pub fn trimmed_mean(updates: &[&[f32]], k: usize) -> Vec<f32> {
    let n = updates.len();
    debug_assert!(2 * k < n);
    if k == 0 {
        return weighted_mean(updates, &vec![1.0; n]);
    }
    let inv = 1.0 / (n - 2 * k) as f32;
    by_sorted_columns(updates, move |rows, lanes, out| {
        out.fill(0.0);
        for i in k..n - k {
            for (o, x) in out.iter_mut().zip(&rows[i * lanes..(i + 1) * lanes]) {
                *o += x;
            }
        }
        for o in out.iter_mut() {
            *o *= inv;
        }
    })
}

/// Coordinate-wise median (even n: mean of the two middle values).
pub fn median(updates: &[&[f32]]) -> Vec<f32> {
    let n = updates.len();
    by_sorted_columns(updates, move |rows, lanes, out| {
        let hi = &rows[(n / 2) * lanes..(n / 2 + 1) * lanes];
        if n % 2 == 1 {
            out.copy_from_slice(hi);
        } else {
            let lo = &rows[(n / 2 - 1) * lanes..(n / 2) * lanes];
            for ((o, a), b) in out.iter_mut().zip(lo).zip(hi) {
                *o = (a + b) * 0.5;
            }
        }
    })
}

/// Runs `reduce(sorted_rows, lanes, out_tile)` over every tile of coordinates, in parallel.
pub fn by_sorted_columns<F>(updates: &[&[f32]], reduce: F) -> Vec<f32>
where
    F: Fn(&[f32], usize, &mut [f32]) + Sync + Send,
{
    let n = updates.len();
    let d = updates.first().map_or(0, |u| u.len());
    let net = SortingNetwork::batcher(n);
    let lanes = tile_lanes(n);
    let mut out = zeroed(d);
    for_each_tile(&mut out, lanes, n * lanes, |start, out_tile, scratch| {
        let w = out_tile.len();
        let rows = &mut scratch[..n * w];
        gather(updates, start, w, rows);
        net.sort_columns(rows, w);
        reduce(rows, w, out_tile);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;
    use proptest::prelude::*;

    #[test]
    fn small_cases() {
        let a = [1.0f32, 5.0];
        let b = [3.0f32, -1.0];
        let c = [100.0f32, 2.0];
        assert_eq!(median(&[&a]), vec![1.0, 5.0]);
        assert_eq!(median(&[&a, &b]), vec![2.0, 2.0]);
        assert_eq!(median(&[&a, &b, &c]), vec![3.0, 2.0]);
        assert_eq!(trimmed_mean(&[&a, &b, &c], 1), vec![3.0, 2.0]);
        assert_eq!(trimmed_mean(&[&a, &b], 0), vec![2.0, 2.0]);
    }

    #[test]
    fn trim_at_its_bounds() {
        use crate::kernels::Kernel;
        let (a, b, c) = ([1.0f32, 10.0], [2.0f32, -4.0], [9.0f32, 1.0]);
        let v: [&[f32]; 3] = [&a, &b, &c];
        let combine = |trim| {
            Kernel::TrimmedMean { trim }
                .combine(&v, &[1.0, 2.0, 3.0])
                .unwrap()
                .values
        };
        // β = 0 cuts nothing: the unweighted mean (weights are ignored by the trimmed mean).
        assert_eq!(combine(0.0), vec![4.0, 7.0 / 3.0]);
        // Largest β below 0.5 with n = 3 cuts one from each tail: the median.
        assert_eq!(combine(0.4999), vec![2.0, 1.0]);
        // n = 2 can never cut (⌊β·2⌋ = 0 for β < 0.5).
        assert_eq!(
            Kernel::TrimmedMean { trim: 0.4999 }
                .combine(&v[..2], &[1.0, 1.0])
                .unwrap()
                .values,
            vec![1.5, 3.0]
        );
    }

    proptest! {
        #[test]
        fn median_matches_reference(ups in reference::updates(1..60, 1..200)) {
            let v: Vec<&[f32]> = ups.iter().map(|u| u.as_slice()).collect();
            reference::assert_close(&median(&v), &reference::median(&v), &v, 1e-6)?;
        }

        #[test]
        fn trimmed_mean_matches_reference(ups in reference::updates(1..60, 1..200), beta in 0.0f64..0.5) {
            let v: Vec<&[f32]> = ups.iter().map(|u| u.as_slice()).collect();
            let k = (beta * v.len() as f64).floor() as usize;
            prop_assume!(2 * k < v.len());
            reference::assert_close(&trimmed_mean(&v, k), &reference::trimmed_mean(&v, beta), &v, 1e-5)?;
        }
    }
}
