//! Dry runs: what a policy would decide for a given roster of silos and aggregators, without a
//! network (`fedsilo policy explain`).
//!
//! A roster file:
//!
//! ```toml
//! round = 12                  # the round to explain (sampling, cool-down and quarantine use it)
//!
//! [[silo]]
//! name = "bank-a"
//! region = "eu-west"
//! # role = "silo", protocol_version = 1, software_version = "0.1.0",
//! # heartbeat_age_secs = 0.0, last_failure_round = 10, quarantined_until = 14
//!
//! [[aggregator]]
//! name = "agg-eu"
//! region = "eu-west"
//! ```

use std::fmt::Write;
use std::path::Path;

use serde::Deserialize;

use crate::participation::{select_cohort, Candidate};
use crate::residency::route;
use crate::{Policy, PolicyError};

/// An aggregator in a roster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterAggregator {
    /// Node name.
    pub name: String,
    /// Certificate region.
    pub region: String,
}

/// The silos and aggregators a dry run considers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roster {
    /// The round to explain.
    #[serde(default = "first_round")]
    pub round: u64,
    /// The silos.
    #[serde(default)]
    pub silo: Vec<Candidate>,
    /// The aggregators (none: the coordinator aggregates).
    #[serde(default)]
    pub aggregator: Vec<RosterAggregator>,
}

fn first_round() -> u64 {
    1
}

