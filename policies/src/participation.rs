//! Participation rules: who is eligible, who is in a round's cohort, whether enough updates
//! arrived, and how much each may weigh.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::policy::parse_version;
use crate::{Policy, Verdict};

/// A silo as the coordinator sees it when forming a cohort. Everything about identity comes
/// from its verified certificate; the rest from the coordinator's own observations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// Node name, from its certificate.
    pub name: String,
    /// Certificate role.
    #[serde(default = "silo_role")]
    pub role: String,
    /// Certificate region.
    pub region: String,
    /// Wire-protocol version it speaks.
    #[serde(default = "one")]
    pub protocol_version: u32,
    /// Its software version (`MAJOR.MINOR.PATCH`; in a roster file it defaults to this build's).
    #[serde(default = "this_version")]
    pub software_version: String,
    /// Seconds since its last heartbeat answer; `None`: never answered. (In a roster file it
    /// defaults to 0: a silo that answers.)
    #[serde(default = "fresh")]
    pub heartbeat_age_secs: Option<f64>,
    /// The last round in which it failed (update refused, late or lost).
    #[serde(default)]
    pub last_failure_round: Option<u64>,
    /// Quarantined until this round (exclusive).
    #[serde(default)]
    pub quarantined_until: Option<u64>,
    /// Set when the coordinator has blocked the silo, with the reason (e.g. schema mismatch).
    #[serde(default)]
    pub blocked: Option<String>,
}

fn silo_role() -> String {
    "silo".into()
}
fn one() -> u32 {
    1
}
fn fresh() -> Option<f64> {
    Some(0.0)
}
fn this_version() -> String {
    env!("CARGO_PKG_VERSION").into()
}

impl Candidate {
    /// A healthy silo of `region` with default versions (handy for tests and dry runs).
    pub fn healthy(name: &str, region: &str) -> Self {
        Candidate {
            name: name.into(),
            role: silo_role(),
            region: region.into(),
            protocol_version: 1,
            software_version: env!("CARGO_PKG_VERSION").into(),
            heartbeat_age_secs: Some(0.0),
            last_failure_round: None,
            quarantined_until: None,
            blocked: None,
        }
    }
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

/// The first participation rule that keeps a candidate out of a round.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Ineligible {
    /// Listed in `participation.deny`.
    #[error("revoked: listed in participation.deny")]
    Denied,
    /// Blocked by the coordinator (e.g. at the schema check), with why.
    #[error("{0}")]
    Blocked(String),
    /// A certificate role the policy does not admit.
    #[error("certificate role `{role}` is not in participation.roles {allowed:?}")]
    Role {
        /// Its role.
        role: String,
        /// The roles admitted.
        allowed: Vec<String>,
    },
    /// A region outside the consortium's.
    #[error("region `{region}` is not one of the consortium's regions {regions:?}")]
    Region {
        /// Its region.
        region: String,
        /// The consortium's regions.
        regions: Vec<String>,
    },
    /// A region outside `participation.allowed_regions`.
    #[error("region `{region}` is not in participation.allowed_regions {allowed:?}")]
    RegionNotAllowed {
        /// Its region.
        region: String,
        /// The regions allowed.
        allowed: Vec<String>,
    },
    /// An older protocol.
    #[error("speaks protocol version {have}, participation.min_protocol_version is {need}")]
    Protocol {
        /// Its version.
        have: u32,
        /// The least allowed.
        need: u32,
    },
    /// Older software.
    #[error("runs software {have}, participation.min_software_version is {need}")]
    Software {
        /// Its version.
        have: String,
        /// The least allowed.
        need: String,
    },
    /// No heartbeat answered yet.
    #[error("has not answered a heartbeat yet")]
    NoHeartbeat,
    /// Heartbeats missed.
    #[error("missed heartbeats: last answer {age:.1} s ago, participation.max_heartbeat_age_secs is {max}")]
    MissedHeartbeats {
        /// Seconds since the last answer.
        age: f64,
        /// The limit.
        max: f64,
    },
    /// Quarantined after repeated refusals.
    #[error("quarantined until round {0} (repeatedly refused updates)")]
    Quarantined(u64),
    /// Cooling down after a failure.
    #[error(
        "cooling down after failing round {failed} (participation.cooldown_rounds = {rounds})"
    )]
    CoolingDown {
        /// The round it failed.
        failed: u64,
        /// The cool-down.
        rounds: u64,
    },
}

