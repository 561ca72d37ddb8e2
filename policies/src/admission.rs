//! Admission rules for each arriving update, the cohort screen once collection ends, and the
//! quarantine of repeat offenders.
//!
//! Two kinds of rule, decided at two moments. [`admit`] judges an update on its own as it
//! arrives (round, base, shape, finite values, examples, absolute norm bound): the answer cannot
//! depend on who else answered. [`screen_cohort`] judges updates *relative to each other* —
//! the norm ratio to the cohort's median, the robust z-score, the cosine to the coordinate-wise
//! median — once every update of the round is in, over the cohort in silo order, so the verdicts
//! are the same whatever order the updates arrived in (an attacker gains nothing by answering
//! first, and an honest silo is never scored against a partial cohort).

use std::collections::{BTreeMap, VecDeque};

use crate::{Anomaly, Policy, Verdict};

/// What the coordinator knows of an arriving update (never its content beyond these figures).
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateFacts {
    /// The round it says it is for.
    pub round: u64,
    /// The base version it says it was trained from.
    pub base_version: u64,
    /// The base digest it says it was trained from (hex).
    pub base_digest: String,
    /// Number of values.
    pub len: usize,
    /// Examples it was trained on.
    pub examples: u64,
    /// Index of the first NaN or infinite value, if any.
    pub first_non_finite: Option<usize>,
    /// L2 norm.
    pub norm: f64,
}

/// What the round expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// Current round.
    pub round: u64,
    /// Base version dispatched.
    pub base_version: u64,
    /// Base digest dispatched (hex).
    pub base_digest: String,
    /// Number of model parameters.
    pub len: usize,
}

/// Decides whether an update is admitted on its own. Rules, in order: right round, right base
/// version and digest, right shape, all values finite, enough examples
/// (`participation.min_examples`), norm within `admission.max_update_norm`. Rules relative to
/// the cohort are [`screen_cohort`]'s.
pub fn admit(policy: &Policy, u: &UpdateFacts, want: &Expected) -> Verdict {
    if u.round != want.round {
        return Verdict::deny(format!(
            "stale: update for round {}, this is round {}",
            u.round, want.round
        ));
    }
    if u.base_version != want.base_version || u.base_digest != want.base_digest {
        return Verdict::deny(format!(
            "trained from version {} ({}), round {} dispatched version {} ({})",
            u.base_version,
            short(&u.base_digest),
            want.round,
            want.base_version,
            short(&want.base_digest)
        ));
    }
    if u.len != want.len {
        return Verdict::deny(format!(
            "wrong shape: {} values, the model has {}",
            u.len, want.len
        ));
    }
    if let Some(i) = u.first_non_finite {
        return Verdict::deny(format!("value {i} is not finite (NaN or infinite)"));
    }
    let min = policy.participation.min_examples;
    if u.examples < min {
        return Verdict::deny(format!(
            "trained on {} examples, participation.min_examples is {min}",
            u.examples
        ));
    }
    if let Some(max) = policy.admission.max_update_norm {
        if u.norm.is_nan() || u.norm > max {
            return Verdict::deny(format!(
                "L2 norm {:.4} exceeds admission.max_update_norm {max}",
                u.norm
            ));
        }
    }
    Verdict::allow("admitted")
}

/// One update of a round's cohort, as [`screen_cohort`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortMember {
    /// The silo.
    pub silo: String,
    /// The update's L2 norm.
    pub norm: f64,
    /// Its cosine similarity to the cohort's coordinate-wise median (computed only when the
    /// policy has a cosine rule).
    pub cosine_to_median: Option<f64>,
}

/// Fewest updates for a cohort rule to judge: with two, "the median" is their mean and neither
/// can be told from the other.
pub const MIN_COHORT: usize = 3;

