//! Krum and Multi-Krum (Blanchard et al. 2017), from a Gram matrix computed with BLAS.
//!
//! Pairwise squared distances come from the Gram matrix `G = U·Uᵀ` (`‖a − b‖² = Gaa + Gbb −
//! 2Gab`). `G` is accumulated over tiles of coordinates: each tile's `n × T` slice is copied
//! into a small matrix and multiplied by its transpose with BLAS `sgemm` (through ndarray), the
//! tiles in parallel, each tile's product added into an `f64` total — so memory is O(n·T), never
//! a copy of the inputs, and rounding does not grow with the model size.
//!
//! Numeric contract: distances are exact to f32 products summed per tile, f64 across tiles;
//! they are clamped at 0. Score ties are broken by the lower update index.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::weighted_mean::weighted_mean;

/// Coordinates per Gram tile.
const GRAM_TILE: usize = 8192;

/// The n × n matrix of squared L2 distances between updates (row-major, f64).
pub fn squared_distances(updates: &[&[f32]]) -> Vec<f64> {
    let n = updates.len();
    let d = updates.first().map_or(0, |u| u.len());
    let tiles = d.div_ceil(GRAM_TILE);
    let gram = (0..tiles)
        .into_par_iter()
        .fold(
            || (vec![0.0f64; n * n], Array2::<f32>::zeros((n, GRAM_TILE))),
            |(mut g, mut m), t| {
                let start = t * GRAM_TILE;
                let w = GRAM_TILE.min(d - start);
                for (i, u) in updates.iter().enumerate() {
                    m.slice_mut(ndarray::s![i, ..w]).assign(&ndarray::ArrayView1::from(&u[start..start + w]));
                }
                let tile: ArrayView2<f32> = m.slice(ndarray::s![.., ..w]);
                let prod = tile.dot(&tile.t());
                for (acc, p) in g.iter_mut().zip(prod.iter()) {
                    *acc += *p as f64;
                }
                (g, m)
            },
        )
        .map(|(g, _)| g)
        .reduce(
            || vec![0.0f64; n * n],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let mut dist = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            dist[i * n + j] = if i == j {
                0.0
            } else {
                (gram[i * n + i] + gram[j * n + j] - 2.0 * gram[i * n + j]).max(0.0)
            };
        }
    }
    dist
}

/// Krum scores of the updates in `among` (indices into an n × n distance matrix): for each,
/// the sum of its distances to its `|among| − f − 2` nearest others (at least 1, at most all
/// others).
pub fn scores(dist: &[f64], n: usize, among: &[usize], f: usize) -> Vec<f64> {
    let m = among.len();
    let k = m.saturating_sub(f + 2).max(1).min(m.saturating_sub(1));
    among
        .iter()
        .map(|&i| {
            let mut ds: Vec<f64> = among
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| dist[i * n + j])
                .collect();
            ds.sort_by(|a, b| a.total_cmp(b));
            ds[..k].iter().sum()
        })
        .collect()
}

/// Indices of the `m` best-scored updates among all n (lowest score first, ties by index).
pub fn select(dist: &[f64], n: usize, f: usize, m: usize) -> Vec<usize> {
    let all: Vec<usize> = (0..n).collect();
    let s = scores(dist, n, &all, f);
    let mut order = all;
    order.sort_by(|&a, &b| s[a].total_cmp(&s[b]).then(a.cmp(&b)));
    order.truncate(m);
    order
}

/// Multi-Krum: the weighted mean (by example counts) of the `m` best-scored updates. `m = 1` is
/// Krum: the single best update itself.
pub fn multi_krum(
    updates: &[&[f32]],
    weights: &[f64],
    f: usize,
    m: usize,
) -> (Vec<f32>, Vec<usize>) {
    let n = updates.len();
    let chosen = select(&squared_distances(updates), n, f, m);
    let picked: Vec<&[f32]> = chosen.iter().map(|&i| updates[i]).collect();
    let w: Vec<f64> = chosen.iter().map(|&i| weights[i]).collect();
    let out = if m == 1 {
        picked[0].to_vec()
    } else {
        weighted_mean(&picked, &w)
    };
    (out, chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn distances_match_reference(ups in reference::updates(1..12, 1..20_000)) {
            let v: Vec<&[f32]> = ups.iter().map(|u| u.as_slice()).collect();
            let n = v.len();
            let got = squared_distances(&v);
            let want = reference::distances(&v);
            for i in 0..n { for j in 0..n {
                let w = want[i][j];
                prop_assert!((got[i * n + j] - w).abs() <= 1e-4 * (1.0 + w) + 1e-3, "{} {}: {} vs {}", i, j, got[i * n + j], w);
            }}
        }
    }

    proptest! {
        #[test]
        fn selection_matches_reference(ups in reference::updates(3..14, 1..50), f in 0usize..4) {
            let v: Vec<&[f32]> = ups.iter().map(|u| u.as_slice()).collect();
            let n = v.len();
            prop_assume!(n >= f + 3);
            let dist = reference::distances(&v);
            let flat: Vec<f64> = dist.iter().flatten().copied().collect();
            let all: Vec<usize> = (0..n).collect();
            let want = reference::krum_scores(&dist, &all, f);
            let got = scores(&flat, n, &all, f);
            for (g, w) in got.iter().zip(&want) { prop_assert!((g - w).abs() <= 1e-9 * (1.0 + w.abs())); }
        }
    }

    #[test]
    fn krum_ignores_an_outlier() {
        let good: Vec<Vec<f32>> = (0..6).map(|i| vec![1.0 + 0.01 * i as f32; 4]).collect();
        let bad = vec![1000.0f32; 4];
        let mut v: Vec<&[f32]> = good.iter().map(|u| u.as_slice()).collect();
        v.push(&bad);
        let (out, chosen) = multi_krum(&v, &[1.0; 7], 1, 3);
        assert!(!chosen.contains(&6));
        assert!(out.iter().all(|x| (*x - 1.0).abs() < 0.1));
    }
}
