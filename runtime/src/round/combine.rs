//! Combining the admitted updates into a candidate: the policy's quorum verdict on what was
//! admitted; the aggregate — unmasked from the masked sum under secure aggregation, else the
//! Aggregator's kernel over the updates it folded — weighed together with any regional
//! aggregates; central DP noise; the server optimiser's step (or base + update). Every
//! admission, refusal and the aggregation itself are journaled on the way.

use std::time::{Duration, Instant};

use super::collect::Tally;
use super::context::RoundContext;
use super::outcome::RoundOutcome;
use super::secure::Session;
use crate::actors::aggregator::{Aggregate, AggregatorMessage};
use crate::actors::ask;
use crate::actors::policy::PolicyMessage;
use crate::audit::Record;
use crate::kernels::server_optimizer::OptimizerState;
use crate::kernels::WeightedMean;
use crate::model::Digest;
use crate::privacy::mechanism::central_std;
use crate::privacy::noise::{add_gaussian, secure_rng};

/// The candidate a round's updates make.
#[derive(Debug)]
pub struct Combined {
    /// Its parameters.
    pub params: Vec<f32>,
    /// Their digest.
    pub digest: Digest,
    /// The server optimiser's state after this round.
    pub optimizer: Option<OptimizerState>,
    /// How the updates were combined, in words.
    pub kernel: String,
    /// Silos a selecting kernel kept.
    pub selected: Option<Vec<String>>,
    /// Silos whose updates were clipped, with their original norm.
    pub clipped: Vec<(String, f64)>,
}

/// Journal entries written along the way; the first failure is kept (the round is then
/// abandoned before its candidate is scored).
#[derive(Default)]
struct Notes(Option<String>);

impl Notes {
    fn note(&mut self, ctx: &RoundContext, r: Record) {
        if self.0.is_none() {
            if let Err(e) = ctx.journal.record(r) {
                self.0 = Some(e.to_string());
            }
        }
    }
}

/// Fetching the masked updates, and then unmasking, each get at least half a minute, even
/// when collection ran to the deadline: the silos' work is done, only the sum is left.
fn tail(deadline: Instant) -> Instant {
    deadline.max(Instant::now() + Duration::from_secs(30))
}

/// Combines what `tally` admitted (see the module documentation); `Err` is the round's
/// outcome when no candidate can be made.
pub async fn combine(
    ctx: &RoundContext,
    mut secure: Option<Session>,
    regional: Vec<(Vec<f32>, f64)>,
    tally: &mut Tally,
    deadline: Instant,
) -> Result<Combined, RoundOutcome> {
    let round = ctx.round;
    let kernel = match &secure {
        Some(s) => format!(
            "{} under secure aggregation (t = {})",
            ctx.aggregation.describe(),
            s.threshold()
        ),
        None => ctx.aggregation.describe(),
    };
    if let Some(session) = secure.as_mut() {
        for (silo, reason) in session.collect(ctx, &tally.admitted, tail(deadline)).await {
            tally.refuse(ctx, silo, reason, false);
        }
    }
    let mut notes = Notes::default();
    for (silo, report) in &tally.admitted {
        notes.note(
            ctx,
            Record::UpdateAdmitted {
                round,
                silo: silo.clone(),
                digest: report.update_digest.hex(),
                norm: report.update_norm,
                examples: report.examples,
            },
        );
    }
    for (silo, reason) in &tally.missing {
        notes.note(
            ctx,
            Record::UpdateRefused {
                round,
                silo: silo.clone(),
                reason: reason.clone(),
            },
        );
    }
    quorum(ctx, tally).await?;
    let mut aggregate = aggregate(ctx, secure, tally, deadline).await?;
    if !regional.is_empty() {
        aggregate.values = across_regions(ctx, &regional, &aggregate.values, tally)?;
    }
    // Central silo-level DP: N(0, z²C²) on the sum of the m clipped updates, i.e.
    // N(0, (zC/m)²) on their mean. Distributed mode: the silos added theirs.
    if let Some(std) = ctx
        .policy
        .privacy
        .as_ref()
        .and_then(|dp| central_std(dp, tally.admitted.len()))
    {
        add_gaussian(&mut aggregate.values, std, &mut secure_rng());
    }
    let (params, optimizer) = match (&ctx.aggregation.server_optimizer, &ctx.optimizer) {
        (Some(o), Some(st)) => {
            let (p, st) = o.step(&ctx.base.params, &aggregate.values, st, ctx.progress);
            (p, Some(st))
        }
        _ => {
            // The new model is written over the aggregate: no third model-sized buffer.
            let mut p = std::mem::take(&mut aggregate.values);
            p.iter_mut()
                .zip(ctx.base.params.iter())
                .for_each(|(u, b)| *u += *b);
            (p, None)
        }
    };
    let digest = Digest::of_f32(&params);
    notes.note(
        ctx,
        Record::Aggregated {
            round,
            kernel: kernel.clone(),
            inputs: tally
                .admitted
                .iter()
                .map(|(s, r)| (s.clone(), r.update_digest.hex()))
                .collect(),
            candidate: digest.hex(),
        },
    );
    if let Some(e) = notes.0 {
        return Err(tally.abandoned(ctx, e));
    }
    Ok(Combined {
        params,
        digest,
        optimizer,
        kernel,
        selected: aggregate.selected,
        clipped: aggregate.clipped,
    })
}

