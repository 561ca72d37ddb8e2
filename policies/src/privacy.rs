//! `[privacy]`: silo-level differential privacy (DP-FedAvg, McMahan et al. 2018) and the
//! privacy budget the coordinator enforces.
//!
//! ```toml
//! [privacy]
//! mode = "central"          # or "distributed": who adds the noise
//! clip_norm = 0.5           # C: every update is clipped to this L2 norm
//! noise_multiplier = 1.2    # z: Gaussian noise of standard deviation z·C on the sum
//! budget = { epsilon = 8.0, delta = 1e-5 }   # what each silo's data may spend, in all
//!
//! [privacy.silos]           # a silo's own, stricter budget
//! northeast = { epsilon = 4.0 }
//! ```
//!
//! The unit protected is a whole silo's data: two neighbouring federations differ by one silo.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::locate::Locator;
use crate::PolicyError;

/// The δ at which ε is reported when the policy sets no budget.
pub const REPORT_DELTA: f64 = 1e-5;

/// Who adds the Gaussian noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseMode {
    /// The aggregator clips every update to C and adds N(0, z²C²) to their sum: the
    /// aggregator is trusted with individual updates, everyone downstream sees a DP model.
    Central,
    /// Each of the m silos of a round clips its own update and adds N(0, z²C²/m) before
    /// sending: the noise in the sum adds up to z·C when all m report.
    Distributed,
}

impl NoiseMode {
    /// `central` or `distributed`.
    pub fn as_str(self) -> &'static str {
        match self {
            NoiseMode::Central => "central",
            NoiseMode::Distributed => "distributed",
        }
    }
}

/// An (ε, δ) budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The largest ε that may be spent (> 0).
    pub epsilon: f64,
    /// The δ at which ε is measured, in (0, 1).
    pub delta: f64,
}

/// A silo's own budget; δ defaults to the federation's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiloBudget {
    /// The largest ε this silo's data may spend (> 0, at most the federation's).
    pub epsilon: f64,
    /// δ (default: the federation budget's).
    #[serde(default)]
    pub delta: Option<f64>,
}

/// `[privacy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyRules {
    /// Who adds the noise.
    pub mode: NoiseMode,
    /// C: the L2 bound every update is clipped to (> 0).
    pub clip_norm: f64,
    /// z: noise standard deviation on the sum, in units of C (> 0).
    pub noise_multiplier: f64,
    /// What each silo's data may spend over the federation's life (default: no cap; the spend
    /// is still recorded, at δ = [`REPORT_DELTA`]).
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Per-silo budgets, by certificate name.
    #[serde(default)]
    pub silos: BTreeMap<String, SiloBudget>,
}

impl PrivacyRules {
    /// The budget that applies to `silo`: its own entry, else the federation's (`None`: no cap).
    pub fn budget_of(&self, silo: &str) -> Option<Budget> {
        match (self.silos.get(silo), self.budget) {
            (Some(s), fed) => Some(Budget {
                epsilon: s.epsilon,
                delta: s.delta.or(fed.map(|b| b.delta)).unwrap_or(REPORT_DELTA),
            }),
            (None, fed) => fed,
        }
    }

    /// The δ at which the federation's spend is reported.
    pub fn report_delta(&self) -> f64 {
        self.budget.map_or(REPORT_DELTA, |b| b.delta)
    }

    /// The noise multiplier the released sum is guaranteed to carry when `cohort` silos are
    /// dispatched and at least `quorum` of them must report for the round to commit. Central:
    /// z. Distributed: each silo adds z/√m, so with only `quorum` reporting the sum carries
    /// z·√(quorum/m) — the worst case a committed round can release.
    pub fn effective_multiplier(&self, cohort: usize, quorum: usize) -> f64 {
        match self.mode {
            NoiseMode::Central => self.noise_multiplier,
            NoiseMode::Distributed => {
                let m = cohort.max(1) as f64;
                self.noise_multiplier * (quorum.clamp(1, cohort.max(1)) as f64 / m).sqrt()
            }
        }
    }

