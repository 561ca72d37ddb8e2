//! `[validation]`: the gate a candidate must pass to become current, and whether an operator
//! must approve it as well.
//!
//! ```toml
//! [validation]
//! max_auc_drop = 0.01        # held-out AUC over all silos may drop at most this
//! max_silo_auc_drop = 0.05   # …and at no single silo by more than this
//! require_approval = false   # an operator approves each candidate that passes
//! ```
//!
//! The candidate is compared with the current version on the silos that scored both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::locate::Locator;
use crate::{PolicyError, Verdict};

/// `[validation]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationRules {
    /// Largest allowed drop of the example-weighted held-out AUC (≥ 0; default: no rule).
    #[serde(default)]
    pub max_auc_drop: Option<f64>,
    /// Largest allowed drop of any one silo's held-out AUC (≥ 0; default: no rule).
    #[serde(default)]
    pub max_silo_auc_drop: Option<f64>,
    /// A candidate that passes waits for `fedsilo models approve` (or reject).
    #[serde(default)]
    pub require_approval: bool,
    /// A central hold-out: the node (run with `silo-node --evaluate-only`) that scores every
    /// candidate on data no silo trains on. It never trains; a candidate it did not score fails.
    #[serde(default)]
    pub central_holdout: Option<String>,
    /// Largest allowed drop of the central hold-out's AUC (≥ 0; default: no rule).
    #[serde(default)]
    pub max_central_auc_drop: Option<f64>,
}

/// A version's held-out score at one silo: examples and AUC.
pub type Score = (u64, Option<f64>);

