//! L2 norm clipping of an update.

/// Scales `update` in place so its L2 norm is at most `max_norm`; returns the norm it had.
/// The norm is accumulated in `f64`. A non-positive or non-finite `max_norm` clips nothing.
pub fn clip_l2(update: &mut [f32], max_norm: f64) -> f64 {
    let norm = l2_norm(update);
    if max_norm.is_finite() && max_norm > 0.0 && norm > max_norm {
        let s = (max_norm / norm) as f32;
        update.iter_mut().for_each(|v| *v *= s);
    }
    norm
}

/// L2 norm, accumulated in `f64`.
pub fn l2_norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn clipped_norm_is_bounded_and_direction_kept(v in proptest::collection::vec(-10.0f32..10.0, 1..100), c in 0.1f64..20.0) {
            let mut u = v.clone();
            let before = clip_l2(&mut u, c);
            let after = l2_norm(&u);
            prop_assert!(after <= c * (1.0 + 1e-5) + 1e-9);
            if before <= c { prop_assert_eq!(&u, &v); }
            else { for (a, b) in u.iter().zip(&v) { prop_assert!((*a as f64 - *b as f64 * c / before).abs() < 1e-4); } }
        }
    }
}
