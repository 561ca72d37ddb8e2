//! Admission rules for each arriving update, and the quarantine of repeat offenders.

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

/// The round so far, for anomaly scoring.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundSoFar {
    /// Norms of the updates admitted earlier this round.
    pub norms: Vec<f64>,
    /// Cosine similarity of this update to the sum of those admitted earlier (`None` for the
    /// first one).
    pub cosine_to_aggregate: Option<f64>,
}

/// Decides whether an update is admitted. Rules, in order: right round, right base version and
/// digest, right shape, all values finite, enough examples (`participation.min_examples`),
/// norm within `admission.max_update_norm`, anomaly score within its threshold. The norm
/// z-score needs at least two updates admitted before it; the cosine rule one.
pub fn admit(policy: &Policy, u: &UpdateFacts, want: &Expected, so_far: &RoundSoFar) -> Verdict {
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
    match policy.admission.anomaly {
        Some(Anomaly::NormZscore { threshold }) if so_far.norms.len() >= 2 => {
            let n = so_far.norms.len() as f64;
            let mean = so_far.norms.iter().sum::<f64>() / n;
            let sd = (so_far.norms.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            let z = if sd > 0.0 {
                (u.norm - mean) / sd
            } else if u.norm > mean * (1.0 + 1e-9) {
                f64::INFINITY
            } else {
                0.0
            };
            if z > threshold {
                return Verdict::deny(format!(
                    "anomalous: norm {:.4} has z-score {z:.2} among this round's updates (mean {mean:.4}), threshold {threshold}",
                    u.norm
                ));
            }
        }
        Some(Anomaly::Cosine { threshold }) => {
            if let Some(cos) = so_far.cosine_to_aggregate {
                if cos.is_nan() || cos < threshold {
                    return Verdict::deny(format!(
                        "anomalous: cosine similarity {cos:.3} to this round's aggregate is below {threshold}"
                    ));
                }
            }
        }
        _ => {}
    }
    Verdict::allow("admitted")
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
        let none = RoundSoFar::default();
        assert!(admit(&p, &u, &e, &none).allow);
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
            let v = admit(&p, &bad, &e, &none);
            assert!(
                !v.allow && v.reasons[0].contains(want),
                "{bad:?}: {:?}",
                v.reasons
            );
        }
        let so_far = RoundSoFar {
            norms: vec![1.0, 1.1, 0.9, 1.0],
            cosine_to_aggregate: None,
        };
        let v = admit(
            &p,
            &UpdateFacts {
                norm: 5.0,
                ..u.clone()
            },
            &e,
            &so_far,
        );
        assert!(!v.allow && v.reasons[0].contains("z-score"), "{v:?}");
        assert!(admit(&p, &UpdateFacts { norm: 1.05, ..u }, &e, &so_far).allow);
    }

    #[test]
    fn cosine_rule() {
        let p = Policy::from_toml_str(
            "[admission]\nanomaly = { kind = \"cosine\", threshold = 0.0 }\n",
            "t",
        )
        .unwrap();
        let (u, e) = good();
        let v = admit(
            &p,
            &u,
            &e,
            &RoundSoFar {
                norms: vec![],
                cosine_to_aggregate: Some(-0.8),
            },
        );
        assert!(!v.allow && v.reasons[0].contains("cosine"));
        assert!(
            admit(
                &p,
                &u,
                &e,
                &RoundSoFar {
                    norms: vec![],
                    cosine_to_aggregate: Some(0.4)
                }
            )
            .allow
        );
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
