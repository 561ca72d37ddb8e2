//! How a run ends: after its last round (or when the privacy budget leaves too few silos),
//! optionally a local-only baseline at every silo for the comparison table, then
//! [`run_over`] — a serving coordinator records the run's end and serves on; otherwise
//! [`finish`]: the `finished` event, the result to whoever started the coordinator, and the
//! actor stops. Also how a spawned task that died is reported ([`task_failure`]).

use std::collections::BTreeMap;
use std::time::Duration;

use ractor::ActorRef;

use super::messages::CoordinatorMessage;
use super::phase::Phase;
use super::settings::RunResult;
use super::state::CoordinatorState;
use crate::bulk::route::{put_model, Route};
use crate::compression::Compression;
use crate::events::{ComparisonRow, Event};
use crate::model::Digest;
use crate::protocol::transfer::unexpected;
use crate::protocol::SiloHandle;
use crate::protocol::{call, EvalMetrics, ModelRef, Request, Response, TrainPlan};

/// The run is over (last round done or budget exhausted): the local-only comparison if asked
/// for, then [`run_over`].
pub fn end_run(state: &mut CoordinatorState, myself: &ActorRef<CoordinatorMessage>) {
    let cancelled = state.run.cancelled();
    if !cancelled {
        if let Err(e) = super::stopping::keep_best(state) {
            return run_over(
                state,
                myself,
                Some(format!("cannot make the run's best version current: {e}")),
            );
        }
    }
    if state.settings.compare_local && state.run.committed > 0 && !cancelled {
        start_comparison(state, myself);
    } else if state.settings.serve && state.run.exhausted && !cancelled {
        // A serving coordinator's later runs would end the same way: say why.
        let why = "the privacy budget leaves too few silos for another round".to_string();
        run_over(state, myself, Some(why));
    } else {
        run_over(state, myself, None);
    }
}

/// The run ended (`error`: it could not go on). A serving coordinator records it and serves on
/// (the next queued run starts); otherwise the coordinator [`finish`]es.
pub fn run_over(
    state: &mut CoordinatorState,
    myself: &ActorRef<CoordinatorMessage>,
    error: Option<String>,
) {
    if !state.settings.serve {
        return finish(state, myself, error);
    }
    if let Err(e) = super::jobs::close(state, error) {
        finish(state, myself, Some(e.to_string()));
    }
}

/// Ends the run (once): the phase becomes `Finished`, the `finished` event and the result go
/// out, and the actor stops.
pub fn finish(
    state: &mut CoordinatorState,
    myself: &ActorRef<CoordinatorMessage>,
    error: Option<String>,
) {
    if state.phase.finished() {
        return;
    }
    let was = std::mem::replace(
        &mut state.phase,
        Phase::Finished {
            error: error.clone(),
        },
    );
    let result = RunResult {
        rounds_committed: state.run.committed,
        version: state.versions.model.version,
        error: error.clone(),
    };
    state.ledger.events.emit(Event::Finished {
        rounds_committed: result.rounds_committed,
        version: result.version,
        error,
    });
    let _ = state.links.done.send(result);
    // A round in flight will never end: stop its task and record it as abandoned.
    if let Phase::Round { round, task } = was {
        if let Some(t) = task {
            t.abort();
        }
        let why = "the coordinator was stopped during the round";
        if let Err(e) = state.ledger.abandon(round, why) {
            tracing::error!(round, "cannot record the round as abandoned: {e}");
        }
    }
    myself.stop(Some("federation finished".into()));
}

/// Why a spawned task ended without a result, with a panic's own message (a panic is a bug:
/// the round is abandoned with it, and the log says so).
pub fn task_failure(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return format!("the round task was cancelled: {e}");
    }
    let payload = e.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    tracing::error!("the round task panicked: {message}");
    format!("the round task panicked (a fedsilo bug; please report it): {message}")
}

/// How long a silo may take for each round of its local-only baseline.
const LOCAL_BASELINE_PER_ROUND: Duration = Duration::from_secs(600);

