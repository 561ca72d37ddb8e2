//! `[business]`: the business metrics every silo computes on its held-out rows for each
//! candidate, beside loss, accuracy and AUC — what a consortium judges a model by (churners
//! caught for the same outreach budget) — and the gate's rule on them.
//!
//! ```toml
//! [business]
//! top_percent = [10, 20]     # lift and capture rate at the top k % of scores
//! threshold = 0.5            # precision and recall at this score
//! max_capture_drop = 0.02    # gate: no silo's capture at the first top_percent may fall more
//! ```
//!
//! Capture at k % is the share of a silo's positives among its k % highest-scored held-out
//! rows ("the top 10 % of risk scores hold 48 % of churners"); lift is that slice's positive
//! rate over the silo's. Only these aggregates leave a silo: its rows and scores stay. A
//! silo's own cost matrix (the value of a true positive, the cost of a false positive and a
//! false negative) is declared at the silo, in its currency, and reported only if it says so.

use serde::{Deserialize, Serialize};

use crate::locate::Locator;
use crate::PolicyError;

/// `[business]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessRules {
    /// Lift and capture rate at the top k % of scores, for each k in (0, 100] (default: 10).
    #[serde(default = "default_top")]
    pub top_percent: Vec<f64>,
    /// Precision and recall of the rows scored at or above this, in (0, 1) (default 0.5).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Gate: the largest allowed drop of any silo's capture rate at the first `top_percent`
    /// (a share in [0, 1]; default: no rule).
    #[serde(default)]
    pub max_capture_drop: Option<f64>,
}

fn default_top() -> Vec<f64> {
    vec![10.0]
}

fn default_threshold() -> f64 {
    0.5
}

/// The most `top_percent` entries.
pub const MAX_TOP: usize = 8;

impl Default for BusinessRules {
    fn default() -> Self {
        Self {
            top_percent: default_top(),
            threshold: default_threshold(),
            max_capture_drop: None,
        }
    }
}

impl BusinessRules {
    pub(crate) fn validate(&self, at: &Locator) -> Result<(), PolicyError> {
        if self.top_percent.is_empty() || self.top_percent.len() > MAX_TOP {
            return Err(at.invalid(
                &["business", "top_percent"],
                &format!("{:?}", self.top_percent),
                &format!("1 to {MAX_TOP} percentages, e.g. [10, 20]"),
            ));
        }
        for k in &self.top_percent {
            if !(k.is_finite() && *k > 0.0 && *k <= 100.0) {
                return Err(at.invalid(
                    &["business", "top_percent"],
                    &k.to_string(),
                    "percentages in (0, 100], e.g. 10",
                ));
            }
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(at.invalid(
                &["business", "threshold"],
                &self.threshold.to_string(),
                "a score in (0, 1), e.g. 0.5",
            ));
        }
        if let Some(d) = self.max_capture_drop {
            if !(d.is_finite() && (0.0..=1.0).contains(&d)) {
                return Err(at.invalid(
                    &["business", "max_capture_drop"],
                    &d.to_string(),
                    "a share in [0, 1], e.g. 0.02 (two points of capture)",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Policy;

    fn load(t: &str) -> Result<Policy, String> {
        Policy::from_toml_str(
            &format!("[participation]\nmin_silos = 2\nquorum = 2\n{t}"),
            "p.toml",
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_mistakes_name_the_key() {
        let b = load("[business]\n").unwrap().business.unwrap();
        assert_eq!((b.top_percent, b.threshold), (vec![10.0], 0.5));
        for (t, key) in [
            ("top_percent = []", "top_percent"),
            ("top_percent = [0]", "top_percent"),
            ("top_percent = [150]", "top_percent"),
            ("threshold = 1.0", "threshold"),
            ("max_capture_drop = 2", "max_capture_drop"),
        ] {
            let e = load(&format!("[business]\n{t}\n")).unwrap_err();
            assert!(e.contains(key) && e.contains("p.toml:"), "{t}: {e}");
        }
        assert!(load("[business]\ntop_pct = [10]\n").is_err());
    }
}
