//! # One federated round, end to end
//!
//! [`run_round`] is the procedure the Coordinator runs for each round, off its mailbox so that
//! heartbeats keep flowing (DESIGN §3):
//!
//! 1. dispatch — the base model goes to every cohort silo in chunks, then `Train`;
//! 2. collect — reports come in as silos finish; each update is fetched in chunks, checked
//!    (length, digest, finite values) and folded into the Aggregator at once;
//! 3. collection ends when every silo has answered, at quorum + grace, at the deadline, or as
//!    soon as quorum can no longer be reached (a silo leaving is noticed immediately through
//!    the peer directory). Below quorum the round is abandoned — never half-committed;
//! 4. aggregate — the weighted mean becomes the pseudo-update; candidate = base + mean;
//! 5. validate — the Validator has the silos score the candidate on their held-out splits.
//!
//! Under `[secure_aggregation]` the cohort first exchanges keys and escrows its secrets
//! ([`crate::secagg::exchange`]); after collection the masked updates are fetched and summed,
//! and the survivors' revealed shares unmask the mean, which step 4 uses as the aggregate.
//!
//! Committing (checkpoint, log, new version) is left to the Coordinator, the only actor that
//! advances the version.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo_policies::admission::Expected;
use fedsilo_policies::participation::quorum_still_possible;
use fedsilo_policies::Policy;
use ractor::ActorRef;
use ractor_cluster::NodeId;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::actors::aggregator::{Aggregate, AggregatorMessage, Refusal};
use crate::actors::policy::PolicyMessage;
use crate::actors::validator::{Candidate, ValidatorMessage};
use crate::actors::{ask, ask_within};
use crate::audit::{Journal, Record};
use crate::cluster::{PeerDirectory, PeerEvent};
use crate::events::{Event, EventLog, RoundSummary};
use crate::kernels::server_optimizer::OptimizerState;
use crate::kernels::{Aggregation, WeightedMean};
use crate::model::{Digest, ModelSpec};
use crate::privacy::budget::RoundSpend;
use crate::privacy::mechanism::central_std;
use crate::privacy::noise::{add_gaussian, secure_rng};
use crate::protocol::regional::{
    call_regional, RegionalMessage, RegionalRequest, RegionalResponse,
};
use crate::protocol::transfer::{ensure_model, fetch_update, put_model};
use crate::protocol::{
    call, EvalMetrics, LoraTrain, ModelRef, Personalize, Request, Response, Scaling, TrainPlan,
    TrainReport, TrainerMessage,
};
use crate::secagg::exchange;
use crate::Error;

/// A silo in a cohort: its certificate name, session and trainer actor.
#[derive(Debug, Clone)]
pub struct SiloHandle {
    /// Name from its verified certificate.
    pub name: String,
    /// ractor_cluster node id of its session.
    pub node_id: NodeId,
    /// Its trainer actor (remote).
    pub actor: ActorRef<TrainerMessage>,
}

/// A regional aggregator node: its certificate name and region, and its actor (remote).
#[derive(Debug, Clone)]
pub struct RegionalHandle {
    /// Name from its verified certificate.
    pub name: String,
    /// Region from its verified certificate.
    pub region: String,
    /// Its regional aggregator actor.
    pub actor: ActorRef<RegionalMessage>,
}

/// The committed model the round starts from.
#[derive(Debug, Clone)]
pub struct BaseModel {
    /// Version.
    pub version: u64,
    /// Parameters.
    pub params: Arc<Vec<f32>>,
    /// Their digest.
    pub digest: Digest,
}