impl ValidationRules {
    pub(crate) fn validate(&self, at: &Locator) -> Result<(), PolicyError> {
        if self.max_central_auc_drop.is_some() && self.central_holdout.is_none() {
            return Err(at.invalid(
                &["validation", "max_central_auc_drop"],
                &format!("{:?}", self.max_central_auc_drop),
                "a rule for a central hold-out needs validation.central_holdout (its node name)",
            ));
        }
        for (key, v) in [
            ("max_auc_drop", self.max_auc_drop),
            ("max_silo_auc_drop", self.max_silo_auc_drop),
            ("max_central_auc_drop", self.max_central_auc_drop),
        ] {
            if let Some(d) = v {
                if !(d.is_finite() && (0.0..=1.0).contains(&d)) {
                    return Err(at.invalid(
                        &["validation", key],
                        &d.to_string(),
                        "an AUC difference in [0, 1], e.g. 0.01",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether `candidate` may replace `current`, judged on the silos that scored both (a
    /// first version, with nothing to compare, passes). The scores are AUCs.
    pub fn gate(
        &self,
        candidate: &BTreeMap<String, Score>,
        current: &BTreeMap<String, Score>,
    ) -> Verdict {
        self.gate_scores(candidate, current, "AUC")
    }

    /// [`gate`](Self::gate) for scores called `name` in the reasons (`"R²"` for a
    /// regression: the drop rules apply to a model's headline score).
    pub fn gate_scores(
        &self,
        candidate: &BTreeMap<String, Score>,
        current: &BTreeMap<String, Score>,
        name: &str,
    ) -> Verdict {
        let mut reasons = Vec::new();
        // The central hold-out has its own rule; the others speak of the silos.
        let mut candidate = candidate.clone();
        if let Some(h) = &self.central_holdout {
            match candidate.remove(h) {
                None => reasons.push(format!(
                    "the central hold-out `{h}` did not score the candidate (validation.central_holdout)"
                )),
                Some((_, new)) => {
                    if let (Some(max), Some(new), Some((_, Some(old)))) =
                        (self.max_central_auc_drop, new, current.get(h))
                    {
                        if old - new > max {
                            reasons.push(format!(
                                "{name} on the central hold-out `{h}` fell from {old:.4} to {new:.4}, more than validation.max_central_auc_drop = {max}"
                            ));
                        }
                    }
                }
            }
        }
        let candidate = &candidate;
        let both: Vec<(&String, u64, f64, f64)> = candidate
            .iter()
            .filter_map(|(s, (n, a))| {
                let (_, b) = current.get(s)?;
                Some((s, *n, (*a)?, (*b)?))
            })
            .collect();
        if let Some(max) = self.max_silo_auc_drop {
            for (s, _, new, old) in &both {
                if old - new > max {
                    reasons.push(format!(
                        "{name} at {s} fell from {old:.4} to {new:.4}, more than validation.max_silo_auc_drop = {max}"
                    ));
                }
            }
        }
        if let Some(max) = self.max_auc_drop {
            let total: u64 = both.iter().map(|b| b.1).sum();
            if total > 0 {
                let mean = |pick: fn(&(&String, u64, f64, f64)) -> f64| {
                    both.iter().map(|b| pick(b) * b.1 as f64).sum::<f64>() / total as f64
                };
                let (new, old) = (mean(|b| b.2), mean(|b| b.3));
                if old - new > max {
                    reasons.push(format!(
                        "held-out {name} over {} silo(s) fell from {old:.4} to {new:.4}, more than validation.max_auc_drop = {max}",
                        both.len()
                    ));
                }
            }
        }
        let compared = current.values().any(|(_, a)| a.is_some());
        if both.is_empty()
            && compared
            && (self.max_auc_drop.is_some() || self.max_silo_auc_drop.is_some())
        {
            reasons.push(format!(
                "no silo scored both the candidate and the current version: nothing to compare, so the {name} rules cannot pass"
            ));
        }
        if reasons.is_empty() {
            Verdict::allow(if both.is_empty() {
                "passed: no earlier figures to compare with".to_string()
            } else {
                format!(
                    "passed the validation rules on {} silo(s) scored for both versions",
                    both.len()
                )
            })
        } else {
            Verdict {
                allow: false,
                reasons,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    fn scores(v: &[(&str, u64, f64)]) -> BTreeMap<String, Score> {
        v.iter()
            .map(|(s, n, a)| (s.to_string(), (*n, Some(*a))))
            .collect()
    }

    #[test]
    fn drops_beyond_the_rules_are_refused_with_figures() {
        let r = ValidationRules {
            max_auc_drop: Some(0.01),
            max_silo_auc_drop: Some(0.05),
            ..ValidationRules::default()
        };
        let cur = scores(&[("a", 100, 0.90), ("b", 100, 0.80)]);
        assert!(
            r.gate(&scores(&[("a", 100, 0.90), ("b", 100, 0.795)]), &cur)
                .allow
        );
        let v = r.gate(&scores(&[("a", 100, 0.88), ("b", 100, 0.79)]), &cur);
        assert!(!v.allow);
        assert!(v.reasons[0].contains("fell from 0.8500 to 0.8350"), "{v:?}");
        let v = r.gate(&scores(&[("a", 100, 0.96), ("b", 100, 0.74)]), &cur);
        assert!(!v.allow && v.reasons[0].contains("at b"), "{v:?}");
        // A regression's R², named as such.
        let v = r.gate_scores(&scores(&[("a", 100, 0.96), ("b", 100, 0.74)]), &cur, "R²");
        assert!(v.reasons[0].starts_with("R² at b"), "{v:?}");
        // Nothing to compare with: a first version passes.
        assert!(r.gate(&scores(&[("a", 1, 0.5)]), &BTreeMap::new()).allow);
        // Earlier figures exist but no silo scored both: the rules cannot pass.
        let v = r.gate(&scores(&[("c", 1, 0.1)]), &cur);
        assert!(
            !v.allow && v.reasons[0].contains("nothing to compare"),
            "{v:?}"
        );
    }

    #[test]
    fn the_central_holdout_must_score_and_has_its_own_rule() {
        let r = ValidationRules {
            max_auc_drop: Some(0.01),
            central_holdout: Some("hq".into()),
            max_central_auc_drop: Some(0.02),
            ..ValidationRules::default()
        };
        let cur = scores(&[("a", 100, 0.90), ("hq", 500, 0.80)]);
        assert!(
            r.gate(&scores(&[("a", 100, 0.90), ("hq", 500, 0.79)]), &cur)
                .allow
        );
        let v = r.gate(&scores(&[("a", 100, 0.90), ("hq", 500, 0.70)]), &cur);
        assert!(
            !v.allow && v.reasons[0].contains("central hold-out `hq`"),
            "{v:?}"
        );
        let v = r.gate(&scores(&[("a", 100, 0.90)]), &cur);
        assert!(!v.allow && v.reasons[0].contains("did not score"), "{v:?}");
        // The hold-out is not one of the silos: a drop there alone does not move max_auc_drop.
        let no_rule = ValidationRules {
            max_central_auc_drop: None,
            ..r
        };
        assert!(
            no_rule
                .gate(&scores(&[("a", 100, 0.90), ("hq", 500, 0.10)]), &cur)
                .allow
        );
    }

    #[test]
    fn loads_and_names_mistakes() {
        let p = Policy::from_toml_str(
            "[validation]\nmax_auc_drop = 0.01\nrequire_approval = true\n",
            "p",
        )
        .unwrap();
        let v = p.validation.unwrap();
        assert!(v.require_approval);
        let e = Policy::from_toml_str("[validation]\nmax_auc_drop = -0.1\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("p.toml:2") && e.contains("validation.max_auc_drop"),
            "{e}"
        );
        let e = Policy::from_toml_str("[validation]\nmax_central_auc_drop = 0.1\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs validation.central_holdout"), "{e}");
        let e = Policy::from_toml_str("[validation]\nmax_auc_dorp = 0.1\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_auc_dorp"), "{e}");
    }
}
