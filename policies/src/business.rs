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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::locate::Locator;
use crate::{PolicyError, Verdict};

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
    /// The gate's rule on capture: whether `candidate` loses more than `max_capture_drop` of
    /// capture at the first `top_percent` at any silo that scored both it and `current` (each
    /// silo's capture, `None` where it has none). Without the rule, or with nothing to
    /// compare, it passes.
    pub fn gate_capture(
        &self,
        candidate: &BTreeMap<String, Option<f64>>,
        current: &BTreeMap<String, Option<f64>>,
    ) -> Verdict {
        let Some(max) = self.max_capture_drop else {
            return Verdict::allow("no rule on capture".to_string());
        };
        let k = self.top_percent.first().copied().unwrap_or(10.0);
        let reasons: Vec<String> = candidate
            .iter()
            .filter_map(|(silo, new)| {
                let (new, old) = ((*new)?, (*current.get(silo)?)?);
                (old - new > max).then(|| {
                    format!(
                        "capture at the top {k} % at {silo} fell from {:.1} % to {:.1} %, more than business.max_capture_drop = {max}",
                        old * 100.0,
                        new * 100.0
                    )
                })
            })
            .collect();
        if reasons.is_empty() {
            Verdict::allow(format!(
                "no silo lost more than {max} of capture at the top {k} %"
            ))
        } else {
            Verdict {
                allow: false,
                reasons,
            }
        }
    }

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
    fn the_capture_rule_refuses_a_drop_at_any_silo_that_scored_both() {
        let rules = super::BusinessRules {
            max_capture_drop: Some(0.02),
            ..Default::default()
        };
        let m = |v: &[(&str, Option<f64>)]| -> std::collections::BTreeMap<String, Option<f64>> {
            v.iter().map(|(s, c)| (s.to_string(), *c)).collect()
        };
        let current = m(&[("a", Some(0.48)), ("b", Some(0.40)), ("c", None)]);
        assert!(
            rules
                .gate_capture(&m(&[("a", Some(0.47)), ("b", Some(0.45))]), &current)
                .allow
        );
        let v = rules.gate_capture(
            &m(&[("a", Some(0.44)), ("b", Some(0.45)), ("c", Some(0.1))]),
            &current,
        );
        assert!(!v.allow && v.reasons.len() == 1, "{v:?}");
        assert!(
            v.reasons[0].contains("at a fell from 48.0 % to 44.0 %"),
            "{v:?}"
        );
        // No rule: passes whatever happened.
        let none = super::BusinessRules::default();
        assert!(none.gate_capture(&m(&[("a", Some(0.0))]), &current).allow);
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
