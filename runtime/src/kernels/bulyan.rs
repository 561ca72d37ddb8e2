//! Bulyan (El Mhamdi et al. 2018): iterated Krum selects θ = n − 2f updates, then each
//! coordinate is the mean of the β = θ − 2f selected values closest to their median.
//!
//! The selection reuses one distance matrix: each iteration scores the remaining updates with
//! Krum (neighbours `|remaining| − f − 2`, at least 1) and moves the best to the selection. The
//! coordinate phase sorts the θ selected values per tile with a sorting network; in sorted
//! order the β values closest to the median form a window, grown from the middle outwards,
//! taking the nearer side and the lower one on a tie.
//!
//! Numeric contract: the median, the distances to it and the window mean are computed in `f64`
//! from the `f32` inputs, so the choice among equidistant values is exact (the lower one wins)
//! and the result is the correctly rounded `f32` of the window mean.

use super::krum::{scores, squared_distances};
use super::order_statistics::by_sorted_columns;

/// Indices chosen by iterated Krum, in order of choice.
pub fn select(dist: &[f64], n: usize, f: usize, theta: usize) -> Vec<usize> {
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut chosen = Vec::with_capacity(theta);
    while chosen.len() < theta && !remaining.is_empty() {
        let s = scores(dist, n, &remaining, f);
        let best = (0..remaining.len())
            .min_by(|&a, &b| s[a].total_cmp(&s[b]).then(remaining[a].cmp(&remaining[b])))
            .unwrap_or(0);
        chosen.push(remaining.remove(best));
    }
    chosen
}

/// Bulyan over `updates` with `f` Byzantine. Requires `n ≥ 4f + 3` (checked by the caller).
pub fn bulyan(updates: &[&[f32]], f: usize) -> (Vec<f32>, Vec<usize>) {
    let n = updates.len();
    let theta = n - 2 * f;
    let beta = theta - 2 * f;
    let chosen = select(&squared_distances(updates), n, f, theta);
    let picked: Vec<&[f32]> = chosen.iter().map(|&i| updates[i]).collect();
    (closest_to_median_mean(&picked, beta), chosen)
}

/// The coordinate phase: per coordinate, the mean of the `beta` values of `picked` closest to
/// their median.
pub fn closest_to_median_mean(picked: &[&[f32]], beta: usize) -> Vec<f32> {
    let theta = picked.len();
    by_sorted_columns(picked, move |rows, lanes, out| {
        for (t, o) in out.iter_mut().enumerate() {
            let v = |i: usize| rows[i * lanes + t] as f64;
            let med = if theta % 2 == 1 {
                v(theta / 2)
            } else {
                (v(theta / 2 - 1) + v(theta / 2)) * 0.5
            };
            let (mut lo, mut hi) = (theta / 2, theta / 2); // next candidates: lo − 1 and hi
            let mut sum = 0.0f64;
            for _ in 0..beta {
                let take_low = lo > 0 && (hi >= theta || med - v(lo - 1) <= v(hi) - med);
                if take_low {
                    lo -= 1;
                    sum += v(lo);
                } else {
                    sum += v(hi);
                    hi += 1;
                }
            }
            *o = (sum / beta as f64) as f32;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;
    use proptest::prelude::*;

    /// Reference selection by iterated Krum on exact distances.
    fn reference_select(v: &[&[f32]], f: usize) -> Vec<usize> {
        let dist = reference::distances(v);
        let mut remaining: Vec<usize> = (0..v.len()).collect();
        let mut chosen = vec![];
        while chosen.len() < v.len() - 2 * f {
            let s = reference::krum_scores(&dist, &remaining, f);
            let best = (0..remaining.len())
                .min_by(|&a, &b| s[a].total_cmp(&s[b]).then(remaining[a].cmp(&remaining[b])))
                .unwrap();
            chosen.push(remaining.remove(best));
        }
        chosen
    }

    /// Reference coordinate phase: sort, median, the β values closest to it (ties: lower value).
    fn reference_phase(picked: &[&[f32]], beta: usize) -> Vec<f64> {
        let theta = picked.len();
        (0..picked[0].len())
            .map(|j| {
                let c = reference::column(picked, j);
                let med = if theta % 2 == 1 {
                    c[theta / 2]
                } else {
                    (c[theta / 2 - 1] + c[theta / 2]) / 2.0
                };
                let mut by_dist: Vec<f64> = c.clone();
                by_dist.sort_by(|a, b| {
                    (a - med)
                        .abs()
                        .total_cmp(&(b - med).abs())
                        .then(a.total_cmp(b))
                });
                by_dist[..beta].iter().sum::<f64>() / beta as f64
            })
            .collect()
    }

    proptest! {
        #[test]
        fn selection_matches_reference(ups in reference::updates(3..24, 1..64), f in 0usize..5) {
            // Same (exact) distances in, same selection out. The kernel's own distances come from
            // an f32 Gram matrix and are tested against exact ones in `krum`; near-ties between
            // scores may then resolve differently, which is why selection is tested on these.
            let v: Vec<&[f32]> = ups.iter().map(|u| u.as_slice()).collect();
            prop_assume!(v.len() >= 4 * f + 3);
            let flat: Vec<f64> = reference::distances(&v).into_iter().flatten().collect();
            prop_assert_eq!(select(&flat, v.len(), f, v.len() - 2 * f), reference_select(&v, f));
        }

        #[test]
        fn coordinate_phase_matches_reference(ups in reference::updates(1..30, 1..64), cut in 0usize..10) {
            let v: Vec<&[f32]> = ups.iter().map(|u| u.as_slice()).collect();
            prop_assume!(2 * cut < v.len());
            let beta = v.len() - 2 * cut;
            let got = closest_to_median_mean(&v, beta);
            let want = reference_phase(&v, beta);
            reference::assert_close(&got, &want, &v, 1e-5)?;
        }
    }

    #[test]
    fn bulyan_survives_two_attackers() {
        let honest: Vec<Vec<f32>> = (0..9).map(|i| vec![1.0 + 0.01 * i as f32, -1.0]).collect();
        let bad = vec![vec![500.0f32, 500.0], vec![-500.0, 9.0]];
        let v: Vec<&[f32]> = honest.iter().chain(&bad).map(|u| u.as_slice()).collect();
        let (out, chosen) = bulyan(&v, 2);
        assert!(!chosen.contains(&9) && !chosen.contains(&10), "{chosen:?}");
        assert!(
            (out[0] - 1.04).abs() < 0.03 && (out[1] + 1.0).abs() < 1e-6,
            "{out:?}"
        );
    }
}
