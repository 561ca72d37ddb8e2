//! Residency: the round at the regional aggregators. Each opens the round ([`begin`]),
//! collects its silos' updates over its own sessions, and at the end hands over its aggregate
//! ([`parts`]) — only if it combines at least `residency.min_regional_silos` silos, and only
//! for silos this node admitted through it, weighed by their own reports.

use std::collections::BTreeMap;
use std::time::Duration;

use super::collect::Tally;
use super::context::RoundContext;
use crate::model::Digest;
use crate::protocol::regional::{call_regional, RegionalHandle, RegionalRequest, RegionalResponse};
use crate::protocol::ModelRef;

/// Opens the round at every regional aggregator the cohort is routed to; returns the
/// aggregators that failed to open (their silos' updates will be refused).
pub async fn begin(ctx: &RoundContext) -> Vec<String> {
    let mut seen = BTreeMap::new();
    for agg in ctx.routes.values() {
        seen.insert(agg.name.clone(), agg.clone());
    }
    let (name, trim, byzantine, keep) = ctx.aggregation.kernel.params();
    let mut failed = Vec::new();
    for agg in seen.values() {
        let req = RegionalRequest::Begin {
            round: ctx.round,
            base: ModelRef {
                version: ctx.base.version,
                digest: ctx.base.digest,
            },
            len: ctx.base.params.len() as u64,
            policy: ctx.policy.source.clone(),
            kernel: (name.to_string(), trim, byzantine, keep),
            clip_norm: ctx.aggregation.clip_norm,
        };
        if let Err(e) = call_regional(&agg.actor, &req, Duration::from_secs(30), &agg.name).await {
            tracing::warn!(aggregator = agg.name, "cannot open the round: {e}");
            failed.push(agg.name.clone());
        }
    }
    failed
}

/// Closes the round at each regional aggregator that admitted updates and pulls its aggregate
/// if it combines at least `residency.min_regional_silos` silos; the silos of an aggregate that
/// may not cross (or could not be fetched) are refused.
pub async fn parts(ctx: &RoundContext, tally: &mut Tally) -> Vec<(Vec<f32>, f64)> {
    let examples: BTreeMap<String, f64> = tally
        .admitted
        .iter()
        .map(|(s, r)| (s.clone(), ctx.policy.update_weight(r.examples as f64)))
        .collect();
    let admitted_examples =
        |names: &[String]| names.iter().filter_map(|n| examples.get(n)).sum::<f64>();
    let mut by_agg: BTreeMap<String, (RegionalHandle, Vec<String>)> = BTreeMap::new();
    for (silo, _) in tally.admitted.iter() {
        if let Some(agg) = ctx.routes.get(silo) {
            by_agg
                .entry(agg.name.clone())
                .or_insert_with(|| (agg.clone(), vec![]))
                .1
                .push(silo.clone());
        }
    }
    let mut parts = Vec::new();
    for (agg, silos) in by_agg.into_values() {
        let pulled = async {
            let summary = call_regional(
                &agg.actor,
                &RegionalRequest::Finish { round: ctx.round },
                Duration::from_secs(600),
                &agg.name,
            )
            .await
            .map_err(|e| e.to_string())?;
            let RegionalResponse::Summary { silos: combined, weight: _, digest } = summary else {
                return Err(format!("aggregator {} answered {summary:?}", agg.name));
            };
            // Trust only what this node admitted itself: the aggregate must speak for silos it
            // admitted through that aggregator, and weighs what their own reports say.
            if combined.is_empty() || combined.iter().any(|c| !silos.contains(c)) {
                return Err(format!(
                    "aggregator {} combined {combined:?}, but only {silos:?} were admitted through it",
                    agg.name
                ));
            }
            let weight: f64 = admitted_examples(&combined);
            let border = fedsilo_policies::residency::may_cross_border(&ctx.policy, combined.len());
            if !border.allow {
                return Err(format!(
                    "regional aggregate of {}: {}",
                    agg.name,
                    border.reasons.join("; ")
                ));
            }
            let len = ctx.base.params.len();
            let mut values = Vec::with_capacity(len);
            while values.len() < len {
                let want = ctx.chunk.min(len - values.len());
                let req = RegionalRequest::Fetch {
                    round: ctx.round,
                    offset: values.len() as u64,
                    len: want as u64,
                };
                match call_regional(&agg.actor, &req, Duration::from_secs(60), &agg.name)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    RegionalResponse::Chunk { values: v } if v.len() == want => {
                        values.extend_from_slice(&v)
                    }
                    other => {
                        return Err(format!(
                            "aggregator {} answered a fetch with {other:?}",
                            agg.name
                        ))
                    }
                }
            }
            if Digest::of_f32(&values) != digest {
                return Err(format!(
                    "the aggregate of {} does not match its digest",
                    agg.name
                ));
            }
            Ok((values, weight))
        }
        .await;
        match pulled {
            Ok(part) => parts.push(part),
            Err(reason) => {
                for s in silos {
                    tally.refuse(ctx, s, reason.clone(), false);
                }
            }
        }
    }
    parts
}
