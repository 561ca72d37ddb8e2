//! `[secure_aggregation]`: the aggregator learns only the sum of the round's updates (Bonawitz
//! et al. 2017), never one silo's.
//!
//! ```toml
//! [secure_aggregation]
//! threshold = 4     # t: survivors needed to unmask (default and floor: more than half the cohort)
//! bits = 32         # the ring Z_{2^bits} updates are summed in
//! range = 1.0       # each value of a weighted update is clipped to [-range, range]
//! ```
//!
//! It combines only with the weighted mean, and with `[privacy]` only in distributed mode:
//! anything that needs an individual update (robust kernels, norm or anomaly admission rules,
//! central clipping, regional aggregation) is refused.

use serde::{Deserialize, Serialize};

use crate::locate::Locator;
use crate::PolicyError;

fn default_bits() -> u32 {
    32
}

fn default_range() -> f64 {
    1.0
}

/// `[secure_aggregation]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureAggregationRules {
    /// t: how many silos must survive to unmask the sum (raised to more than half the cohort
    /// when lower).
    #[serde(default)]
    pub threshold: Option<usize>,
    /// Ring width b (16 to 64; 32 sends exactly as many bytes as plain `f32` updates).
    #[serde(default = "default_bits")]
    pub bits: u32,
    /// Clipping range of each value of a weighted update.
    #[serde(default = "default_range")]
    pub range: f64,
}

/// The smallest threshold a round of `n` silos may use: more than half of them, and at least
/// two. Below it, an unmasking server could collect a silo's self-mask shares from one group
/// and its key shares from another, and unmask that silo alone.
pub fn minimum_threshold(n: usize) -> usize {
    (n / 2 + 1).max(2)
}

impl SecureAggregationRules {
    /// The threshold of a round dispatched to `cohort` silos.
    pub fn threshold_for(&self, cohort: usize) -> usize {
        self.threshold.unwrap_or(0).max(minimum_threshold(cohort))
    }

    pub(crate) fn validate(
        &self,
        at: &Locator,
        max_silos: Option<usize>,
    ) -> Result<(), PolicyError> {
        if !(16..=64).contains(&self.bits) {
            return Err(at.invalid(
                &["secure_aggregation", "bits"],
                &self.bits.to_string(),
                "16 to 64 (32 is the usual choice: as many bytes as an f32 update)",
            ));
        }
        if !(self.range.is_finite() && self.range > 0.0) {
            return Err(at.invalid(
                &["secure_aggregation", "range"],
                &self.range.to_string(),
                "a positive number: every value of a weighted update is clipped to [-range, range]",
            ));
        }
        if let Some(t) = self.threshold {
            if t < 2 {
                return Err(at.invalid(
                    &["secure_aggregation", "threshold"],
                    &t.to_string(),
                    "at least 2: with one survivor the sum is its update",
                ));
            }
            if let Some(max) = max_silos.filter(|m| t > *m) {
                return Err(at.invalid(
                    &["secure_aggregation", "threshold"],
                    &t.to_string(),
                    &format!(
                        "at most participation.max_silos ({max}): no round could ever be unmasked"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Policy, PolicyError};

    fn load(extra: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml_str(
            &format!("[participation]\nmin_silos = 3\nmax_silos = 6\nquorum = 3\n\n{extra}"),
            "p.toml",
        )
    }

    #[test]
    fn defaults_and_the_threshold_floor() {
        let p = load("[secure_aggregation]\n").unwrap();
        let sa = p.secure_aggregation.unwrap();
        assert_eq!((sa.bits, sa.range, sa.threshold), (32, 1.0, None));
        assert_eq!(sa.threshold_for(6), 4);
        assert_eq!(sa.threshold_for(3), 2);
        let p = load("[secure_aggregation]\nthreshold = 5\n").unwrap();
        assert_eq!(p.secure_aggregation.unwrap().threshold_for(6), 5);
    }

    #[test]
    fn mistakes_name_the_key_and_what_is_allowed() {
        for (text, key, hint) in [
            ("[secure_aggregation]\nbits = 8\n", "secure_aggregation.bits", "16 to 64"),
            ("[secure_aggregation]\nrange = -1\n", "secure_aggregation.range", "positive"),
            ("[secure_aggregation]\nthreshold = 9\n", "secure_aggregation.threshold", "max_silos (6)"),
            ("[secure_aggregation]\nthreshold = 1\n", "secure_aggregation.threshold", "at least 2"),
            ("[secure_aggregation]\nthreshhold = 3\n", "threshhold", "unknown field"),
            (
                "[secure_aggregation]\n[admission]\nmax_update_norm = 5.0\n",
                "admission.max_update_norm",
                "individual update",
            ),
            (
                "[secure_aggregation]\n[privacy]\nmode = \"central\"\nclip_norm = 1.0\nnoise_multiplier = 1.0\n",
                "privacy.mode",
                "distributed",
            ),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(hint), "{text}: {e}");
        }
        // Distributed DP combines with it.
        load("[secure_aggregation]\n[privacy]\nmode = \"distributed\"\nclip_norm = 1.0\nnoise_multiplier = 1.0\n").unwrap();
    }
}