/// The policy's quorum verdict on the updates admitted; a refusal abandons the round, naming
/// who is missing and why.
async fn quorum(ctx: &RoundContext, tally: &Tally) -> Result<(), RoundOutcome> {
    let round = ctx.round;
    let verdict = ask(&ctx.policy_actor, "policy", |reply| PolicyMessage::Quorum {
        round,
        received: tally.admitted.len(),
        selected: ctx.cohort.len(),
        reply,
    })
    .await;
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => {
            let _ = ctx.aggregator.cast(AggregatorMessage::Abort { round });
            return Err(tally.abandoned(ctx, e.to_string()));
        }
    };
    if verdict.allow {
        return Ok(());
    }
    let _ = ctx.aggregator.cast(AggregatorMessage::Abort { round });
    let mut reason = verdict.reasons.join("; ");
    if !tally.missing.is_empty() {
        let detail: Vec<String> = tally
            .missing
            .iter()
            .map(|(s, w)| format!("{s}: {w}"))
            .collect();
        reason.push_str(&format!(" ({})", detail.join("; ")));
    }
    Err(tally.abandoned(ctx, reason))
}

/// The weight of the updates this node combined itself (not through a regional aggregator).
fn local_weight(ctx: &RoundContext, tally: &Tally) -> f64 {
    tally
        .admitted
        .iter()
        .filter(|(s, _)| !ctx.routes.contains_key(s))
        .map(|(_, r)| ctx.policy.update_weight(r.examples as f64))
        .sum()
}

/// The aggregate of the updates this node combined: unmasked under secure aggregation, else
/// the Aggregator's (empty when every update went through a regional aggregator).
async fn aggregate(
    ctx: &RoundContext,
    secure: Option<Session>,
    tally: &Tally,
    deadline: Instant,
) -> Result<Aggregate, RoundOutcome> {
    let round = ctx.round;
    if let Some(session) = secure {
        return match session.unmask(ctx, tail(deadline)).await {
            Ok(values) => Ok(Aggregate {
                values,
                selected: None,
                clipped: Vec::new(),
            }),
            Err(e) => Err(tally.abandoned(ctx, e.to_string())),
        };
    }
    if local_weight(ctx, tally) <= 0.0 {
        let _ = ctx.aggregator.cast(AggregatorMessage::Abort { round });
        return Ok(Aggregate {
            values: Vec::new(),
            selected: None,
            clipped: Vec::new(),
        });
    }
    match ask(&ctx.aggregator, "aggregator", |reply| {
        AggregatorMessage::Finish { round, reply }
    })
    .await
    {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => Err(tally.abandoned(ctx, format!("aggregation failed: {e}"))),
        Err(e) => Err(tally.abandoned(ctx, e.to_string())),
    }
}

/// Across regions: the regional aggregates and this node's own, weighted by the examples
/// behind each (with the weighted mean everywhere this equals FedAvg over all admitted silos).
fn across_regions(
    ctx: &RoundContext,
    regional: &[(Vec<f32>, f64)],
    local: &[f32],
    tally: &Tally,
) -> Result<Vec<f32>, RoundOutcome> {
    let mut acc = WeightedMean::new(ctx.base.params.len());
    let weight = local_weight(ctx, tally);
    let parts = regional.iter().map(|(v, w)| (v.as_slice(), *w));
    let own = (weight > 0.0).then_some((local, weight));
    for (v, w) in parts.chain(own) {
        if let Err(e) = acc.fold(v, w) {
            let reason = format!("combining regional aggregates failed: {e}");
            return Err(tally.abandoned(ctx, reason));
        }
    }
    Ok(acc.finish().unwrap_or_default())
}
