//! Participation rules: who is in a round's cohort, and whether enough updates arrived.

use crate::{Policy, Verdict};

/// A silo as the coordinator sees it when forming a cohort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The silo's name, from its certificate.
    pub name: String,
    /// Whether its last heartbeat is recent enough.
    pub healthy: bool,
    /// Set when the coordinator has blocked the silo, with the reason (e.g. schema mismatch).
    pub blocked: Option<String>,
}

/// The outcome of cohort selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Whether the round may start; reasons say why (not).
    pub verdict: Verdict,
    /// The chosen silos, sorted by name (empty when the verdict refuses).
    pub cohort: Vec<String>,
    /// Silos left out, with the reason for each.
    pub excluded: Vec<(String, String)>,
}

/// Chooses a round's cohort: every healthy candidate, provided there are at least
/// `participation.min_silos` of them. Invariant: `cohort ∪ excluded` = candidates, disjoint.
pub fn select_cohort(policy: &Policy, candidates: &[Candidate]) -> Selection {
    let mut cohort = Vec::new();
    let mut excluded = Vec::new();
    for c in candidates {
        if let Some(reason) = &c.blocked {
            excluded.push((c.name.clone(), reason.clone()));
        } else if c.healthy {
            cohort.push(c.name.clone());
        } else {
            excluded.push((c.name.clone(), "missed heartbeats".to_string()));
        }
    }
    cohort.sort();
    let min = policy.participation.min_silos;
    if cohort.len() < min {
        return Selection {
            verdict: Verdict::deny(format!(
                "{} eligible silo(s), participation.min_silos is {min}",
                cohort.len()
            )),
            cohort: Vec::new(),
            excluded,
        };
    }
    Selection {
        verdict: Verdict::allow(format!(
            "{} eligible silo(s) ≥ min_silos {min}",
            cohort.len()
        )),
        cohort,
        excluded,
    }
}

/// Whether `received` updates out of `selected` meet the quorum to commit.
pub fn quorum_verdict(policy: &Policy, received: usize, selected: usize) -> Verdict {
    let q = policy.participation.quorum;
    if received >= q {
        Verdict::allow(format!("{received} of {selected} updates ≥ quorum {q}"))
    } else {
        Verdict::deny(format!(
            "quorum lost: {received} of {selected} updates arrived, participation.quorum is {q}"
        ))
    }
}

/// Whether the round can still reach quorum if `outstanding` silos are yet to report.
pub fn quorum_still_possible(policy: &Policy, received: usize, outstanding: usize) -> bool {
    received + outstanding >= policy.participation.quorum
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(min: usize, quorum: usize) -> Policy {
        let mut p = Policy::default();
        p.participation.min_silos = min;
        p.participation.quorum = quorum;
        p
    }

    #[test]
    fn unhealthy_silos_are_excluded_with_a_reason() {
        let s = select_cohort(
            &policy(1, 1),
            &[
                Candidate {
                    name: "b".into(),
                    healthy: true,
                    blocked: None,
                },
                Candidate {
                    name: "a".into(),
                    healthy: false,
                    blocked: None,
                },
            ],
        );
        assert!(s.verdict.allow);
        assert_eq!(s.cohort, vec!["b"]);
        assert_eq!(s.excluded[0].0, "a");
        assert!(s.excluded[0].1.contains("heartbeat"));
    }

    #[test]
    fn too_few_silos_refuses_the_round() {
        let s = select_cohort(
            &policy(3, 2),
            &[Candidate {
                name: "a".into(),
                healthy: true,
                blocked: None,
            }],
        );
        assert!(!s.verdict.allow);
        assert!(s.cohort.is_empty());
        assert!(s.verdict.reasons[0].contains("min_silos is 3"));
    }

    #[test]
    fn quorum_boundary() {
        let p = policy(4, 3);
        assert!(quorum_verdict(&p, 3, 4).allow);
        let v = quorum_verdict(&p, 2, 4);
        assert!(!v.allow);
        assert!(v.reasons[0].starts_with("quorum lost"));
        assert!(quorum_still_possible(&p, 2, 1));
        assert!(!quorum_still_possible(&p, 1, 1));
    }

    proptest! {
        #[test]
        fn cohort_and_exclusions_partition_candidates(health in proptest::collection::vec(any::<bool>(), 0..20), min in 1usize..6) {
            let cands: Vec<Candidate> = health.iter().enumerate()
                .map(|(i, h)| Candidate { name: format!("s{i:02}"), healthy: *h, blocked: None }).collect();
            let s = select_cohort(&policy(min, 1), &cands);
            let healthy = health.iter().filter(|h| **h).count();
            prop_assert_eq!(s.verdict.allow, healthy >= min);
            if s.verdict.allow {
                prop_assert_eq!(s.cohort.len() + s.excluded.len(), cands.len());
            } else {
                prop_assert!(s.cohort.is_empty());
            }
            prop_assert!(!s.verdict.reasons.is_empty());
        }
    }
}
