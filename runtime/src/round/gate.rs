//! Scoring the candidate and judging it: the Validator has the silos (and the central
//! hold-out, if any) score it on their held-out splits; the policy's validation gate compares
//! those figures with the current version's; the verdict is journaled; and the round's
//! summary is made. Committing is the coordinator's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::collect::Tally;
use super::combine::Combined;
use super::context::RoundContext;
use super::outcome::RoundOutcome;
use crate::actors::ask_within;
use crate::actors::validator::{Candidate, ValidatorMessage};
use crate::audit::Record;
use crate::events::{Phases, RoundSummary};
use crate::protocol::{EvalMetrics, ModelRef, SiloHandle};

/// When the round started, and the bytes each cohort silo had sent before it.
pub struct Clock {
    /// The round's start.
    pub started: Instant,
    /// Bytes received from each cohort silo before the round.
    pub sent_before: BTreeMap<String, u64>,
    /// Bytes sent to each cohort silo before the round.
    pub to_before: BTreeMap<String, u64>,
    /// When collection began.
    pub collecting: Option<Instant>,
    /// When collection (with the screen of the cohort) ended.
    pub collected: Option<Instant>,
    /// When the candidate was made.
    pub combined: Option<Instant>,
}

/// One way of a link's byte count.
type Way = fn(&crate::cluster::counting_stream::ByteCounters) -> u64;

/// Bytes `silo` exchanged so far one way, over its cluster session and its bulk links.
fn counted(ctx: &RoundContext, silo: &crate::protocol::SiloHandle, f: Way) -> u64 {
    let session = ctx.directory.counters_of(silo.node_id).map_or(0, |c| f(&c));
    let bulk = ctx.bulk.counters_of(&silo.name).map_or(0, |c| f(&c));
    session + bulk
}

impl Clock {
    /// Starts the round's clock now.
    pub fn start(ctx: &RoundContext) -> Self {
        let counted = |f: Way| {
            ctx.cohort
                .iter()
                .map(|s| (s.name.clone(), counted(ctx, s, f)))
                .collect()
        };
        Self {
            started: Instant::now(),
            sent_before: counted(|c| c.received()),
            to_before: counted(|c| c.sent()),
            collecting: None,
            collected: None,
            combined: None,
        }
    }
}

/// Scores and judges `combined` (see the module documentation).
pub async fn judge(
    ctx: &RoundContext,
    combined: Combined,
    mut tally: Tally,
    clock: Clock,
    deadline: Instant,
) -> RoundOutcome {
    let round = ctx.round;
    let version = ctx.version;
    let alive: Vec<SiloHandle> = ctx
        .cohort
        .iter()
        .chain(&ctx.holdout)
        .filter(|s| ctx.directory.identity_of(s.node_id).is_some())
        .cloned()
        .collect();
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(5));
    let candidate = Candidate {
        round,
        model: ModelRef {
            version,
            digest: combined.digest,
        },
        params: Arc::new(combined.params),
        spec: ctx.spec.clone(),
        scaling: ctx.scaling.clone(),
        personalize: ctx.personalize,
        lora: ctx.lora.clone(),
        business: ctx.policy.business.as_ref().map(Into::into),
    };
    let validation = match ask_within(
        &ctx.validator,
        "validator",
        left + Duration::from_secs(10),
        |reply| ValidatorMessage::Validate {
            candidate: candidate.clone(),
            silos: alive,
            bulk: ctx.bulk.clone(),
            chunk: ctx.chunk,
            timeout: left,
            silent: ctx.unhealthy.clone(),
            reply,
        },
    )
    .await
    {
        Ok(v) => v,
        Err(e) => {
            return RoundOutcome::Rejected {
                round,
                reason: e.to_string(),
                attendance: tally.attendance(),
            }
        }
    };
    // The policy's comparison with the current version, on the silos that scored both.
    let gate = match (&ctx.policy.validation, validation.accept) {
        (Some(rules), true) => {
            let scores = |m: &BTreeMap<String, EvalMetrics>| {
                m.iter()
                    .map(|(s, e)| (s.clone(), (e.examples, e.score())))
                    .collect::<BTreeMap<_, _>>()
            };
            let name = crate::model::eval::score_name(validation.per_silo.values());
            rules.gate_scores(&scores(&validation.per_silo), &scores(&ctx.baseline), name)
        }
        _ => fedsilo_policies::Verdict {
            allow: validation.accept,
            reasons: vec![validation.reason.clone()],
        },
    };
    // The policy's rule on capture, on the silos that reported it for both versions.
    let gate = match (&ctx.policy.business, gate.allow) {
        (Some(rules), true) => {
            let capture = |m: &BTreeMap<String, EvalMetrics>| {
                m.iter()
                    .map(|(s, e)| (s.clone(), e.business.as_ref().and_then(|b| b.capture())))
                    .collect::<BTreeMap<_, _>>()
            };
            let business =
                rules.gate_capture(&capture(&validation.per_silo), &capture(&ctx.baseline));
            if business.allow {
                gate
            } else {
                business
            }
        }
        _ => gate,
    };
    let gate_reason = gate.reasons.join("; ");
    if let Err(e) = ctx.journal.record(Record::Validated {
        round,
        version,
        passed: gate.allow,
        reason: gate_reason.clone(),
        figures: validation.per_silo.clone(),
    }) {
        return tally.abandoned(ctx, e.to_string());
    }
    let summary = summary(
        ctx,
        &combined.kernel,
        &mut tally,
        &clock,
        (validation.per_silo, validation.weighted_loss),
        (combined.selected, combined.clipped, combined.digest.hex()),
    );
    let params = Arc::try_unwrap(candidate.params).unwrap_or_else(|a| (*a).clone());
    RoundOutcome::Candidate {
        params,
        summary: Box::new(summary),
        optimizer: combined.optimizer,
        failed_gate: (!gate.allow).then_some(gate_reason),
    }
}

