//! Residency: which aggregators may process a region's updates, and when a regional aggregate
//! may cross a border. Regions always come from verified certificates.

use crate::{Policy, Verdict};

/// Whether an update from a silo in `silo_region` may be processed by an aggregator in
/// `aggregator_region`. Without a `[residency]` section everything is allowed.
pub fn may_process(policy: &Policy, silo_region: &str, aggregator_region: &str) -> Verdict {
    let Some(res) = &policy.residency else {
        return Verdict::allow("no residency rules");
    };
    match res.allowed.get(silo_region) {
        None => Verdict::deny(format!(
            "region `{silo_region}` has no residency entry; its updates may be processed nowhere"
        )),
        Some(to) if to.iter().any(|r| r == aggregator_region) => Verdict::allow(format!(
            "`{silo_region}` updates may be processed in `{aggregator_region}`"
        )),
        Some(to) => Verdict::deny(format!(
            "`{silo_region}` updates may be processed only in {to:?}, not in `{aggregator_region}`"
        )),
    }
}

/// No aggregator may process a region's updates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no aggregator in a region allowed for `{region}` updates")]
pub struct NoRoute {
    /// The silo's region.
    pub region: String,
}

/// Chooses the aggregator for a silo of `silo_region` among `aggregators` (`(name, region)`):
/// one in the silo's own region if allowed, else the first allowed one in the policy's order.
pub fn route<'a>(
    policy: &Policy,
    silo_region: &str,
    aggregators: &'a [(String, String)],
) -> Result<&'a str, NoRoute> {
    let allowed = |a: &&(String, String)| may_process(policy, silo_region, &a.1).allow;
    if let Some(a) = aggregators
        .iter()
        .filter(allowed)
        .find(|a| a.1 == silo_region)
    {
        return Ok(&a.0);
    }
    if let Some(res) = &policy.residency {
        for region in res.allowed.get(silo_region).into_iter().flatten() {
            if let Some(a) = aggregators.iter().find(|a| a.1 == *region) {
                return Ok(&a.0);
            }
        }
    } else if let Some(a) = aggregators.first() {
        return Ok(&a.0);
    }
    Err(NoRoute {
        region: silo_region.to_string(),
    })
}

/// Whether a regional aggregate of `silos` updates may travel on to the global aggregator.
pub fn may_cross_border(policy: &Policy, silos: usize) -> Verdict {
    let k = policy
        .residency
        .as_ref()
        .map_or(1, |r| r.min_regional_silos);
    if silos >= k {
        Verdict::allow(format!(
            "aggregate of {silos} silos ≥ residency.min_regional_silos {k}"
        ))
    } else {
        Verdict::deny(format!("aggregate of {silos} silo(s) may not leave its region: residency.min_regional_silos is {k}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_toml_str(
            "regions = [\"eu-west\", \"eu-central\", \"us-east\"]\n[residency]\nmin_regional_silos = 2\n[residency.allowed]\neu-west = [\"eu-west\", \"eu-central\"]\neu-central = [\"eu-central\"]\nus-east = [\"us-east\", \"eu-west\"]\n",
            "t",
        )
        .unwrap()
    }

    #[test]
    fn eu_updates_never_go_to_the_us() {
        let p = policy();
        assert!(may_process(&p, "eu-west", "eu-central").allow);
        let v = may_process(&p, "eu-west", "us-east");
        assert!(!v.allow && v.reasons[0].contains("only in"), "{v:?}");
        let aggs = vec![
            ("agg-us".to_string(), "us-east".to_string()),
            ("agg-eu".to_string(), "eu-central".to_string()),
        ];
        assert_eq!(route(&p, "eu-west", &aggs), Ok("agg-eu"));
        assert_eq!(route(&p, "us-east", &aggs), Ok("agg-us"));
        assert!(route(&p, "eu-central", &aggs[..1]).is_err());
    }

    #[test]
    fn small_regional_aggregates_stay_home() {
        let p = policy();
        assert!(!may_cross_border(&p, 1).allow);
        assert!(may_cross_border(&p, 2).allow);
    }
}