impl Roster {
    /// Reads a roster file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| PolicyError::Syntax {
            origin: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

/// Explains, as text, which silos `policy` selects for `roster.round`, which it leaves out and
/// why, and where each selected silo's update would be aggregated.
pub fn explain(policy: &Policy, roster: &Roster) -> String {
    let mut out = String::new();
    let s = select_cohort(policy, &roster.silo, roster.round);
    let _ = writeln!(
        out,
        "round {}: {}",
        roster.round,
        s.verdict.reasons.join("; ")
    );
    let aggs: Vec<(String, String)> = roster
        .aggregator
        .iter()
        .map(|a| (a.name.clone(), a.region.clone()))
        .collect();
    for name in &s.cohort {
        let region = roster
            .silo
            .iter()
            .find(|c| c.name == *name)
            .map(|c| c.region.as_str())
            .unwrap_or("?");
        let place = if aggs.is_empty() {
            "aggregated by the coordinator".to_string()
        } else {
            match route(policy, region, &aggs) {
                Ok(a) => format!("aggregated by {a}"),
                Err(e) => format!("NOT aggregable: {e}"),
            }
        };
        let _ = writeln!(out, "  selected  {name:<20} {region:<14} {place}");
    }
    let mut excluded = s.excluded.clone();
    excluded.sort();
    for (name, why) in excluded {
        let _ = writeln!(out, "  excluded  {name:<20} {why}");
    }
    out
}

/// A normalised summary of a policy (`fedsilo policy check`).
pub fn summary(policy: &Policy) -> String {
    let p = &policy.participation;
    let mut out = String::new();
    let _ = writeln!(out, "policy digest {}", policy.digest);
    let regions = if policy.regions.is_empty() {
        "any".to_string()
    } else {
        policy.regions.join(", ")
    };
    let _ = writeln!(out, "regions        {regions}");
    let _ = writeln!(
        out,
        "participation  {}..{} silos per round, quorum {}, sample {:.0} %, weight share ≤ {:.0} %",
        p.min_silos,
        p.max_silos.map_or("∞".to_string(), |m| m.to_string()),
        p.quorum,
        p.sample_fraction * 100.0,
        policy.max_weight_share() * 100.0
    );
    let _ = writeln!(
        out,
        "eligibility    roles {:?}; regions {}; protocol ≥ {}; software ≥ {}; heartbeat ≤ {} s; cool-down {} round(s); denied {:?}",
        p.roles,
        p.allowed_regions.as_ref().map_or("all".to_string(), |r| r.join(", ")),
        p.min_protocol_version,
        p.min_software_version.as_deref().unwrap_or("any"),
        p.max_heartbeat_age_secs,
        p.cooldown_rounds,
        p.deny
    );
    let _ = writeln!(
        out,
        "rounds         deadline {} s, grace {} s",
        policy.rounds.deadline_secs, policy.rounds.grace_secs
    );
    let a = &policy.admission;
    let _ = writeln!(
        out,
        "admission      min examples {}; norm ≤ {}; norm ≤ {} the cohort's median; anomaly {}; quarantine {}",
        p.min_examples,
        a.max_update_norm
            .map_or("any".to_string(), |n| n.to_string()),
        policy
            .max_norm_ratio()
            .map_or("any multiple of".to_string(), |r| format!("{r}×")),
        match a.anomaly {
            None => "none".to_string(),
            Some(crate::Anomaly::NormZscore { threshold }) => format!("norm z-score ≤ {threshold}"),
            Some(crate::Anomaly::Cosine { threshold }) => format!("cosine ≥ {threshold}"),
        },
        a.quarantine.map_or("none".to_string(), |q| format!(
            "{} refusals in {} rounds → out for {} rounds",
            q.after, q.window, q.rounds
        ))
    );
    match &policy.residency {
        None => {
            let _ = writeln!(
                out,
                "residency      none: updates may be processed anywhere"
            );
        }
        Some(r) => {
            for (from, to) in &r.allowed {
                let _ = writeln!(out, "residency      {from} → {}", to.join(", "));
            }
            let _ = writeln!(
                out,
                "               regional aggregates cross a border with ≥ {} silos",
                r.min_regional_silos
            );
        }
    }
    match &policy.privacy {
        None => {
            let _ = writeln!(out, "privacy        no silo-level DP");
        }
        Some(dp) => {
            let _ = writeln!(
                out,
                "privacy        {} DP-FedAvg: updates clipped to {}, noise {} × clip on the sum; budget {}",
                dp.mode.as_str(),
                dp.clip_norm,
                dp.noise_multiplier,
                dp.budget.map_or("none (spend recorded)".to_string(), |b| format!(
                    "ε ≤ {} at δ = {:e} per silo",
                    b.epsilon, b.delta
                ))
            );
            for (silo, b) in &dp.silos {
                let _ = writeln!(
                    out,
                    "               {silo}: ε ≤ {}{}",
                    b.epsilon,
                    b.delta.map_or(String::new(), |d| format!(" at δ = {d:e}"))
                );
            }
        }
    }
    match &policy.secure_aggregation {
        None => {
            let _ = writeln!(out, "secure agg.    off: the aggregator sees each update");
        }
        Some(sa) => {
            let _ = writeln!(
                out,
                "secure agg.    on: the aggregator sees only the sum; {}-bit ring, values clipped to ±{}, unmasked by {} survivors",
                sa.bits,
                sa.range,
                sa.threshold.map_or("more than half the cohort".to_string(), |t| format!(
                    "{t} (or more than half the cohort)"
                ))
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_selection_exclusion_and_routing() {
        let policy = Policy::from_toml_str(
            "regions = [\"eu\", \"us\"]\n[participation]\nmin_silos = 2\nquorum = 2\ndeny = [\"bank-x\"]\n[residency.allowed]\neu = [\"eu\"]\nus = [\"us\"]\n",
            "p",
        )
        .unwrap();
        let roster: Roster = toml::from_str(
            "round = 3\n[[silo]]\nname = \"bank-a\"\nregion = \"eu\"\n[[silo]]\nname = \"bank-b\"\nregion = \"us\"\n[[silo]]\nname = \"bank-x\"\nregion = \"eu\"\n[[silo]]\nname = \"bank-c\"\nregion = \"us\"\nheartbeat_age_secs = 99.0\n[[aggregator]]\nname = \"agg-eu\"\nregion = \"eu\"\n[[aggregator]]\nname = \"agg-us\"\nregion = \"us\"\n",
        )
        .unwrap();
        let text = explain(&policy, &roster);
        assert!(
            text.contains("bank-a") && text.contains("aggregated by agg-eu"),
            "{text}"
        );
        assert!(
            text.contains("bank-b") && text.contains("aggregated by agg-us"),
            "{text}"
        );
        assert!(
            text.contains("bank-x") && text.contains("participation.deny"),
            "{text}"
        );
        assert!(
            text.contains("bank-c") && text.contains("missed heartbeats"),
            "{text}"
        );
        assert!(summary(&policy).contains("eu → eu"));
    }

    #[test]
    fn the_sample_policies_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml")
                && !path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .contains("roster")
            {
                Policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 2);
        let p = Policy::load(&dir.join("cross-bank.toml")).unwrap();
        let r = Roster::load(&dir.join("cross-bank.roster.toml")).unwrap();
        let text = explain(&p, &r);
        assert!(!text.contains("NOT aggregable"), "{text}");
        // 4 eligible (vienna cools down, boston is silent, revoked is denied); 80 % of 4 → 4.
        assert!(text.starts_with("round 7: 4 of 4 eligible"), "{text}");
        for (silo, why) in [
            ("bank-vienna", "cooling down"),
            ("bank-boston", "missed heartbeats"),
            ("bank-revoked", "deny"),
        ] {
            assert!(
                text.lines().any(|l| l.contains(silo) && l.contains(why)),
                "{silo}: {text}"
            );
        }
        assert!(
            text.lines()
                .any(|l| l.contains("bank-paris") && l.contains("agg-eu")),
            "{text}"
        );
    }
}
