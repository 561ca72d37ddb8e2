//! Collecting updates: the base model goes to every dispatched silo in chunks, then `Train`;
//! reports come in as silos finish, and each update is fetched, checked (round, shape, examples
//! against what the silo reported, digest) and folded into the Aggregator at once — or, under
//! residency, collected by the silo's regional aggregator, or under secure aggregation left
//! masked at the silo until collection closes.
//!
//! Collection ends when every silo has answered, at quorum + grace, at the deadline, or as
//! soon as quorum can no longer be reached (a silo leaving is noticed immediately through the
//! peer directory, a silent one through the heartbeat watch). Then the rules relative to the
//! cohort judge it whole ([`screen`]): the same verdicts whatever order the updates arrived in.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo_policies::participation::quorum_still_possible;
use ractor_cluster::NodeId;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::context::{BaseModel, RoundContext};
use super::outcome::{Attendance, RoundOutcome, NOT_COLLECTED};
use crate::actors::aggregator::{AggregatorMessage, Refusal};
use crate::actors::ask;
use crate::actors::update_values::{spills, Values};
use crate::bulk::route::{ensure_model, fetch_update, fetch_update_spilled, Route};
use crate::bulk::BulkLinks;
use crate::cluster::PeerEvent;
use crate::events::Event;
use crate::model::Digest;
use crate::protocol::regional::{call_regional, RegionalRequest, RegionalResponse};
use crate::protocol::transfer::unexpected;
use crate::protocol::{
    call, until_silent, LoraTrain, ModelRef, Request, Response, SiloFailure, SiloHandle,
    TrainReport,
};
use crate::Error;

/// The cohort's standing as the round goes: updates admitted, silos missing (with why), and
/// the subset refused by admission rules (these count towards quarantine).
#[derive(Debug, Default)]
pub struct Tally {
    /// Admitted updates, by silo, in the order they were admitted.
    pub admitted: Vec<(String, TrainReport)>,
    /// Every silo whose update is not aggregated, with the reason.
    pub missing: Vec<(String, String)>,
    /// Refused by an admission rule.
    pub refused: Vec<(String, String)>,
    /// The slowest base-model transfer to a silo, seconds (0 when every silo held the base).
    pub slowest_dispatch: f64,
    /// The slowest update fetch from a silo, seconds.
    pub slowest_fetch: f64,
}

impl Tally {
    /// `silo`'s update is not aggregated, for `reason` (`by_policy`: an admission rule's
    /// refusal); reported as an `update_refused` event. An admitted update is withdrawn.
    pub fn refuse(&mut self, ctx: &RoundContext, silo: String, reason: String, by_policy: bool) {
        self.admitted.retain(|(s, _)| *s != silo);
        ctx.events.emit(Event::UpdateRefused {
            round: ctx.round,
            silo: silo.clone(),
            reason: reason.clone(),
        });
        if by_policy {
            self.refused.push((silo.clone(), reason.clone()));
        }
        self.missing.push((silo, reason));
    }

    /// Who did not contribute so far.
    pub fn attendance(&self) -> Attendance {
        Attendance::of(&self.missing, &self.refused)
    }

    /// The round ends without a candidate, for `reason`.
    pub fn abandoned(&self, ctx: &RoundContext, reason: String) -> RoundOutcome {
        RoundOutcome::Abandoned {
            round: ctx.round,
            reason,
            attendance: self.attendance(),
        }
    }
}

/// What a silo's task fetches once it has trained: its update, when this node aggregates it
/// (no residency route, no secure aggregation) and the report passes the checks that need no
/// values ([`precheck`]; [`admit`] checks again).
#[derive(Debug, Clone)]
struct Prefetch {
    round: u64,
    len: usize,
    rows: Option<u64>,
    /// Where to spill the update instead of holding it (see `RoundContext::spill_above`).
    spill: Option<Arc<std::path::PathBuf>>,
}