/// Everything a round needs.
#[derive(Debug, Clone)]
pub struct RoundContext {
    /// Round number.
    pub round: u64,
    /// Training rows each silo reported at its schema check: an update may claim no more
    /// examples (its weight) than that.
    pub reported_rows: BTreeMap<String, u64>,
    /// Base model.
    pub base: BaseModel,
    /// Architecture.
    pub spec: ModelSpec,
    /// Local training plan.
    pub plan: TrainPlan,
    /// Personalisation the silos apply when they score the candidate.
    pub personalize: Option<Personalize>,
    /// LoRA: `base` holds the adapters; this is the frozen base under them (sent to a silo
    /// only if it does not hold it).
    pub lora: Option<(LoraTrain, Arc<Vec<f32>>)>,
    /// Agreed scaling.
    pub scaling: Scaling,
    /// The cohort.
    pub cohort: Vec<SiloHandle>,
    /// Silos left out by selection, with reasons (for the summary).
    pub excluded: Vec<(String, String)>,
    /// Policy in force (timings); verdicts come from the actor.
    pub policy: Policy,
    /// The Policy actor.
    pub policy_actor: ActorRef<PolicyMessage>,
    /// The Aggregator actor.
    pub aggregator: ActorRef<AggregatorMessage>,
    /// The Validator actor.
    pub validator: ActorRef<ValidatorMessage>,
    /// Peer directory (departures, byte counters).
    pub directory: Arc<PeerDirectory>,
    /// Transfer chunk, values.
    pub chunk: usize,
    /// Event sink.
    pub events: Arc<EventLog>,
    /// How updates are combined (kernel, clipping, server optimiser).
    pub aggregation: Aggregation,
    /// The server optimiser's state before this round (when one is configured).
    pub optimizer: Option<OptimizerState>,
    /// Residency: the regional aggregator each routed silo's update goes to (empty: the
    /// coordinator aggregates every update itself).
    pub routes: BTreeMap<String, RegionalHandle>,
    /// The silo-level DP spend charged for this round before dispatch (when the policy has
    /// `[privacy]`), recorded with the version.
    pub privacy_spend: Option<RoundSpend>,
    /// The audit journal.
    pub journal: Arc<Journal>,
    /// The version number the candidate will have.
    pub version: u64,
    /// The central hold-out node, if the policy names one and it is connected: it scores the
    /// candidate with the cohort.
    pub holdout: Option<SiloHandle>,
    /// The current version's held-out figures, which the validation gate compares with.
    pub baseline: BTreeMap<String, EvalMetrics>,
    /// Names of silos the coordinator's heartbeats currently find silent. A cohort member that
    /// turns up here is dropped from the round at once (a frozen peer never closes its session).
    pub unhealthy: watch::Receiver<BTreeSet<String>>,
}

/// Cohort members that did not contribute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attendance {
    /// Every silo whose update was not aggregated, with the reason (late, lost, refused...).
    /// Silos merely not collected because the round could no longer reach quorum are listed
    /// here but are not to blame: see [`Attendance::failed`].
    pub missing: Vec<(String, String)>,
    /// The subset refused by an admission rule (these count towards quarantine).
    pub refused: Vec<(String, String)>,
}

/// The reason given to silos not collected because quorum became impossible.
pub const NOT_COLLECTED: &str = "not collected: the round could no longer reach quorum";

impl Attendance {
    /// The round's attendance so far.
    pub fn of(missing: &[(String, String)], refused: &[(String, String)]) -> Self {
        Attendance {
            missing: missing.to_vec(),
            refused: refused.to_vec(),
        }
    }

    /// Silos that failed the round themselves (refused, late, lost): these start a cool-down.
    pub fn failed(&self) -> impl Iterator<Item = &str> {
        self.missing
            .iter()
            .filter(|(_, why)| why != NOT_COLLECTED)
            .map(|(s, _)| s.as_str())
    }
}

/// How a round ended.
#[derive(Debug)]
pub enum RoundOutcome {
    /// A scored candidate: ready to commit, or (`failed_gate`) to keep as rejected.
    Candidate {
        /// Its parameters.
        params: Vec<f32>,
        /// The summary (version, digest and validation figures filled in).
        summary: Box<RoundSummary>,
        /// The server optimiser's state after this round, to adopt if committed.
        optimizer: Option<OptimizerState>,
        /// Why the candidate failed the validation gate: it is kept as a rejected version and
        /// the current version stays.
        failed_gate: Option<String>,
    },
    /// The candidate failed validation.
    Rejected {
        /// Round number.
        round: u64,
        /// Why.
        reason: String,
        /// Who failed the round, and who was refused by admission rules.
        attendance: Attendance,
    },
    /// No candidate.
    Abandoned {
        /// Round number.
        round: u64,
        /// Why.
        reason: String,
        /// Who failed the round, and who was refused by admission rules.
        attendance: Attendance,
    },
}

