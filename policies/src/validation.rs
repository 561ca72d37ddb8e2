//! `[validation]`: the gate a candidate must pass to become current, and whether an operator
//! must approve it as well.
//!
//! ```toml
//! [validation]
//! max_auc_drop = 0.01        # held-out AUC over all silos may drop at most this
//! max_silo_auc_drop = 0.05   # …and at no single silo by more than this
//! require_approval = false   # an operator approves each candidate that passes
//! patience = 5               # stop a run after 5 versions in a row without a better score
//! min_improvement = 0.0005   # …better by more than this (default 0)
//! keep_best = true           # at a run's end, its best version (not its last) is current
//! ```
//!
//! The candidate is compared with the current version on the silos that scored both. Early
//! stopping and the best version go by the federation's example-weighted held-out score of
//! each version a run committed ([`ValidationRules::early_stop`], [`ValidationRules::best`]):
//! long runs stop when validation stops improving instead of overfitting.

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
    /// Early stopping: a run ends once this many versions in a row have not bettered its best
    /// example-weighted held-out score (≥ 1; default: runs go to their last round).
    #[serde(default)]
    pub patience: Option<u32>,
    /// How much a score must rise to count as better, for `patience` and `keep_best` (≥ 0,
    /// default 0).
    #[serde(default)]
    pub min_improvement: Option<f64>,
    /// At a run's end, make its best version by example-weighted held-out score current
    /// instead of its last (recorded as a rollback by this rule).
    #[serde(default)]
    pub keep_best: bool,
}

/// The most versions `patience` may wait for.
pub const MAX_PATIENCE: u32 = 10_000;

/// Why a run stops early: its best version and how many came after it without bettering it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyStop {
    /// Index of the best score.
    pub best: usize,
    /// Versions since, none better.
    pub since: u32,
}

/// A version's held-out score at one silo: examples and AUC.
pub type Score = (u64, Option<f64>);

impl ValidationRules {
    /// The index of the best of a run's scores (in commit order): the first that no later one
    /// betters by more than `min_improvement`. `None` for no scores.
    pub fn best(&self, scores: &[f64]) -> Option<usize> {
        let margin = self.min_improvement.unwrap_or(0.0);
        let mut best: Option<usize> = None;
        for (i, s) in scores.iter().enumerate() {
            if !s.is_finite() {
                continue;
            }
            if best.is_none_or(|b| *s > scores[b] + margin) {
                best = Some(i);
            }
        }
        best
    }

    /// Whether a run with these scores (in commit order) should stop now under `patience`.
    pub fn early_stop(&self, scores: &[f64]) -> Option<EarlyStop> {
        let patience = self.patience?;
        let best = self.best(scores)?;
        let since = u32::try_from(scores.len() - 1 - best).unwrap_or(u32::MAX);
        (since >= patience).then_some(EarlyStop { best, since })
    }

    pub(crate) fn validate(&self, at: &Locator) -> Result<(), PolicyError> {
        if let Some(p) = self.patience {
            if !(1..=MAX_PATIENCE).contains(&p) {
                return Err(at.invalid(
                    &["validation", "patience"],
                    &p.to_string(),
                    &format!("a number of versions from 1 to {MAX_PATIENCE}, e.g. 5"),
                ));
            }
        }
        if let Some(m) = self.min_improvement {
            if !(m.is_finite() && (0.0..=1.0).contains(&m)) {
                return Err(at.invalid(
                    &["validation", "min_improvement"],
                    &m.to_string(),
                    "a score difference in [0, 1], e.g. 0.0005",
                ));
            }
        }
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
    fn the_best_version_and_early_stopping_follow_the_scores() {
        let r = ValidationRules {
            patience: Some(3),
            ..ValidationRules::default()
        };
        assert_eq!(r.best(&[]), None);
        assert_eq!(r.early_stop(&[]), None);
        let rising = [0.80, 0.82, 0.84, 0.85];
        assert_eq!(r.best(&rising), Some(3));
        assert_eq!(r.early_stop(&rising), None);
        // Three versions after the best, none better: stop; two: not yet.
        let peaked = [0.80, 0.86, 0.85, 0.86, 0.84];
        assert_eq!(r.early_stop(&peaked), Some(EarlyStop { best: 1, since: 3 }));
        assert_eq!(r.early_stop(&peaked[..4]), None);
        // A rise within the margin does not count; NaN never is the best.
        let r = ValidationRules {
            min_improvement: Some(0.01),
            ..r
        };
        assert_eq!(r.best(&[0.80, 0.805, f64::NAN, 0.809]), Some(0));
        assert_eq!(r.best(&[f64::NAN, 0.7]), Some(1));
        assert!(r.early_stop(&[0.80, 0.805, f64::NAN, 0.809]).is_some());
        // Without patience, never.
        let none = ValidationRules::default();
        assert_eq!(none.early_stop(&[0.9, 0.1, 0.1, 0.1, 0.1]), None);
    }

    #[test]
    fn patience_and_margin_out_of_range_are_refused_with_the_key() {
        for (toml, key) in [
            ("[validation]\npatience = 0\n", "patience"),
            ("[validation]\nmin_improvement = -0.1\n", "min_improvement"),
        ] {
            let e = Policy::from_toml_str(toml, "p.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{e}");
        }
        let p = Policy::from_toml_str("[validation]\npatience = 5\nkeep_best = true\n", "p.toml")
            .unwrap();
        let v = p.validation.unwrap();
        assert_eq!((v.patience, v.keep_best), (Some(5), true));
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