/// Asks every silo not blocked to train the initial model on its own data for as many rounds
/// as the run had, and to score it (off the mailbox); the table comes back as
/// [`CoordinatorMessage::ComparisonDone`].
fn start_comparison(state: &mut CoordinatorState, myself: &ActorRef<CoordinatorMessage>) {
    state.phase = Phase::Comparing;
    let silos: Vec<SiloHandle> = state
        .members
        .silos
        .values()
        .filter(|e| e.blocked.is_none())
        .map(|e| e.handle.clone())
        .collect();
    let initial = match state.versions.initial_values(&state.settings) {
        Ok(v) => v,
        Err(e) => {
            // It was built at start from the same settings; reported, and no comparison.
            tracing::error!("the local-only comparison needs version 0: {e}");
            let _ = myself.cast(CoordinatorMessage::ComparisonDone(Default::default()));
            return;
        }
    };
    let model = ModelRef {
        version: 0,
        digest: Digest::of_f32(&initial),
    };
    let s = &state.settings;
    // As many rounds as the run ran: fewer than it asked for when it stopped early.
    let rounds = state.run.rounds_run().unwrap_or(s.rounds);
    let (spec, chunk, rounds) = (s.spec.clone(), s.chunk, rounds.min(u32::MAX as u64) as u32);
    let t = state.run.training(s);
    let plan = TrainPlan {
        epochs: t.epochs,
        batch_size: t.batch_size,
        learning_rate: t.learning_rate,
        seed: s.seed,
        noise: None,
        prox_mu: t.prox_mu,
        compression: Compression::None,
        lora: None,
    };
    // The baseline is as many rounds of local training as the run had: a silo gets the bound
    // of one call for each (a 3-round text baseline on 2 cores outlasted a single 600 s).
    let timeout = LOCAL_BASELINE_PER_ROUND * rounds.max(1);
    let federated = state.run.last_eval.clone();
    let bulk = state.links.bulk.clone();
    // The pooled reference is scored with the federation's scaling: the pooled statistics of
    // the silos' training rows, which `fedsilo-pretrain --pooled` computes the same way.
    let reference = s.pooled_reference.as_ref().map(|r| {
        let model = ModelRef {
            version: 0,
            digest: Digest::of_f32(&r.params),
        };
        (model, r.params.clone(), state.scaling_or_empty())
    });
    let business: Option<crate::model::business::BusinessSpec> =
        state.run.round_policy.business.as_ref().map(Into::into);
    let me = myself.clone();
    tokio::spawn(async move {
        let mut jobs = tokio::task::JoinSet::new();
        for silo in silos {
            let (initial, spec, plan) = (initial.clone(), spec.clone(), plan.clone());
            let (bulk, reference) = (bulk.clone(), reference.clone());
            let business = business.clone();
            jobs.spawn(async move {
                let route = Route::to(&silo, &bulk);
                let local = async {
                    put_model(&route, model, &initial, chunk, timeout).await?;
                    let req = Request::LocalBaseline {
                        initial: model,
                        spec: spec.clone(),
                        plan,
                        rounds,
                        business: business.clone(),
                    };
                    evaluated(&silo, call(&silo.actor, &req, timeout, &silo.name).await)
                }
                .await;
                let pooled = match reference {
                    None => None,
                    Some((model, params, scaling)) => Some(
                        async {
                            put_model(&route, model, &params, chunk, timeout).await?;
                            let req = Request::Evaluate {
                                model,
                                spec,
                                scaling,
                                personalize: None,
                                lora: None,
                                business,
                            };
                            let per_call = LOCAL_BASELINE_PER_ROUND;
                            evaluated(&silo, call(&silo.actor, &req, per_call, &silo.name).await)
                        }
                        .await,
                    ),
                };
                (silo.name, Scored { local, pooled })
            });
        }
        let mut scored: BTreeMap<String, Scored> = BTreeMap::new();
        while let Some(Ok((name, s))) = jobs.join_next().await {
            scored.insert(name, s);
        }
        let _ = me.cast(CoordinatorMessage::ComparisonDone(comparison(
            &scored, &federated,
        )));
    });
}

/// What one silo answered for the comparison: its local-only baseline's figures and, with a
/// pooled reference, the reference's.
struct Scored {
    local: Result<EvalMetrics, crate::Error>,
    pooled: Option<Result<EvalMetrics, crate::Error>>,
}

/// A silo's answer to a request that ends in held-out figures.
fn evaluated(
    silo: &SiloHandle,
    r: Result<Response, crate::Error>,
) -> Result<EvalMetrics, crate::Error> {
    match r? {
        Response::Evaluated(m) => Ok(m),
        other => Err(unexpected(&silo.name, "Evaluated", &other)),
    }
}

/// The comparison table: each silo's local-only figures (and the pooled reference's) beside
/// the federated ones.
fn comparison(
    scored: &BTreeMap<String, Scored>,
    federated: &BTreeMap<String, EvalMetrics>,
) -> Vec<ComparisonRow> {
    let mut names: Vec<String> = scored.keys().chain(federated.keys()).cloned().collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|silo| {
            let fed = federated.get(&silo).cloned();
            let mut notes = Vec::new();
            let (loc, pooled) = match scored.get(&silo) {
                Some(s) => {
                    let local = match &s.local {
                        Ok(m) => Some(m.clone()),
                        Err(e) => {
                            notes.push(format!("local baseline failed: {e}"));
                            None
                        }
                    };
                    let pooled = match &s.pooled {
                        Some(Ok(m)) => Some(m.clone()),
                        Some(Err(e)) => {
                            notes.push(format!("pooled reference not scored: {e}"));
                            None
                        }
                        None => None,
                    };
                    (local, pooled)
                }
                None => {
                    notes.push("not connected at the end".to_string());
                    (None, None)
                }
            };
            let examples = fed
                .as_ref()
                .or(loc.as_ref())
                .map(|m| m.examples)
                .unwrap_or(0);
            ComparisonRow {
                silo,
                examples,
                local: loc,
                federated: fed,
                pooled,
                note: (!notes.is_empty()).then(|| notes.join("; ")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_round_task_is_reported_with_its_message() {
        let e = tokio::spawn(async {
            let v: Vec<u8> = Vec::new();
            if v.is_empty() {
                panic!("deadline overflow at round 7");
            }
        })
        .await
        .unwrap_err();
        let why = task_failure(e);
        assert!(
            why.contains("panicked") && why.contains("deadline overflow at round 7"),
            "{why}"
        );
    }
}
