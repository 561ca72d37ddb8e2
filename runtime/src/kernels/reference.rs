//! Naive reference implementations (sort per coordinate, `f64` accumulation) and input
//! strategies for the kernels' property tests. Test-only.

use std::ops::Range;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Values with many ties, denormals and zeros besides ordinary numbers.
pub fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -100.0f32..100.0,
        3 => (-3i32..4).prop_map(|x| x as f32 * 0.5),
        1 => Just(f32::MIN_POSITIVE / 8.0),
        1 => Just(-1e-40f32),
        1 => Just(0.0f32),
    ]
}

/// `n` updates of `d` values each.
pub fn updates(n: Range<usize>, d: Range<usize>) -> impl Strategy<Value = Vec<Vec<f32>>> {
    (n, d)
        .prop_flat_map(|(n, d)| proptest::collection::vec(proptest::collection::vec(value(), d), n))
}

/// The sorted values of coordinate `j`, in f64.
pub fn column(updates: &[&[f32]], j: usize) -> Vec<f64> {
    let mut c: Vec<f64> = updates.iter().map(|u| u[j] as f64).collect();
    c.sort_by(|a, b| a.total_cmp(b));
    c
}

/// Weighted mean in f64.
pub fn weighted_mean(updates: &[&[f32]], w: &[f64]) -> Vec<f64> {
    let t: f64 = w.iter().sum();
    (0..updates[0].len())
        .map(|j| {
            updates
                .iter()
                .zip(w)
                .map(|(u, wi)| u[j] as f64 * wi)
                .sum::<f64>()
                / t
        })
        .collect()
}

/// Coordinate-wise trimmed mean: drop ⌊β·n⌋ from each end.
pub fn trimmed_mean(updates: &[&[f32]], beta: f64) -> Vec<f64> {
    let n = updates.len();
    let k = (beta * n as f64).floor() as usize;
    (0..updates[0].len())
        .map(|j| {
            let c = column(updates, j);
            c[k..n - k].iter().sum::<f64>() / (n - 2 * k) as f64
        })
        .collect()
}

/// Coordinate-wise median (even n: mean of the two middle values).
pub fn median(updates: &[&[f32]]) -> Vec<f64> {
    let n = updates.len();
    (0..updates[0].len())
        .map(|j| {
            let c = column(updates, j);
            if n % 2 == 1 {
                c[n / 2]
            } else {
                (c[n / 2 - 1] + c[n / 2]) / 2.0
            }
        })
        .collect()
}

/// Squared L2 distances, directly.
pub fn distances(updates: &[&[f32]]) -> Vec<Vec<f64>> {
    updates
        .iter()
        .map(|a| {
            updates
                .iter()
                .map(|b| {
                    a.iter()
                        .zip(*b)
                        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// Krum scores over the candidate set `among`: sum of the `among.len() − f − 2` (at least 1,
/// at most `among.len() − 1`) smallest distances to the others.
pub fn krum_scores(dist: &[Vec<f64>], among: &[usize], f: usize) -> Vec<f64> {
    let m = among.len();
    let k = m.saturating_sub(f + 2).max(1).min(m.saturating_sub(1));
    among
        .iter()
        .map(|&i| {
            let mut ds: Vec<f64> = among
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| dist[i][j])
                .collect();
            ds.sort_by(|a, b| a.total_cmp(b));
            ds[..k].iter().sum()
        })
        .collect()
}

/// Asserts `got` is within `rel · (1 + max |input|)` of `want`, coordinate by coordinate.
pub fn assert_close(
    got: &[f32],
    want: &[f64],
    inputs: &[&[f32]],
    rel: f64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    let scale = 1.0
        + inputs
            .iter()
            .flat_map(|u| u.iter())
            .fold(0.0f64, |m, x| m.max(x.abs() as f64));
    for (j, (g, w)) in got.iter().zip(want).enumerate() {
        prop_assert!(
            (*g as f64 - w).abs() <= rel * scale,
            "coordinate {}: got {}, want {}",
            j,
            g,
            w
        );
    }
    Ok(())
}