/// The round's summary: who took part and who did not, losses, times, bytes, figures.
fn summary(
    ctx: &RoundContext,
    kernel: &str,
    tally: &mut Tally,
    clock: &Clock,
    (eval, eval_loss): (BTreeMap<String, EvalMetrics>, f64),
    (selected, clipped, digest): (Option<Vec<String>>, Vec<(String, f64)>, String),
) -> RoundSummary {
    let admitted = &tally.admitted;
    let wall = clock.started.elapsed().as_secs_f64();
    let n: f64 = admitted.iter().map(|(_, r)| r.examples as f64).sum();
    let mean_train_loss = admitted
        .iter()
        .map(|(_, r)| r.train_loss * r.examples as f64)
        .sum::<f64>()
        / n.max(1.0);
    let slowest = admitted
        .iter()
        .map(|(_, r)| r.train_seconds)
        .fold(0.0, f64::max);
    let since = |before: &BTreeMap<String, u64>, f: Way| {
        ctx.cohort
            .iter()
            .filter(|s| ctx.directory.counters_of(s.node_id).is_some())
            .map(|s| {
                let before = before.get(&s.name).copied().unwrap_or(0);
                (s.name.clone(), counted(ctx, s, f).saturating_sub(before))
            })
            .collect()
    };
    let bytes_from_silos = since(&clock.sent_before, |c| c.received());
    let bytes_to_silos = since(&clock.to_before, |c| c.sent());
    let now = Instant::now();
    let between = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let phases = Phases {
        open: between(Some(clock.started), clock.collecting),
        dispatch: tally.slowest_dispatch,
        train: slowest,
        fetch: tally.slowest_fetch,
        collect: between(clock.collecting, clock.collected),
        aggregate: between(clock.collected, clock.combined),
        validate: between(clock.combined, Some(now)),
        commit: 0.0,
    };
    // Under secure aggregation silos report no norm.
    let update_norms = admitted
        .iter()
        .filter(|_| ctx.policy.secure_aggregation.is_none())
        .map(|(s, r)| (s.clone(), r.update_norm))
        .collect();
    let examples = admitted
        .iter()
        .map(|(s, r)| (s.clone(), r.examples))
        .collect();
    let mut participants: Vec<String> = admitted.iter().map(|(s, _)| s.clone()).collect();
    participants.sort();
    tally.missing.sort();
    RoundSummary {
        round: ctx.round,
        version: ctx.version,
        digest,
        participants,
        missing: tally.missing.clone(),
        mean_train_loss,
        eval,
        eval_loss,
        wall_seconds: wall,
        slowest_train_seconds: slowest,
        overhead_seconds: (wall - slowest).max(0.0),
        bytes_from_silos,
        bytes_to_silos,
        phases,
        period_seconds: None,
        update_bytes: ctx.base.params.len() as u64 * 4,
        aggregation: kernel.to_string(),
        policy_digest: ctx.policy.digest.clone(),
        refused: tally.refused.clone(),
        selected,
        clipped,
        update_norms,
        examples,
        privacy: ctx.privacy_spend.clone(),
        run: ctx.run,
    }
}