/// Whether `c` may take part in `round`, and if not, the first rule that says no.
pub fn eligibility(policy: &Policy, c: &Candidate, round: u64) -> Result<(), Ineligible> {
    let p = &policy.participation;
    if p.deny.contains(&c.name) {
        return Err(Ineligible::Denied);
    }
    if let Some(b) = &c.blocked {
        return Err(Ineligible::Blocked(b.clone()));
    }
    if !p.roles.contains(&c.role) {
        return Err(Ineligible::Role {
            role: c.role.clone(),
            allowed: p.roles.clone(),
        });
    }
    if !policy.regions.is_empty() && !policy.regions.contains(&c.region) {
        return Err(Ineligible::Region {
            region: c.region.clone(),
            regions: policy.regions.clone(),
        });
    }
    if let Some(allowed) = &p.allowed_regions {
        if !allowed.contains(&c.region) {
            return Err(Ineligible::RegionNotAllowed {
                region: c.region.clone(),
                allowed: allowed.clone(),
            });
        }
    }
    if c.protocol_version < p.min_protocol_version {
        return Err(Ineligible::Protocol {
            have: c.protocol_version,
            need: p.min_protocol_version,
        });
    }
    if let Some(min) = &p.min_software_version {
        let ok = match (parse_version(&c.software_version), parse_version(min)) {
            (Some(have), Some(need)) => have >= need,
            _ => false,
        };
        if !ok {
            return Err(Ineligible::Software {
                have: c.software_version.clone(),
                need: min.clone(),
            });
        }
    }
    match c.heartbeat_age_secs {
        None => return Err(Ineligible::NoHeartbeat),
        Some(age) if age > p.max_heartbeat_age_secs => {
            return Err(Ineligible::MissedHeartbeats {
                age,
                max: p.max_heartbeat_age_secs,
            })
        }
        _ => {}
    }
    if let Some(until) = c.quarantined_until {
        if round < until {
            return Err(Ineligible::Quarantined(until));
        }
    }
    if let Some(failed) = c.last_failure_round {
        if p.cooldown_rounds > 0 && round <= failed + p.cooldown_rounds {
            return Err(Ineligible::CoolingDown {
                failed,
                rounds: p.cooldown_rounds,
            });
        }
    }
    Ok(())
}

/// Chooses `round`'s cohort: the eligible candidates; if `sample_fraction` or `max_silos` asks
/// for fewer, a sample drawn with a generator seeded by the round (the same inputs give the
/// same cohort). Invariants: `cohort ∪ excluded` = candidates, disjoint; the cohort has at
/// least `min_silos` and at most `max_silos` members when the verdict allows the round.
pub fn select_cohort(policy: &Policy, candidates: &[Candidate], round: u64) -> Selection {
    let p = &policy.participation;
    let mut eligible = Vec::new();
    let mut excluded = Vec::new();
    for c in candidates {
        match eligibility(policy, c, round) {
            Ok(()) => eligible.push(c.name.clone()),
            Err(why) => excluded.push((c.name.clone(), why.to_string())),
        }
    }
    eligible.sort();
    if eligible.len() < p.min_silos {
        let why = format!(
            "{} eligible silo(s), participation.min_silos is {}",
            eligible.len(),
            p.min_silos
        );
        excluded.extend(
            eligible
                .into_iter()
                .map(|e| (e, format!("eligible, but the round cannot start: {why}"))),
        );
        return Selection {
            verdict: Verdict::deny(why),
            cohort: Vec::new(),
            excluded,
        };
    }
    let mut k = ((p.sample_fraction * eligible.len() as f64).ceil() as usize).max(p.min_silos);
    if let Some(max) = p.max_silos {
        k = k.min(max);
    }
    let k = k.min(eligible.len());
    let mut cohort = eligible.clone();
    if k < eligible.len() {
        cohort.shuffle(&mut ChaCha8Rng::seed_from_u64(round));
        for left in cohort.split_off(k) {
            excluded.push((
                left,
                format!(
                    "not sampled this round ({k} of {} eligible: participation.sample_fraction = {}, max_silos = {})",
                    eligible.len(),
                    p.sample_fraction,
                    p.max_silos.map_or("none".to_string(), |m| m.to_string())
                ),
            ));
        }
        cohort.sort();
    }
    Selection {
        verdict: Verdict::allow(format!(
            "{} of {} eligible silo(s) selected",
            cohort.len(),
            eligible.len()
        )),
        cohort,
        excluded,
    }
}