/// The median of `v` (mean of the middle two for an even count). `v` is non-empty, finite.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Screens a round's cohort once every update is in: returns the silos refused, each with its
/// reason, by `admission.max_norm_ratio` (default on, see [`Policy::max_norm_ratio`]), the
/// robust norm z-score and the cosine to the coordinate-wise median. The verdicts depend on the
/// set of members only, never on their order. Below [`MIN_COHORT`] members nothing is refused.
pub fn screen_cohort(policy: &Policy, members: &[CohortMember]) -> Vec<(String, String)> {
    if members.len() < MIN_COHORT {
        return Vec::new();
    }
    let norms: Vec<f64> = members.iter().map(|m| m.norm).collect();
    let med = median(&norms);
    let deviations: Vec<f64> = norms.iter().map(|n| (n - med).abs()).collect();
    let mad = median(&deviations);
    let mut refused = Vec::new();
    for m in members {
        let mut why = None;
        if let Some(ratio) = policy.max_norm_ratio() {
            if med > 0.0 && m.norm > ratio * med {
                why = Some(format!(
                    "norm {:.4} is {:.1}× the cohort's median norm {med:.4}, more than admission.max_norm_ratio = {ratio}",
                    m.norm,
                    m.norm / med
                ));
            }
        }
        match (why.is_none(), policy.admission.anomaly) {
            (true, Some(Anomaly::NormZscore { threshold })) if mad > 0.0 => {
                let z = (m.norm - med) / (1.4826 * mad);
                if z > threshold {
                    why = Some(format!(
                        "anomalous: norm {:.4} has robust z-score {z:.2} in the cohort (median {med:.4}, MAD {mad:.4}), threshold {threshold}",
                        m.norm
                    ));
                }
            }
            (true, Some(Anomaly::Cosine { threshold })) => {
                if let Some(cos) = m.cosine_to_median {
                    if cos.is_nan() || cos < threshold {
                        why = Some(format!(
                            "anomalous: cosine similarity {cos:.3} to the cohort's coordinate-wise median is below {threshold}"
                        ));
                    }
                }
            }
            _ => {}
        }
        if let Some(w) = why {
            refused.push((m.silo.clone(), w));
        }
    }
    refused
}

fn short(d: &str) -> &str {
    &d[..d.len().min(12)]
}

/// Who is quarantined: a silo refused `after` times within `window` rounds is kept out for
/// `rounds` rounds. A pure state machine fed by the coordinator, one call per verdict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuarantineBook {
    refusals: BTreeMap<String, VecDeque<u64>>,
    until: BTreeMap<String, u64>,
}

impl QuarantineBook {
    /// Records that `silo`'s update in `round` was refused; returns `Some(until)` if this puts
    /// the silo in quarantine (excluded from rounds `round + 1 .. until`).
    pub fn refused(&mut self, policy: &Policy, silo: &str, round: u64) -> Option<u64> {
        let q = policy.admission.quarantine?;
        let list = self.refusals.entry(silo.to_string()).or_default();
        if list.back() != Some(&round) {
            list.push_back(round);
        }
        while list.front().is_some_and(|r| *r + q.window <= round) {
            list.pop_front();
        }
        if list.len() as u32 >= q.after {
            list.clear();
            let until = round + 1 + q.rounds;
            self.until.insert(silo.to_string(), until);
            return Some(until);
        }
        None
    }