async fn train_at(
    silo: SiloHandle,
    base: BaseModel,
    lora: Option<(LoraTrain, Arc<Vec<f32>>)>,
    req: Request,
    chunk: usize,
    deadline: Instant,
) -> Result<TrainReport, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if let Some((l, frozen)) = &lora {
        ensure_model(&silo.actor, l.frozen, frozen, chunk, left, &silo.name).await?;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let model = ModelRef {
        version: base.version,
        digest: base.digest,
    };
    put_model(&silo.actor, model, &base.params, chunk, left, &silo.name).await?;
    let left = deadline.saturating_duration_since(Instant::now());
    match call(&silo.actor, &req, left, &silo.name).await? {
        Response::Trained(r) => Ok(r),
        other => Err(Error::Protocol {
            peer: silo.name.clone(),
            message: format!("expected Trained, got {}", other.kind()),
        }),
    }
}

/// Resolves once `name` is in the set of silos whose heartbeats have stopped (never, if the
/// sender is gone).
pub async fn until_silent(mut silent: watch::Receiver<BTreeSet<String>>, name: &str) {
    loop {
        if silent.borrow_and_update().contains(name) {
            return;
        }
        if silent.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Fetches and checks one silo's update, then folds it into the aggregator.
async fn admit(
    ctx: &RoundContext,
    silo: &SiloHandle,
    report: &TrainReport,
    deadline: Instant,
) -> Result<(), Refusal> {
    let len = ctx.base.params.len();
    let refuse = |reason: String| {
        Err(Refusal {
            reason,
            by_policy: true,
        })
    };
    let transport = |reason: String| Refusal {
        reason,
        by_policy: false,
    };
    // Checks the report allows before fetching anything; the aggregator re-checks the values.
    if report.round != ctx.round {
        return refuse(format!(
            "stale: update for round {}, this is round {}",
            report.round, ctx.round
        ));
    }
    if report.update_len != len as u64 {
        return refuse(format!(
            "wrong shape: {} values, the model has {len}",
            report.update_len
        ));
    }
    if report.examples == 0 {
        return refuse("trained on 0 examples".into());
    }
    if let Some(rows) = ctx.reported_rows.get(&silo.name) {
        if report.examples > *rows {
            return refuse(format!(
                "claims {} examples, but reported {rows} training rows at its schema check",
                report.examples
            ));
        }
    }
    if ctx.policy.secure_aggregation.is_some() {
        // Masked updates are fetched together once collection closes, each weighed against
        // the largest weight admitted.
        return Ok(());
    }
    if let Some(agg) = ctx.routes.get(&silo.name) {
        // Residency: the regional aggregator fetches the update over its own session with the
        // silo; it never passes through this node.
        let left = deadline.saturating_duration_since(Instant::now());
        let req = RegionalRequest::Collect {
            round: ctx.round,
            silo: silo.name.clone(),
            report: report.clone(),
            timeout_ms: left.as_millis() as u64,
        };
        return match call_regional(&agg.actor, &req, left + Duration::from_secs(5), &agg.name).await
        {
            Ok(RegionalResponse::Collected) => Ok(()),
            Ok(RegionalResponse::Refused { reason }) => {
                refuse(format!("refused by aggregator {}: {reason}", agg.name))
            }
            Ok(other) => Err(transport(format!(
                "aggregator {} answered {other:?}",
                agg.name
            ))),
            Err(e) => Err(transport(e.to_string())),
        };
    }
    let left = deadline.saturating_duration_since(Instant::now());
    // Only the fetch races the heartbeat watch: once the fold is sent it must complete, or
    // the aggregate would hold an update the summary does not count.
    let update = tokio::select! {
        r = tokio::time::timeout_at(deadline.into(), fetch_update(&silo.actor, ctx.round, len, ctx.chunk, left, &silo.name)) => {
            match r {
                Ok(r) => r.map_err(|e| transport(format!("fetching the update failed: {e}")))?,
                Err(_) => return Err(transport("its update could not be fetched before the round deadline".into())),
            }
        }
        _ = until_silent(ctx.unhealthy.clone(), &silo.name) => {
            return Err(transport("stopped answering heartbeats while its update was fetched".to_string()))
        }
    };
    if Digest::of_f32(&update) != report.update_digest {
        return refuse("update does not match the digest the silo reported".into());
    }
    ask(&ctx.aggregator, "aggregator", |reply| {
        AggregatorMessage::Fold {
            round: ctx.round,
            silo: silo.name.clone(),
            update,
            weight: report.examples as f64,
            claimed: (report.round, report.base.version, report.base.digest.hex()),
            reply,
        }
    })
    .await
    .map_err(|e| transport(e.to_string()))?
}

/// Opens the round at every regional aggregator the cohort is routed to; returns the
/// aggregators that failed to open (their silos' updates will be refused).
async fn begin_regional(ctx: &RoundContext) -> Vec<String> {
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
/// may not cross (or could not be fetched) move from `admitted` to `missing`.
async fn regional_parts(
    ctx: &RoundContext,
    admitted: &mut Vec<(String, TrainReport)>,
    missing: &mut Vec<(String, String)>,
) -> Vec<(Vec<f32>, f64)> {
    let examples: BTreeMap<String, f64> = admitted
        .iter()
        .map(|(s, r)| (s.clone(), ctx.policy.update_weight(r.examples as f64)))
        .collect();
    let admitted_examples =
        |names: &[String]| names.iter().filter_map(|n| examples.get(n)).sum::<f64>();
    let mut by_agg: BTreeMap<String, (RegionalHandle, Vec<String>)> = BTreeMap::new();
    for (silo, _) in admitted.iter() {
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
                admitted.retain(|(s, _)| !silos.contains(s));
                for s in silos {
                    ctx.events.emit(Event::UpdateRefused {
                        round: ctx.round,
                        silo: s.clone(),
                        reason: reason.clone(),
                    });
                    missing.push((s, reason.clone()));
                }
            }
        }
    }
    parts
}

/// Runs one round (see the module documentation). Never hangs: every wait is bounded by the
/// round deadline.
pub async fn run_round(ctx: RoundContext) -> RoundOutcome {
    let started = Instant::now();
    let round = ctx.round;
    let deadline = started + ctx.policy.rounds.deadline();
    let grace = ctx.policy.rounds.grace();
    let names: Vec<String> = ctx.cohort.iter().map(|s| s.name.clone()).collect();
    // The coordinator recorded the round's start (journal, synced) before spawning this task.
    let sent_before: BTreeMap<String, u64> = ctx
        .cohort
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                ctx.directory
                    .counters_of(s.node_id)
                    .map(|c| c.received())
                    .unwrap_or(0),
            )
        })
        .collect();
    // Under secure aggregation the Aggregator never sees an update: the sum is made here.
    if ctx.policy.secure_aggregation.is_none() {
        let _ = ctx.aggregator.cast(AggregatorMessage::Begin {
            round,
            len: ctx.base.params.len(),
            aggregation: ctx.aggregation.clone(),
            policy: Box::new(ctx.policy.clone()),
            expected: Expected {
                round,
                base_version: ctx.base.version,
                base_digest: ctx.base.digest.hex(),
                len: ctx.base.params.len(),
            },
        });
    }
    let regional_failures = begin_regional(&ctx).await;
    let mut missing: Vec<(String, String)> = Vec::new();
    // Secure aggregation: keys and escrowed secrets go round before anyone trains; only the
    // silos that took their shares are dispatched.
    let (mut secure, dispatch) = match &ctx.policy.secure_aggregation {
        None => (None, ctx.cohort.clone()),
        Some(rules) => match exchange::open(&ctx, rules, deadline).await {
            Ok((session, ready, lost)) => {
                for (silo, reason) in lost {
                    ctx.events.emit(Event::UpdateRefused {
                        round,
                        silo: silo.clone(),
                        reason: reason.clone(),
                    });
                    missing.push((silo, reason));
                }
                (Some(session), ready)
            }
            Err((reason, lost)) => {
                for (silo, why) in &lost {
                    ctx.events.emit(Event::UpdateRefused {
                        round,
                        silo: silo.clone(),
                        reason: why.clone(),
                    });
                }
                missing.extend(lost);
                return RoundOutcome::Abandoned {
                    round,
                    reason,
                    attendance: Attendance::of(&missing, &[]),
                };
            }
        },
    };
    let kernel = match &secure {
        Some(s) => format!(
            "{} under secure aggregation (t = {})",
            ctx.aggregation.describe(),
            s.threshold()
        ),
        None => ctx.aggregation.describe(),
    };

    let mut departures = ctx.directory.subscribe();
    let (tx, mut rx) = mpsc::channel(ctx.cohort.len().max(1));
    let mut jobs = JoinSet::new();
    for silo in &dispatch {
        let req = Request::Train {
            round,
            base: ModelRef {
                version: ctx.base.version,
                digest: ctx.base.digest,
            },
            spec: ctx.spec.clone(),
            plan: ctx.plan.clone(),
            scaling: ctx.scaling.clone(),
        };
        let (silo, base, tx, chunk) = (silo.clone(), ctx.base.clone(), tx.clone(), ctx.chunk);
        let lora = ctx.lora.clone();
        let (silent, directory) = (ctx.unhealthy.clone(), ctx.directory.clone());
        jobs.spawn(async move {
            let r = tokio::select! {
                r = train_at(silo.clone(), base, lora, req, chunk, deadline) => r.map_err(|e| {
                    let gone = matches!(e, Error::PeerGone { .. }) || directory.identity_of(silo.node_id).is_none();
                    if gone {
                        format!("left the federation mid-round ({e})")
                    } else {
                        e.to_string()
                    }
                }),
                _ = until_silent(silent, &silo.name) => Err("stopped answering heartbeats mid-round".to_string()),
            };
            let _ = tx.send((silo, r)).await;
        });
    }
    drop(tx);

    let mut pending: HashSet<String> = dispatch.iter().map(|s| s.name.clone()).collect();
    let mut admitted: Vec<(String, TrainReport)> = Vec::new();
    let mut refused: Vec<(String, String)> = Vec::new();
    let mut grace_until: Option<Instant> = None;
    let by_node: BTreeMap<NodeId, String> = ctx
        .cohort
        .iter()
        .map(|s| (s.node_id, s.name.clone()))
        .collect();
    let quorum = ctx.policy.participation.quorum;

    while !pending.is_empty() {
        if !quorum_still_possible(&ctx.policy, admitted.len(), pending.len()) {
            break;
        }
        let until = grace_until.map_or(deadline, |g| g.min(deadline));
        tokio::select! {
            got = rx.recv() => {
                let Some((silo, result)) = got else { break };
                if !pending.remove(&silo.name) {
                    continue;
                }
                let unopened = ctx.routes.get(&silo.name).filter(|a| regional_failures.contains(&a.name));
                let outcome = match (result, unopened) {
                    (Ok(_), Some(agg)) => Err(Refusal { reason: format!("aggregator {} could not open the round", agg.name), by_policy: false }),
                    (Ok(report), None) => admit(&ctx, &silo, &report, deadline).await.map(|_| report),
                    (Err(reason), _) => Err(Refusal { reason, by_policy: false }),
                };
                match outcome {
                    Ok(report) => {
                        admitted.push((silo.name.clone(), report));
                        if admitted.len() >= quorum && grace_until.is_none() {
                            grace_until = Some(Instant::now() + grace);
                        }
                    }
                    Err(Refusal { reason, by_policy }) => {
                        ctx.events.emit(Event::UpdateRefused { round, silo: silo.name.clone(), reason: reason.clone() });
                        if by_policy {
                            refused.push((silo.name.clone(), reason.clone()));
                        }
                        missing.push((silo.name.clone(), reason));
                    }
                }
            }
            ev = departures.recv() => {
                match ev {
                    Ok(PeerEvent::Disconnected { node_id, .. }) => {
                        if let Some(name) = by_node.get(&node_id) {
                            if pending.remove(name) {
                                let reason = "left the federation mid-round (session closed)".to_string();
                                ctx.events.emit(Event::UpdateRefused { round, silo: name.clone(), reason: reason.clone() });
                                missing.push((name.clone(), reason));
                            }
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => {}
                }
            }
            _ = tokio::time::sleep_until(until.into()) => {
                let why = if Instant::now() >= deadline {
                    format!("no update before the round deadline ({}s)", ctx.policy.rounds.deadline_secs)
                } else {
                    format!("late: quorum was reached and the {}s grace period ended", ctx.policy.rounds.grace_secs)
                };
                for p in pending.drain() {
                    ctx.events.emit(Event::UpdateRefused { round, silo: p.clone(), reason: why.clone() });
                    missing.push((p, why.clone()));
                }
            }
        }
    }
    for p in pending.drain() {
        ctx.events.emit(Event::UpdateRefused {
            round,
            silo: p.clone(),
            reason: NOT_COLLECTED.into(),
        });
        missing.push((p, NOT_COLLECTED.into()));
    }
    jobs.abort_all();
    // Rules relative to the cohort judge it whole, now that collection has ended: the same
    // verdicts whatever order the updates arrived in.
    if secure.is_none() && admitted.iter().any(|(s, _)| !ctx.routes.contains_key(s)) {
        match ask(&ctx.aggregator, "aggregator", |reply| {
            AggregatorMessage::Screen { round, reply }
        })
        .await
        {
            Ok(screened) => {
                for (silo, reason) in screened {
                    admitted.retain(|(s, _)| *s != silo);
                    ctx.events.emit(Event::UpdateRefused {
                        round,
                        silo: silo.clone(),
                        reason: reason.clone(),
                    });
                    refused.push((silo.clone(), reason.clone()));
                    missing.push((silo, reason));
                }
            }
            Err(e) => {
                let _ = ctx.aggregator.cast(AggregatorMessage::Abort { round });
                return RoundOutcome::Abandoned {
                    round,
                    reason: format!("screening the cohort failed: {e}"),
                    attendance: Attendance::of(&missing, &refused),
                };
            }
        }
    }
    // Regional aggregates: only those combining enough silos cross to this node.
    let regional = regional_parts(&ctx, &mut admitted, &mut missing).await;
    // Fetching the masked updates, and then unmasking, each get at least half a minute, even
    // when collection ran to the deadline: the silos' work is done, only the sum is left.
    let tail = || deadline.max(Instant::now() + Duration::from_secs(30));
    if let Some(session) = secure.as_mut() {
        for (silo, reason) in session.collect(&ctx, &admitted, tail()).await {
            admitted.retain(|(s, _)| *s != silo);
            ctx.events.emit(Event::UpdateRefused {
                round,
                silo: silo.clone(),
                reason: reason.clone(),
            });
            missing.push((silo, reason));
        }
    }
    let mut audit: Result<(), String> = Ok(());
    let mut note = |r: Record| {
        if audit.is_ok() {
            audit = ctx.journal.record(r).map(|_| ()).map_err(|e| e.to_string());
        }
    };
    for (silo, report) in &admitted {
        note(Record::UpdateAdmitted {
            round,
            silo: silo.clone(),
            digest: report.update_digest.hex(),
            norm: report.update_norm,
            examples: report.examples,
        });
    }
    for (silo, reason) in &missing {
        note(Record::UpdateRefused {
            round,
            silo: silo.clone(),
            reason: reason.clone(),
        });
    }

    let verdict = match ask(&ctx.policy_actor, "policy", |reply| PolicyMessage::Quorum {
        round,
        received: admitted.len(),
        selected: names.len(),
        reply,
    })
    .await
    {
        Ok(v) => v,
        Err(e) => {
            let _ = ctx.aggregator.cast(AggregatorMessage::Abort { round });
            return RoundOutcome::Abandoned {
                round,
                reason: e.to_string(),
                attendance: Attendance::of(&missing, &refused),
            };
        }
    };
    if !verdict.allow {
        let _ = ctx.aggregator.cast(AggregatorMessage::Abort { round });
        let mut reason = verdict.reasons.join("; ");
        if !missing.is_empty() {
            let detail: Vec<String> = missing.iter().map(|(s, w)| format!("{s}: {w}")).collect();
            reason.push_str(&format!(" ({})", detail.join("; ")));
        }
        return RoundOutcome::Abandoned {
            round,
            reason,
            attendance: Attendance::of(&missing, &refused),
        };
    }
    let local_weight: f64 = admitted
        .iter()
        .filter(|(s, _)| !ctx.routes.contains_key(s))
        .map(|(_, r)| ctx.policy.update_weight(r.examples as f64))
        .sum();
    let mut aggregate = if let Some(session) = secure.take() {
        match session.unmask(&ctx, tail()).await {
            Ok(values) => Aggregate {
                values,
                selected: None,
                clipped: Vec::new(),
            },
            Err(reason) => {
                return RoundOutcome::Abandoned {
                    round,
                    reason,
                    attendance: Attendance::of(&missing, &refused),
                }
            }
        }
    } else if local_weight > 0.0 {
        match ask(&ctx.aggregator, "aggregator", |reply| {
            AggregatorMessage::Finish { round, reply }
        })
        .await
        {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                return RoundOutcome::Abandoned {
                    round,
                    reason: format!("aggregation failed: {e}"),
                    attendance: Attendance::of(&missing, &refused),
                };
            }
            Err(e) => {
                return RoundOutcome::Abandoned {
                    round,
                    reason: e.to_string(),
                    attendance: Attendance::of(&missing, &refused),
                }
            }
        }
    } else {
        let _ = ctx.aggregator.cast(AggregatorMessage::Abort { round });
        Aggregate {
            values: Vec::new(),
            selected: None,
            clipped: Vec::new(),
        }
    };
    if !regional.is_empty() {
        // Across regions: the regional aggregates, weighted by the examples behind each (with
        // the weighted mean everywhere this equals FedAvg over all admitted silos).
        let mut acc = WeightedMean::new(ctx.base.params.len());
        let parts = regional.iter().map(|(v, w)| (v.as_slice(), *w));
        let local = (local_weight > 0.0).then_some((aggregate.values.as_slice(), local_weight));
        for (v, w) in parts.chain(local) {
            if let Err(e) = acc.fold(v, w) {
                return RoundOutcome::Abandoned {
                    round,
                    reason: format!("combining regional aggregates failed: {e}"),
                    attendance: Attendance::of(&missing, &refused),
                };
            }
        }
        aggregate.values = acc.finish().unwrap_or_default();
    }
    // Central silo-level DP: N(0, z²C²) on the sum of the m clipped updates, i.e.
    // N(0, (zC/m)²) on their mean. Distributed mode: the silos added theirs.
    if let Some(std) = ctx
        .policy
        .privacy
        .as_ref()
        .and_then(|dp| central_std(dp, admitted.len()))
    {
        add_gaussian(&mut aggregate.values, std, &mut secure_rng());
    }
    let (params, optimizer): (Vec<f32>, Option<OptimizerState>) =
        match (&ctx.aggregation.server_optimizer, &ctx.optimizer) {
            (Some(o), Some(st)) => {
                let (p, st) = o.step(&ctx.base.params, &aggregate.values, st);
                (p, Some(st))
            }
            _ => (
                ctx.base
                    .params
                    .iter()
                    .zip(&aggregate.values)
                    .map(|(b, u)| b + u)
                    .collect(),
                None,
            ),
        };
    let digest = Digest::of_f32(&params);
    let version = ctx.version;
    note(Record::Aggregated {
        round,
        kernel: kernel.clone(),
        inputs: admitted
            .iter()
            .map(|(s, r)| (s.clone(), r.update_digest.hex()))
            .collect(),
        candidate: digest.hex(),
    });
    if let Err(e) = audit {
        return RoundOutcome::Abandoned {
            round,
            reason: e,
            attendance: Attendance::of(&missing, &refused),
        };
    }

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
        model: ModelRef { version, digest },
        params: Arc::new(params),
        spec: ctx.spec.clone(),
        scaling: ctx.scaling.clone(),
        personalize: ctx.personalize,
        lora: ctx.lora.clone(),
    };
    let validation = match ask_within(
        &ctx.validator,
        "validator",
        left + Duration::from_secs(10),
        |reply| ValidatorMessage::Validate {
            candidate: candidate.clone(),
            silos: alive,
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
                attendance: Attendance::of(&missing, &refused),
            }
        }
    };
    // The policy's comparison with the current version, on the silos that scored both.
    let gate = match (&ctx.policy.validation, validation.accept) {
        (Some(rules), true) => {
            let scores = |m: &BTreeMap<String, EvalMetrics>| {
                m.iter()
                    .map(|(s, e)| (s.clone(), (e.examples, e.auc)))
                    .collect::<BTreeMap<_, _>>()
            };
            rules.gate(&scores(&validation.per_silo), &scores(&ctx.baseline))
        }
        _ => fedsilo_policies::Verdict {
            allow: validation.accept,
            reasons: vec![validation.reason.clone()],
        },
    };
    let gate_reason = gate.reasons.join("; ");
    if let Err(e) = ctx.journal.record(Record::Validated {
        round,
        version,
        passed: gate.allow,
        reason: gate_reason.clone(),
        figures: validation.per_silo.clone(),
    }) {
        return RoundOutcome::Abandoned {
            round,
            reason: e.to_string(),
            attendance: Attendance::of(&missing, &refused),
        };
    }
    let wall = started.elapsed().as_secs_f64();
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
    let bytes_from_silos = ctx
        .cohort
        .iter()
        .filter_map(|s| {
            let now = ctx.directory.counters_of(s.node_id)?.received();
            Some((
                s.name.clone(),
                now.saturating_sub(*sent_before.get(&s.name).unwrap_or(&0)),
            ))
        })
        .collect();
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
    missing.sort();
    let summary = RoundSummary {
        round,
        version,
        digest: digest.hex(),
        participants,
        missing,
        mean_train_loss,
        eval: validation.per_silo,
        eval_loss: validation.weighted_loss,
        wall_seconds: wall,
        slowest_train_seconds: slowest,
        overhead_seconds: (wall - slowest).max(0.0),
        bytes_from_silos,
        update_bytes: ctx.base.params.len() as u64 * 4,
        aggregation: kernel,
        policy_digest: ctx.policy.digest.clone(),
        refused: refused.clone(),
        selected: aggregate.selected,
        clipped: aggregate.clipped,
        update_norms,
        examples,
        privacy: ctx.privacy_spend.clone(),
    };
    let params = Arc::try_unwrap(candidate.params).unwrap_or_else(|a| (*a).clone());
    RoundOutcome::Candidate {
        params,
        summary: Box::new(summary),
        optimizer,
        failed_gate: (!gate.allow).then_some(gate_reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silos_merely_not_collected_are_not_blamed() {
        let a = Attendance {
            missing: vec![
                (
                    "a".into(),
                    "left the federation mid-round (session closed)".into(),
                ),
                ("b".into(), NOT_COLLECTED.into()),
                (
                    "c".into(),
                    "stale: update for round 2, this is round 3".into(),
                ),
            ],
            refused: vec![("c".into(), "stale".into())],
        };
        assert_eq!(a.failed().collect::<Vec<_>>(), vec!["a", "c"]);
    }
}
