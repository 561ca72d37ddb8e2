//! Silo-level DP-FedAvg (McMahan et al. 2018): what the policy's `[privacy]` asks of the
//! aggregation and of each silo.
//!
//! Every update is clipped to C and weighs the same, so one silo moves the sum by at most C;
//! Gaussian noise of standard deviation z·C on the sum then makes each round a Gaussian
//! mechanism with multiplier z on every silo's data. Central mode: the aggregator clips and the
//! round adds N(0, z²C²) to the sum (N(0, (zC/m)²) to the mean of m). Distributed mode: each of
//! the m dispatched silos clips its own update and adds N(0, z²C²/m).

use fedsilo_policies::privacy::{NoiseMode, PrivacyRules};

use super::noise::UpdateNoise;
use crate::kernels::{Aggregation, Kernel};

/// Whether `aggregation` can carry the silo-level DP of `rules`: the noise is calibrated to a
/// sum, so only the mean qualifies (a robust kernel's output is not a sum, and its sensitivity
/// to one silo is not C).
pub fn check_aggregation(rules: &PrivacyRules, aggregation: &Aggregation) -> Result<(), NotASum> {
    if matches!(aggregation.kernel, Kernel::Mean) {
        Ok(())
    } else {
        Err(NotASum {
            mode: rules.mode.as_str(),
            kernel: aggregation.kernel.name(),
        })
    }
}

/// Silo-level DP asked of a kernel that does not combine by summing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("privacy.mode = \"{mode}\" needs aggregation.kernel = \"mean\": the noise is calibrated to the sum of clipped updates, and `{kernel}` does not combine by summing (use record-level DP-SGD at the silos with robust kernels)")]
pub struct NotASum {
    /// The policy's noise mode.
    pub mode: &'static str,
    /// The kernel configured.
    pub kernel: &'static str,
}

/// The noise a silo adds to its own update in distributed mode, for a cohort of `cohort`.
pub fn silo_share(rules: &PrivacyRules, cohort: usize) -> Option<UpdateNoise> {
    (rules.mode == NoiseMode::Distributed).then(|| UpdateNoise {
        clip_norm: rules.clip_norm,
        std: rules.noise_multiplier * rules.clip_norm / (cohort.max(1) as f64).sqrt(),
    })
}

/// The standard deviation the round adds to the mean of `m` updates in central mode (`None`
/// in distributed mode, where the silos added theirs).
pub fn central_std(rules: &PrivacyRules, m: usize) -> Option<f64> {
    (rules.mode == NoiseMode::Central)
        .then(|| rules.noise_multiplier * rules.clip_norm / m.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn rules(mode: NoiseMode) -> PrivacyRules {
        PrivacyRules {
            mode,
            clip_norm: 0.5,
            noise_multiplier: 2.0,
            budget: None,
            silos: BTreeMap::new(),
        }
    }

    #[test]
    fn the_shares_of_m_silos_add_up_to_the_central_noise() {
        let d = rules(NoiseMode::Distributed);
        let share = silo_share(&d, 4).unwrap();
        // Variance of the sum of 4 shares = z²C².
        assert!((4.0 * share.std * share.std - (2.0f64 * 0.5).powi(2)).abs() < 1e-12);
        assert_eq!(central_std(&d, 4), None);
        let c = rules(NoiseMode::Central);
        assert_eq!(silo_share(&c, 4), None);
        // On the mean of 4: zC/4.
        assert_eq!(central_std(&c, 4), Some(0.25));
    }

    #[test]
    fn only_the_mean_carries_silo_level_dp() {
        let r = rules(NoiseMode::Central);
        assert!(check_aggregation(&r, &Aggregation::default()).is_ok());
        let trimmed = Aggregation {
            kernel: Kernel::TrimmedMean { trim: 0.2 },
            ..Aggregation::default()
        };
        let e = check_aggregation(&r, &trimmed).unwrap_err();
        assert_eq!(e.kernel, "trimmed-mean");
        assert!(e.to_string().contains("kernel = \"mean\""), "{e}");
    }
}