/// Whether `received` admitted updates out of `selected` meet the quorum to commit.
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

/// Aggregation weights from example counts, each share capped at `max_share` and the rest
/// renormalised (water-filling). Returns shares summing to 1. Invariants: every share ≤
/// `max_share` (when `n · max_share ≥ 1`; otherwise all shares are equal); shares of uncapped
/// silos keep their proportions; a larger count never gets a smaller share.
pub fn capped_shares(weights: &[f64], max_share: f64) -> Vec<f64> {
    let n = weights.len();
    if n == 0 {
        return Vec::new();
    }
    if max_share * n as f64 <= 1.0 + 1e-12 {
        return vec![1.0 / n as f64; n];
    }
    let mut capped = vec![false; n];
    loop {
        let free: f64 = 1.0 - max_share * capped.iter().filter(|c| **c).count() as f64;
        let mass: f64 = weights
            .iter()
            .zip(&capped)
            .filter(|(_, c)| !**c)
            .map(|(w, _)| *w)
            .sum();
        let mut changed = false;
        let shares: Vec<f64> = weights
            .iter()
            .zip(&capped)
            .map(|(w, c)| {
                if *c {
                    max_share
                } else if mass > 0.0 {
                    w / mass * free
                } else {
                    free / n as f64
                }
            })
            .collect();
        for i in 0..n {
            if !capped[i] && shares[i] > max_share + 1e-12 {
                capped[i] = true;
                changed = true;
            }
        }
        if !changed {
            return shares;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(text: &str) -> Policy {
        Policy::from_toml_str(text, "t").unwrap()
    }

    fn c(name: &str) -> Candidate {
        Candidate::healthy(name, "eu")
    }

    #[test]
    fn every_eligibility_rule_excludes_with_its_reason() {
        let p = policy(
            r#"regions = ["eu", "us"]
[participation]
min_silos = 1
quorum = 1
allowed_regions = ["eu"]
min_protocol_version = 2
min_software_version = "1.2.0"
max_heartbeat_age_secs = 5
cooldown_rounds = 2
deny = ["revoked"]
"#,
        );
        let base = Candidate {
            protocol_version: 2,
            software_version: "1.2.0".into(),
            ..c("ok")
        };
        let cases = vec![
            (
                Candidate {
                    name: "revoked".into(),
                    ..base.clone()
                },
                "participation.deny",
            ),
            (
                Candidate {
                    blocked: Some("schema differs".into()),
                    ..base.clone()
                },
                "schema differs",
            ),
            (
                Candidate {
                    role: "aggregator".into(),
                    ..base.clone()
                },
                "participation.roles",
            ),
            (
                Candidate {
                    region: "mars".into(),
                    ..base.clone()
                },
                "consortium's regions",
            ),
            (
                Candidate {
                    region: "us".into(),
                    ..base.clone()
                },
                "allowed_regions",
            ),
            (
                Candidate {
                    protocol_version: 1,
                    ..base.clone()
                },
                "min_protocol_version",
            ),
            (
                Candidate {
                    software_version: "1.1.9".into(),
                    ..base.clone()
                },
                "min_software_version",
            ),
            (
                Candidate {
                    heartbeat_age_secs: Some(9.0),
                    ..base.clone()
                },
                "missed heartbeats",
            ),
            (
                Candidate {
                    heartbeat_age_secs: None,
                    ..base.clone()
                },
                "not answered",
            ),
            (
                Candidate {
                    quarantined_until: Some(11),
                    ..base.clone()
                },
                "quarantined until round 11",
            ),
            (
                Candidate {
                    last_failure_round: Some(8),
                    ..base.clone()
                },
                "cooling down",
            ),
        ];
        for (cand, want) in cases {
            let why = eligibility(&p, &cand, 10).unwrap_err().to_string();
            assert!(why.contains(want), "{cand:?}: {why}");
        }
        assert!(eligibility(&p, &base, 10).is_ok());
        // Quarantine and cool-down end.
        assert!(eligibility(
            &p,
            &Candidate {
                quarantined_until: Some(10),
                ..base.clone()
            },
            10
        )
        .is_ok());
        assert!(eligibility(
            &p,
            &Candidate {
                last_failure_round: Some(7),
                ..base.clone()
            },
            10
        )
        .is_ok());
    }

    #[test]
    fn sampling_and_max_silos_cap_the_cohort_deterministically() {
        let p = policy(
            "[participation]\nmin_silos = 2\nquorum = 2\nsample_fraction = 0.5\nmax_silos = 3\n",
        );
        let cands: Vec<Candidate> = (0..10).map(|i| c(&format!("s{i}"))).collect();
        let s = select_cohort(&p, &cands, 4);
        assert!(s.verdict.allow);
        assert_eq!(s.cohort.len(), 3);
        assert_eq!(s.excluded.len(), 7);
        assert!(s.excluded[0].1.contains("not sampled"));
        assert_eq!(select_cohort(&p, &cands, 4), s, "same round, same cohort");
        assert_ne!(
            select_cohort(&p, &cands, 5).cohort,
            s.cohort,
            "another round draws anew"
        );
    }

    #[test]
    fn too_few_silos_refuses_the_round() {
        let p = policy("[participation]\nmin_silos = 3\nquorum = 2\n");
        let s = select_cohort(&p, &[c("a")], 1);
        assert!(!s.verdict.allow);
        assert!(s.cohort.is_empty());
        assert!(s.verdict.reasons[0].contains("min_silos is 3"));
    }

    #[test]
    fn quorum_boundary() {
        let p = policy("[participation]\nmin_silos = 4\nquorum = 3\n");
        assert!(quorum_verdict(&p, 3, 4).allow);
        let v = quorum_verdict(&p, 2, 4);
        assert!(!v.allow && v.reasons[0].starts_with("quorum lost"));
        assert!(quorum_still_possible(&p, 2, 1));
        assert!(!quorum_still_possible(&p, 1, 1));
    }

    #[test]
    fn a_dominant_silo_is_capped() {
        let s = capped_shares(&[900.0, 50.0, 50.0], 0.5);
        assert!(
            (s[0] - 0.5).abs() < 1e-12
                && (s[1] - 0.25).abs() < 1e-12
                && (s[2] - 0.25).abs() < 1e-12,
            "{s:?}"
        );
        assert_eq!(capped_shares(&[1.0, 3.0], 1.0), vec![0.25, 0.75]);
    }

    proptest! {
        #[test]
        fn cohort_and_exclusions_partition_candidates(
            health in proptest::collection::vec(any::<bool>(), 0..20), min in 1usize..6, frac in 0.05f64..=1.0
        ) {
            let p = policy(&format!("[participation]\nmin_silos = {min}\nquorum = 1\nsample_fraction = {frac}\n"));
            let cands: Vec<Candidate> = health.iter().enumerate()
                .map(|(i, h)| Candidate { heartbeat_age_secs: if *h { Some(0.0) } else { None }, ..c(&format!("s{i:02}")) }).collect();
            let s = select_cohort(&p, &cands, 7);
            let healthy = health.iter().filter(|h| **h).count();
            prop_assert_eq!(s.verdict.allow, healthy >= min);
            prop_assert_eq!(s.cohort.len() + s.excluded.len(), cands.len());
            if s.verdict.allow { prop_assert!(s.cohort.len() >= min); } else { prop_assert!(s.cohort.is_empty()); }
            prop_assert!(!s.verdict.reasons.is_empty());
        }

        #[test]
        fn capped_shares_sum_to_one_and_respect_the_cap(ws in proptest::collection::vec(1.0f64..1e6, 1..12), cap in 0.05f64..=1.0) {
            let s = capped_shares(&ws, cap);
            prop_assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            if cap * ws.len() as f64 >= 1.0 {
                for x in &s { prop_assert!(*x <= cap + 1e-9); }
            }
            for i in 0..ws.len() { for j in 0..ws.len() {
                if ws[i] > ws[j] { prop_assert!(s[i] >= s[j] - 1e-12); }
            }}
        }
    }
}