    /// The round `silo` is quarantined until (exclusive), if it is quarantined in `round`.
    pub fn quarantined_until(&self, silo: &str, round: u64) -> Option<u64> {
        self.until.get(silo).copied().filter(|u| round < *u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_toml_str(
            "[participation]\nmin_silos = 1\nquorum = 1\nmin_examples = 50\n[admission]\nmax_update_norm = 10.0\nanomaly = { kind = \"norm-zscore\", threshold = 3.0 }\nquarantine = { after = 2, window = 3, rounds = 4 }\n",
            "t",
        )
        .unwrap()
    }

    fn good() -> (UpdateFacts, Expected) {
        let u = UpdateFacts {
            round: 5,
            base_version: 4,
            base_digest: "ab".repeat(32),
            len: 10,
            examples: 100,
            first_non_finite: None,
            norm: 1.0,
        };
        let e = Expected {
            round: 5,
            base_version: 4,
            base_digest: "ab".repeat(32),
            len: 10,
        };
        (u, e)
    }

    #[test]
    fn each_rule_refuses_with_its_reason() {
        let p = policy();
        let (u, e) = good();
        assert!(admit(&p, &u, &e).allow);
        let cases: Vec<(UpdateFacts, &str)> = vec![
            (
                UpdateFacts {
                    round: 4,
                    ..u.clone()
                },
                "stale",
            ),
            (
                UpdateFacts {
                    base_version: 3,
                    ..u.clone()
                },
                "trained from version 3",
            ),
            (
                UpdateFacts {
                    base_digest: "cd".repeat(32),
                    ..u.clone()
                },
                "dispatched version 4",
            ),
            (
                UpdateFacts {
                    len: 9,
                    ..u.clone()
                },
                "wrong shape",
            ),
            (
                UpdateFacts {
                    first_non_finite: Some(3),
                    ..u.clone()
                },
                "value 3 is not finite",
            ),
            (
                UpdateFacts {
                    examples: 10,
                    ..u.clone()
                },
                "min_examples is 50",
            ),
            (
                UpdateFacts {
                    norm: 11.0,
                    ..u.clone()
                },
                "exceeds admission.max_update_norm",
            ),
            (
                UpdateFacts {
                    norm: f64::NAN,
                    ..u.clone()
                },
                "exceeds admission.max_update_norm",
            ),
        ];
        for (bad, want) in cases {
            let v = admit(&p, &bad, &e);
            assert!(
                !v.allow && v.reasons[0].contains(want),
                "{bad:?}: {:?}",
                v.reasons
            );
        }
    }

    fn members(norms: &[(&str, f64)]) -> Vec<CohortMember> {
        norms
            .iter()
            .map(|(s, n)| CohortMember {
                silo: s.to_string(),
                norm: *n,
                cosine_to_median: None,
            })
            .collect()
    }

    /// The red team's case: an attacker with norm 2.47 among honest norms ≈ 0.15, the largest
    /// honest silo somewhat above the others. Refused whatever the order; the honest ones never.
    #[test]
    fn the_cohort_screen_does_not_depend_on_order() {
        let p = Policy::from_toml_str(
            "[admission]\nanomaly = { kind = \"norm-zscore\", threshold = 3.5 }\n",
            "t",
        )
        .unwrap();
        let cohort = [
            ("attacker", 2.47),
            ("midwest", 0.14),
            ("northeast", 0.13),
            ("south", 0.21),
            ("west", 0.15),
        ];
        let mut forward = members(&cohort);
        let first = screen_cohort(&p, &forward);
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(first[0].0, "attacker");
        assert!(first[0].1.contains("max_norm_ratio"), "{first:?}");
        forward.reverse();
        assert_eq!(screen_cohort(&p, &forward), first);
        forward.rotate_left(2);
        assert_eq!(screen_cohort(&p, &forward), first);
        // The robust z-score alone (the ratio rule off) refuses the same attacker, not south.
        let p = Policy::from_toml_str(
            "[admission]\nmax_norm_ratio = 0\nanomaly = { kind = \"norm-zscore\", threshold = 3.5 }\n",
            "t",
        )
        .unwrap();
        let r = screen_cohort(&p, &members(&cohort));
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].0 == "attacker" && r[0].1.contains("robust z-score"),
            "{r:?}"
        );
        assert_eq!(p.warnings().len(), 1);
    }

    #[test]
    fn the_default_bounds_norms_by_the_cohort_and_small_cohorts_are_not_judged() {
        let p = policy_default();
        assert_eq!(p.max_norm_ratio(), Some(crate::DEFAULT_MAX_NORM_RATIO));
        let r = screen_cohort(
            &p,
            &members(&[("a", 1.0), ("b", 1.2), ("c", 0.9), ("evil", 10.0)]),
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, "evil");
        // An honest spread of 3× passes.
        assert!(screen_cohort(
            &p,
            &members(&[("a", 1.0), ("b", 3.0), ("c", 0.9), ("d", 1.5)])
        )
        .is_empty());
        // Two updates: nothing to compare against.
        assert!(screen_cohort(&p, &members(&[("a", 1.0), ("evil", 100.0)])).is_empty());
    }

    fn policy_default() -> Policy {
        Policy::from_toml_str("", "t").unwrap()
    }

    #[test]
    fn cosine_rule() {
        let p = Policy::from_toml_str(
            "[admission]\nanomaly = { kind = \"cosine\", threshold = 0.0 }\n",
            "t",
        )
        .unwrap();
        let mut m = members(&[("a", 1.0), ("b", 1.0), ("flip", 1.0)]);
        m[0].cosine_to_median = Some(0.9);
        m[1].cosine_to_median = Some(0.4);
        m[2].cosine_to_median = Some(-0.8);
        let r = screen_cohort(&p, &m);
        assert_eq!(r.len(), 1);
        assert!(r[0].0 == "flip" && r[0].1.contains("cosine"), "{r:?}");
    }

    #[test]
    fn quarantine_and_release() {
        let p = policy();
        let mut q = QuarantineBook::default();
        assert_eq!(q.refused(&p, "a", 1), None);
        // Two refusals within 3 rounds: out for rounds 5..9.
        assert_eq!(
            q.refused(&p, "a", 4),
            None,
            "round 1 fell out of the window"
        );
        assert_eq!(q.refused(&p, "a", 5), Some(10));
        assert_eq!(q.quarantined_until("a", 6), Some(10));
        assert_eq!(q.quarantined_until("a", 10), None, "released");
        assert_eq!(q.quarantined_until("b", 6), None);
    }
}
