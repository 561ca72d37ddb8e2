//! Krum and Multi-Krum (Blanchard et al. 2017), from a Gram matrix computed with BLAS.
//!
//! Pairwise squared distances come from the Gram matrix `G = U·Uᵀ` (`‖a − b‖² = Gaa + Gbb −
//! 2Gab`). `G` is accumulated over tiles of coordinates: each tile's `n × T` slice is copied
//! into a small matrix and multiplied by its transpose with BLAS `ssyrk` (the symmetric rank-k
//! update: half the work of `sgemm`), each tile's product added into an `f64` total — so memory
//! is O(n·T), never a copy of the inputs, and rounding does not grow with the model size.
//!
//! Numeric contract: distances are exact to f32 products summed per tile, f64 across tiles;
//! they are clamped at 0. Score ties are broken by the lower update index.

use rayon::prelude::*;

use super::weighted_mean::weighted_mean;

/// Coordinates per Gram tile: large enough that each `sgemm` call (n × T by T × n) is worth
/// OpenBLAS's own threading, small enough that the tile copy stays O(n·T).
const GRAM_TILE: usize = 1 << 15;

/// The n × n matrix of squared L2 distances between updates (row-major, f64).
pub fn squared_distances(updates: &[&[f32]]) -> Vec<f64> {
    let n = updates.len();
    let d = updates.first().map_or(0, |u| u.len());
    let mut gram = vec![0.0f64; n * n];
    let width = GRAM_TILE.min(d.max(1));
    let mut tile = vec![0.0f32; n * width];
    let mut part = vec![0.0f32; n * n];
    let mut start = 0;
    while start < d {
        let w = GRAM_TILE.min(d - start);
        tile.par_chunks_mut(width)
            .zip(updates.par_iter())
            .for_each(|(row, u)| row[..w].copy_from_slice(&u[start..start + w]));
        syrk_upper(n, w, &tile, width, &mut part);
        for i in 0..n {
            for j in i..n {
                gram[i * n + j] += part[i * n + j] as f64;
            }
        }
        start += w;
    }
    for i in 0..n {
        for j in 0..i {
            gram[i * n + j] = gram[j * n + i];
        }
    }
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

/// `c` (n × n, row-major) ← upper triangle of `a·aᵀ`, where `a` is n × k row-major with row
/// stride `lda` (BLAS `ssyrk`: half the work of `sgemm` for a Gram matrix).
fn syrk_upper(n: usize, k: usize, a: &[f32], lda: usize, c: &mut [f32]) {
    assert!(a.len() >= (n.saturating_sub(1)) * lda + k && c.len() >= n * n && k <= lda);
    let as_int = |x: usize| i32::try_from(x).unwrap_or(i32::MAX);
    // SAFETY: `a` holds n rows of stride `lda` with at least `k` values each and `c` holds n × n
    // values (asserted above); BLAS reads only those and writes only the upper triangle of `c`.
    unsafe {
        cblas_sys::cblas_ssyrk(
            cblas_sys::CblasRowMajor,
            cblas_sys::CblasUpper,
            cblas_sys::CblasNoTrans,
            as_int(n),
            as_int(k),
            1.0,
            a.as_ptr(),
            as_int(lda),
            0.0,
            c.as_mut_ptr(),
            as_int(n),
        );
    }
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