/// The checks a report allows before its update is fetched (each an admission rule's refusal).
fn precheck(report: &TrainReport, round: u64, len: usize, rows: Option<u64>) -> Result<(), String> {
    if report.round != round {
        return Err(format!(
            "stale: update for round {}, this is round {round}",
            report.round
        ));
    }
    if report.update_len != len as u64 {
        return Err(format!(
            "wrong shape: {} values, the model has {len}",
            report.update_len
        ));
    }
    if report.examples == 0 {
        return Err("trained on 0 examples".into());
    }
    match rows {
        Some(rows) if report.examples > rows => Err(format!(
            "claims {} examples, but reported {rows} training rows at its schema check",
            report.examples
        )),
        _ => Ok(()),
    }
}

/// Updates fetched and not yet folded, at most: fetches from this many silos overlap, and the
/// coordinator holds at most this many updates besides the aggregate, whatever the cohort.
const FETCHES_AT_ONCE: usize = 4;

/// A silo's trained round as its task saw it: the report, the update if it was fetched (or
/// why the fetch failed), the seconds the base transfer and the fetch took, and the fetch's
/// place among the [`FETCHES_AT_ONCE`] (given back once the update is folded).
#[derive(Debug)]
struct Done {
    report: TrainReport,
    update: Option<Result<Fetched, String>>,
    dispatch: f64,
    fetch: f64,
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Trains one silo: the base if it does not hold it already (it keeps the candidate it
/// scored, which is the next round's base once committed), `Train`, then the update — each
/// silo in its own task, so that transfers to and from silos overlap.
async fn train_at(
    (silo, bulk): (SiloHandle, Arc<BulkLinks>),
    base: BaseModel,
    lora: Option<(LoraTrain, Arc<Vec<f32>>)>,
    req: Request,
    chunk: usize,
    deadline: Instant,
    prefetch: Option<(Prefetch, Arc<tokio::sync::Semaphore>)>,
) -> Result<Done, Error> {
    let started = Instant::now();
    let left = deadline.saturating_duration_since(Instant::now());
    let route = Route::to(&silo, &bulk);
    if let Some((l, frozen)) = &lora {
        ensure_model(&route, l.frozen, frozen, chunk, left).await?;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let model = ModelRef {
        version: base.version,
        digest: base.digest,
    };
    ensure_model(&route, model, &base.params, chunk, left).await?;
    let dispatch = started.elapsed().as_secs_f64();
    let left = deadline.saturating_duration_since(Instant::now());
    let report = match call(&silo.actor, &req, left, &silo.name).await? {
        Response::Trained(r) => r,
        other => return Err(unexpected(&silo.name, "Trained", &other)),
    };
    let mut slot = None;
    let mut fetching = Instant::now();
    let update = match prefetch {
        Some((p, slots)) if precheck(&report, p.round, p.len, p.rows).is_ok() => {
            slot = slots.acquire_owned().await.ok();
            fetching = Instant::now();
            let left = deadline.saturating_duration_since(Instant::now());
            // The route again: the link may have come up while the silo trained.
            let route = Route::to(&silo, &bulk);
            let fetch = async {
                match &p.spill {
                    Some(dir) => fetch_update_spilled(&route, p.round, p.len, chunk, left, dir)
                        .await
                        .map(|(s, d)| (Values::Spilled(s), Some(d))),
                    None => fetch_update(&route, p.round, p.len, chunk, left)
                        .await
                        .map(|(v, d)| (Values::Memory(v), d)),
                }
            };
            Some(
                match tokio::time::timeout_at(deadline.into(), fetch).await {
                    Ok(Ok(u)) => Ok(u),
                    Ok(Err(e)) => Err(format!("fetching the update failed: {e}")),
                    Err(_) => {
                        Err("its update could not be fetched before the round deadline".into())
                    }
                },
            )
        }
        _ => None,
    };
    Ok(Done {
        report,
        update,
        dispatch,
        fetch: fetching.elapsed().as_secs_f64(),
        _slot: slot,
    })
}

/// An update as fetched: its values, and their SHA-256 if the transfer computed it.
type Fetched = (Values, Option<Digest>);

/// A dispatched silo's training result: its report, or why there is none.
type Trained = (SiloHandle, Result<Done, SiloFailure>);

/// Sends the base model and `Train` to every silo of `dispatch`, each in its own task; the
/// results arrive on the returned channel.
fn dispatch(
    ctx: &RoundContext,
    dispatch: &[SiloHandle],
    deadline: Instant,
) -> (JoinSet<()>, mpsc::Receiver<Trained>) {
    let (tx, rx) = mpsc::channel(ctx.cohort.len().max(1));
    let mut jobs = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(FETCHES_AT_ONCE));
    let cosine = matches!(
        ctx.policy.admission.anomaly,
        Some(fedsilo_policies::Anomaly::Cosine { .. })
    );
    let bytes = ctx.base.params.len().saturating_mul(4);
    // A round whose updates together would take more than `spill_above` bytes spills each to
    // disk as it arrives, if its kernel and screen work a slice of coordinates at a time: the
    // coordinator then holds the base, the aggregate and a slice of each update, whatever
    // the number of silos.
    let spill = (spills(&ctx.aggregation.kernel, cosine)
        && bytes.saturating_mul(ctx.cohort.len()) > ctx.spill_above)
        .then(|| Arc::new(ctx.spill_dir.clone()));
    for silo in dispatch {
        let req = Request::Train {
            round: ctx.round,
            base: ModelRef {
                version: ctx.base.version,
                digest: ctx.base.digest,
            },
            spec: ctx.spec.clone(),
            plan: ctx.plan.clone(),
            scaling: ctx.scaling.clone(),
        };
        let (silo, base, tx, chunk) = (silo.clone(), ctx.base.clone(), tx.clone(), ctx.chunk);
        let bulk = ctx.bulk.clone();
        let lora = ctx.lora.clone();
        let (silent, directory) = (ctx.unhealthy.clone(), ctx.directory.clone());
        let prefetch = (ctx.policy.secure_aggregation.is_none()
            && !ctx.routes.contains_key(&silo.name))
        .then(|| {
            let p = Prefetch {
                round: ctx.round,
                len: ctx.base.params.len(),
                rows: ctx.reported_rows.get(&silo.name).copied(),
                spill: spill.clone(),
            };
            (p, slots.clone())
        });
        jobs.spawn(async move {
            let r = tokio::select! {
                r = train_at((silo.clone(), bulk), base, lora, req, chunk, deadline, prefetch) => r.map_err(|e| {
                    let gone = matches!(e, Error::PeerGone { .. }) || directory.identity_of(silo.node_id).is_none();
                    if gone {
                        SiloFailure::Left(e)
                    } else {
                        SiloFailure::Call(e)
                    }
                }),
                _ = until_silent(silent, &silo.name) => Err(SiloFailure::Silent(" mid-round")),
            };
            let _ = tx.send((silo, r)).await;
        });
    }
    (jobs, rx)
}

/// Dispatches `silos` and collects their updates into `tally` until collection ends (see the
/// module documentation). `unopened`: regional aggregators that could not open the round.
pub async fn collect(
    ctx: &RoundContext,
    silos: &[SiloHandle],
    unopened: &[String],
    tally: &mut Tally,
    deadline: Instant,
) {
    let grace = ctx.policy.rounds.grace();
    let mut departures = ctx.directory.subscribe();
    let (mut jobs, mut rx) = dispatch(ctx, silos, deadline);
    let mut pending: HashSet<String> = silos.iter().map(|s| s.name.clone()).collect();
    let mut grace_until: Option<Instant> = None;
    let by_node: BTreeMap<NodeId, String> = ctx
        .cohort
        .iter()
        .map(|s| (s.node_id, s.name.clone()))
        .collect();
    let quorum = ctx.policy.participation.quorum;
    while !pending.is_empty() {
        if !quorum_still_possible(&ctx.policy, tally.admitted.len(), pending.len()) {
            break;
        }
        let until = grace_until.map_or(deadline, |g| g.min(deadline));
        tokio::select! {
            got = rx.recv() => {
                let Some((silo, result)) = got else { break };
                if !pending.remove(&silo.name) {
                    continue;
                }
                let unopened = ctx.routes.get(&silo.name).filter(|a| unopened.contains(&a.name));
                let outcome = match (result, unopened) {
                    (Ok(_), Some(agg)) => Err(Refusal { reason: format!("aggregator {} could not open the round", agg.name), by_policy: false }),
                    (Ok(done), None) => {
                        tally.slowest_dispatch = tally.slowest_dispatch.max(done.dispatch);
                        tally.slowest_fetch = tally.slowest_fetch.max(done.fetch);
                        admit(ctx, &silo, &done.report, done.update, deadline).await.map(|_| done.report)
                    }
                    (Err(failure), _) => Err(Refusal { reason: failure.to_string(), by_policy: false }),
                };
                match outcome {
                    Ok(report) => {
                        tally.admitted.push((silo.name.clone(), report));
                        if tally.admitted.len() >= quorum && grace_until.is_none() {
                            grace_until = Some(Instant::now() + grace);
                        }
                    }
                    Err(Refusal { reason, by_policy }) => tally.refuse(ctx, silo.name.clone(), reason, by_policy),
                }
            }
            ev = departures.recv() => match ev {
                Ok(PeerEvent::Disconnected { node_id, .. }) => {
                    if let Some(name) = by_node.get(&node_id) {
                        if pending.remove(name) {
                            let reason = "left the federation mid-round (session closed)".to_string();
                            tally.refuse(ctx, name.clone(), reason, false);
                        }
                    }
                }
                Ok(_) | Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => {}
            },
            _ = tokio::time::sleep_until(until.into()) => {
                let why = if Instant::now() >= deadline {
                    format!("no update before the round deadline ({}s)", ctx.policy.rounds.deadline_secs)
                } else {
                    format!("late: quorum was reached and the {}s grace period ended", ctx.policy.rounds.grace_secs)
                };
                for p in pending.drain() {
                    tally.refuse(ctx, p, why.clone(), false);
                }
            }
        }
    }
    for p in pending.drain() {
        tally.refuse(ctx, p, NOT_COLLECTED.into(), false);
    }
    jobs.abort_all();
}

/// Rules relative to the cohort judge it whole, now that collection has ended: the
/// Aggregator's screen of the updates it holds. `Err`: the Aggregator did not answer (the
/// round is abandoned).
pub async fn screen(ctx: &RoundContext, tally: &mut Tally) -> Result<(), Error> {
    if !tally
        .admitted
        .iter()
        .any(|(s, _)| !ctx.routes.contains_key(s))
    {
        return Ok(());
    }
    let round = ctx.round;
    match ask(&ctx.aggregator, "aggregator", |reply| {
        AggregatorMessage::Screen { round, reply }
    })
    .await
    {
        Ok(screened) => {
            for (silo, reason) in screened {
                tally.refuse(ctx, silo, reason, true);
            }
            Ok(())
        }
        Err(e) => {
            let _ = ctx.aggregator.cast(AggregatorMessage::Abort { round });
            Err(e)
        }
    }
}

/// Checks one silo's update (fetched by its task), then folds it into the aggregator.
async fn admit(
    ctx: &RoundContext,
    silo: &SiloHandle,
    report: &TrainReport,
    update: Option<Result<Fetched, String>>,
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
    // Checks the report allows (the task fetched nothing if they fail); the aggregator
    // re-checks the values.
    let rows = ctx.reported_rows.get(&silo.name).copied();
    if let Err(reason) = precheck(report, ctx.round, len, rows) {
        return refuse(reason);
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
    // Fetched by the silo's task, which raced the heartbeat watch; once the fold is sent it
    // must complete, or the aggregate would hold an update the summary does not count.
    let (update, digest) = match update {
        Some(u) => u.map_err(transport)?,
        None => return Err(transport("its update was not fetched".into())),
    };
    // Hashed as it arrived over the bulk link (or as it was spilled); hashed here otherwise.
    let digest = match (digest, &update) {
        (Some(d), _) => d,
        (None, Values::Memory(v)) => Digest::of_f32(v),
        (None, Values::Spilled(_)) => {
            return Err(transport(
                "internal: a spilled update without its digest".into(),
            ))
        }
    };
    if digest != report.update_digest {
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