    pub(crate) fn validate(&self, at: &Locator) -> Result<(), PolicyError> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.clip_norm) {
            return Err(at.invalid(
                &["privacy", "clip_norm"],
                &self.clip_norm.to_string(),
                "a positive L2 norm, e.g. the median update norm of a run without DP",
            ));
        }
        if !positive(self.noise_multiplier) {
            return Err(at.invalid(
                &["privacy", "noise_multiplier"],
                &self.noise_multiplier.to_string(),
                "a positive multiplier of clip_norm (`fedsilo privacy noise` finds one for a budget)",
            ));
        }
        let delta_ok = |d: f64| d.is_finite() && d > 0.0 && d < 1.0;
        if let Some(b) = self.budget {
            if !positive(b.epsilon) {
                return Err(at.invalid(
                    &["privacy", "budget", "epsilon"],
                    &b.epsilon.to_string(),
                    "a positive ε",
                ));
            }
            if !delta_ok(b.delta) {
                return Err(at.invalid(
                    &["privacy", "budget", "delta"],
                    &b.delta.to_string(),
                    "a δ in (0, 1), usually below 1 / (number of silos)",
                ));
            }
        }
        for (name, s) in &self.silos {
            if !positive(s.epsilon) {
                return Err(at.invalid(
                    &["privacy", "silos", name, "epsilon"],
                    &s.epsilon.to_string(),
                    "a positive ε",
                ));
            }
            if let Some(fed) = self.budget {
                if s.epsilon > fed.epsilon {
                    return Err(at.invalid(
                        &["privacy", "silos", name, "epsilon"],
                        &s.epsilon.to_string(),
                        &format!(
                            "at most privacy.budget.epsilon ({}): the federation's budget caps every silo",
                            fed.epsilon
                        ),
                    ));
                }
            }
            if let Some(d) = s.delta {
                if !delta_ok(d) {
                    return Err(at.invalid(
                        &["privacy", "silos", name, "delta"],
                        &d.to_string(),
                        "a δ in (0, 1)",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;

    const BASE: &str = "[participation]\nmin_silos = 4\nquorum = 3\n\n[privacy]\nmode = \"distributed\"\nclip_norm = 0.5\nnoise_multiplier = 1.2\nbudget = { epsilon = 8.0, delta = 1e-5 }\n\n[privacy.silos]\nnortheast = { epsilon = 4.0 }\n";

    #[test]
    fn loads_and_resolves_budgets() {
        let p = Policy::from_toml_str(BASE, "p.toml").unwrap();
        let dp = p.privacy.unwrap();
        assert_eq!(dp.mode, NoiseMode::Distributed);
        assert_eq!(
            dp.budget_of("northeast"),
            Some(Budget {
                epsilon: 4.0,
                delta: 1e-5
            })
        );
        assert_eq!(dp.budget_of("west").unwrap().epsilon, 8.0);
        // Distributed: 4 dispatched, 3 needed → the sum carries at least z·√(3/4).
        assert!((dp.effective_multiplier(4, 3) - 1.2 * 0.75f64.sqrt()).abs() < 1e-12);
        let central = NoiseMode::Central;
        let c = PrivacyRules {
            mode: central,
            ..dp
        };
        assert_eq!(c.effective_multiplier(4, 3), 1.2);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                BASE.replace("\"distributed\"", "\"local\""),
                vec!["local", "central", "distributed"],
            ),
            (
                BASE.replace("clip_norm = 0.5", "clip_norm = 0"),
                vec!["p.toml:7", "privacy.clip_norm"],
            ),
            (
                BASE.replace("noise_multiplier = 1.2", "noise_multiplier = -1"),
                vec!["privacy.noise_multiplier", "-1"],
            ),
            (
                BASE.replace("delta = 1e-5", "delta = 1.5"),
                vec!["privacy.budget.delta", "(0, 1)"],
            ),
            (
                BASE.replace("epsilon = 8.0", "epsilon = 0.0"),
                vec!["privacy.budget.epsilon"],
            ),
            (
                BASE.replace("epsilon = 4.0", "epsilon = 9.0"),
                vec![
                    "privacy.silos.northeast.epsilon",
                    "at most privacy.budget.epsilon (8)",
                ],
            ),
            (
                BASE.replace("epsilon = 4.0", "epsilon = 4.0, delat = 1e-6"),
                vec!["delat"],
            ),
            (BASE.replace("clip_norm = 0.5\n", ""), vec!["clip_norm"]),
            (
                format!("{BASE}[admission]\nmax_update_norm = 3.0\n"),
                vec!["admission.max_update_norm", "DP guarantee"],
            ),
            (
                format!("{BASE}[admission]\nanomaly = {{ kind = \"cosine\", threshold = 0.0 }}\n"),
                vec!["admission.anomaly", "DP guarantee"],
            ),
        ];
        for (text, want) in cases {
            let err = Policy::from_toml_str(&text, "p.toml")
                .unwrap_err()
                .to_string();
            for w in want {
                assert!(err.contains(w), "message {err:?} lacks {w:?}");
            }
        }
    }
}
