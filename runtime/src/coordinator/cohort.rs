//! Who may train in the next round: every connected silo as a policy [`Candidate`], with the
//! reason it is left out when it is (blocked, central hold-out, over its privacy budget, no
//! aggregator allowed for its region, silent, schema not verified). The Policy actor then
//! selects the cohort from these; [`route_for`] says where each member's update is combined.

use std::collections::BTreeMap;

use fedsilo_policies::participation::Candidate;
use fedsilo_policies::Policy;

use super::membership::{Members, SchemaCheck};
use crate::protocol::regional::RegionalHandle;

/// Where `silo` (of `region`) would have its update aggregated under `policy`: `Ok(Some)` a
/// regional aggregator, `Ok(None)` this coordinator (of region `own_region`), `Err` nowhere
/// allowed. `misroute` is a fault-injection hook for tests (see
/// `CoordinatorSettings::misroute`).
pub fn route_for(
    aggregators: &BTreeMap<String, RegionalHandle>,
    policy: &Policy,
    silo: &str,
    region: &str,
    own_region: &str,
    misroute: Option<&str>,
) -> Result<Option<RegionalHandle>, NowhereAllowed> {
    if policy.residency.is_none() {
        return Ok(None);
    }
    let aggs: Vec<(String, String)> = aggregators
        .values()
        .map(|a| (a.name.clone(), a.region.clone()))
        .collect();
    if misroute == Some(silo) {
        if let Some(wrong) = aggregators
            .values()
            .find(|a| !fedsilo_policies::residency::may_process(policy, region, &a.region).allow)
        {
            tracing::warn!(silo, aggregator = wrong.name, "fault injection: misrouting");
            return Ok(Some(wrong.clone()));
        }
    }
    if let Ok(name) = fedsilo_policies::residency::route(policy, region, &aggs) {
        return Ok(aggregators.get(name).cloned());
    }
    if fedsilo_policies::residency::may_process(policy, region, own_region).allow {
        return Ok(None);
    }
    Err(NowhereAllowed {
        region: region.to_string(),
    })
}

/// Under `[residency]`, no linked aggregator (and not this coordinator) may process a
/// region's updates: its silos sit the round out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("residency: no aggregator allowed to process `{region}` updates is linked")]
pub struct NowhereAllowed {
    /// The silo's region.
    pub region: String,
}

/// What the candidates list is built from besides the members.
pub struct Eligibility<'a> {
    /// The policy the cohort will be chosen by.
    pub policy: &'a Policy,
    /// The round to choose for.
    pub round: u64,
    /// Silos over their privacy budget, with why.
    pub over_budget: &'a BTreeMap<String, String>,
    /// This coordinator's region.
    pub own_region: &'a str,
    /// Fault injection (tests).
    pub misroute: Option<&'a str>,
}

/// Every connected silo as a policy candidate, with the first reason it may not train.
pub fn candidates(members: &Members, e: &Eligibility<'_>) -> Vec<Candidate> {
    let holdout = e
        .policy
        .validation
        .as_ref()
        .and_then(|v| v.central_holdout.clone());
    members
        .silos
        .iter()
        .map(|(n, s)| {
            let blocked = s
                .blocked
                .clone()
                .or_else(|| {
                    (holdout.as_deref() == Some(n.as_str())).then(|| {
                        "central hold-out: scores candidates, never trains (validation.central_holdout)"
                            .to_string()
                    })
                })
                .or_else(|| e.over_budget.get(n).cloned())
                .or_else(|| {
                    if let Err(why) = route_for(
                        &members.aggregators,
                        e.policy,
                        n,
                        &s.region,
                        e.own_region,
                        e.misroute,
                    ) {
                        Some(why.to_string())
                    } else if !s.healthy {
                        Some(format!(
                            "missed heartbeats: last answer {:.1} s ago (network.heartbeat_timeout_secs)",
                            s.last_ok.elapsed().as_secs_f64()
                        ))
                    } else if s.deploying {
                        // Its one transfer slot is taken: a round's model would cut into it.
                        Some("a deployment is being delivered to it".to_string())
                    } else {
                        (s.schema != SchemaCheck::Passed)
                            .then(|| "schema not verified yet".to_string())
                    }
                });
            Candidate {
                name: n.clone(),
                role: s.role.clone(),
                region: s.region.clone(),
                protocol_version: u32::from(crate::protocol::PROTOCOL_VERSION),
                software_version: s.software_version.clone(),
                heartbeat_age_secs: Some(s.last_ok.elapsed().as_secs_f64()),
                last_failure_round: members.failures.get(n).copied(),
                quarantined_until: members.quarantine.quarantined_until(n, e.round),
                blocked,
            }
        })
        .collect()
}
