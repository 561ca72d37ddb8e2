//! What the Trainer answers to each request: at once ([`Answer::Now`]), or from work run on a
//! blocking thread so that heartbeats are answered meanwhile ([`Answer::Blocking`] for
//! scoring and the local baseline, [`Answer::Train`] for a round's training, whose update is
//! kept for `FetchUpdate` before the coordinator is told it is ready).

use std::sync::Arc;
use std::time::Duration;

use fedsilo::model::{Architecture, Digest, ModelSpec};
use fedsilo::protocol::{
    FeatureStats, LoraTrain, ModelRef, Personalize, PersonalizedMetrics, Request, Response,
    Scaling, TrainPlan,
};
use ndarray::Array1;

use super::described;
use super::jobs::{local_baseline, train_job, Method, Trained};
use super::refusal::Refusal;
use super::state::{err, LocalData, TrainerState};
use crate::data::{encode as encode_rows, local_stats, Dataset};
use crate::train::{evaluate, Mlp, Sgd};

/// Work that answers a request later, on a blocking thread.
pub(super) type Job = Box<dyn FnOnce() -> Response + Send>;

/// A round's training, ready to run.
pub(super) struct Training {
    /// The round.
    pub round: u64,
    /// Wait this long first (fault injection in tests).
    pub delay: Duration,
    /// Under secure aggregation: the report says nothing of the update.
    pub masked: bool,
    /// The training itself.
    pub job: Box<dyn FnOnce() -> Result<Trained, Refusal> + Send>,
}

/// How a request is answered.
pub(super) enum Answer {
    /// Now.
    Now(Response),
    /// By a job on a blocking thread (`what` names it in an error).
    Blocking(&'static str, Job),
    /// By a round's training.
    Train(Training),
}

/// The answer to `request`.
pub(super) fn answer(state: &mut TrainerState, request: Request) -> Answer {
    let now = Answer::Now;
    match request {
        Request::Ping { seq } => now(Response::Pong { seq }),
        Request::FeatureStats => now(Response::FeatureStats(match &state.args.data {
            LocalData::Tabular(data) => FeatureStats {
                unusable: data.single_class(),
                ..local_stats(&data.schema, &data.train)
            },
            LocalData::Described(t) => described::feature_stats(t.as_ref()),
        })),
        Request::PutModel {
            model,
            offset,
            total,
            values,
        } => now(state.put_chunk(model, offset, total, values)),
        r @ (Request::SecAggAdvertise { .. }
        | Request::SecAggShare { .. }
        | Request::SecAggDeliver { .. }
        | Request::FetchMasked { .. }
        | Request::SecAggUnmask { .. }) => now(state.secure_aggregation(r)),
        Request::FetchUpdate { round, offset, len } => now(fetch_update(state, round, offset, len)),
        // Asked only of frozen bases: one held is pinned, so that models sent after it
        // cannot evict it from the cache.
        Request::Holds { model } => now(match state.model(&model) {
            Ok(p) => {
                state.pinned = Some((model, p));
                Response::Holds { held: true }
            }
            Err(_) => Response::Holds { held: false },
        }),
        Request::Evaluate {
            model,
            spec,
            scaling,
            personalize,
            lora,
        } => {
            let job = match &spec {
                Architecture::Described(d) => described::score(state, model, d, personalize),
                Architecture::Mlp(mlp) => tabular(state, &spec).and_then(|data| {
                    score(
                        state,
                        data,
                        model,
                        mlp.clone(),
                        scaling,
                        personalize,
                        lora.as_ref(),
                    )
                }),
            };
            match job {
                Ok(job) => Answer::Blocking("evaluation", job),
                Err(e) => now(err(e)),
            }
        }
        Request::Train {
            round,
            base,
            spec,
            plan,
            scaling,
        } => {
            let training = match &spec {
                Architecture::Described(d) => {
                    described::start_training(state, round, base, d, plan)
                }
                Architecture::Mlp(mlp) => tabular(state, &spec).and_then(|data| {
                    start_training(state, data, round, base, mlp.clone(), plan, scaling)
                }),
            };
            match training {
                Ok(training) => Answer::Train(training),
                Err(e) => now(err(e)),
            }
        }
        Request::LocalBaseline {
            initial,
            spec,
            plan,
            rounds,
        } => {
            let job = match &spec {
                Architecture::Described(d) => {
                    described::local_baseline(state, initial, d, plan, rounds)
                }
                Architecture::Mlp(mlp) => tabular(state, &spec).and_then(|data| {
                    tabular_baseline(state, data, initial, mlp.clone(), plan, rounds)
                }),
            };
            match job {
                Ok(job) => Answer::Blocking("local baseline", job),
                Err(e) => now(err(e)),
            }
        }
    }
}

/// This silo's tabular data, if it trains the MLP `spec` asks for.
fn tabular(state: &TrainerState, spec: &Architecture) -> Result<Arc<Dataset>, Refusal> {
    match &state.args.data {
        LocalData::Tabular(d) => Ok(d.clone()),
        LocalData::Described(_) => Err(Refusal::WrongModel {
            asked: spec.describe(),
            holds: state.args.data.describe(),
        }),
    }
}

/// The MLP trained on this silo's rows alone, as a job.
fn tabular_baseline(
    state: &TrainerState,
    data: Arc<Dataset>,
    initial: ModelRef,
    spec: ModelSpec,
    plan: TrainPlan,
    rounds: u32,
) -> Result<Job, Refusal> {
    let n = data.schema.numeric_count();
    let unscaled = Scaling {
        mean: vec![0.0; n],
        std: vec![1.0; n],
    };
    let params = state.model(&initial)?;
    state.check_spec(&data, &spec, &unscaled)?;
    let name = state.args.name.clone();
    Ok(Box::new(move || {
        local_baseline(&data, &name, &params, &spec, &plan, rounds)
    }))
}

/// A chunk of round `round`'s update (compressed, if it was); never the update of a securely
/// aggregated round, which leaves only masked.
fn fetch_update(state: &TrainerState, round: u64, offset: u64, len: u64) -> Response {
    if state.masked_only == Some(round) || state.secagg.as_ref().is_some_and(|p| p.round() == round)
    {
        return err(format!(
            "round {round} is securely aggregated: its update leaves this silo only masked"
        ));
    }
    let Some((_, u)) = state.update.as_ref().filter(|(r, _)| *r == round) else {
        return err(Refusal::NoUpdate(round));
    };
    let end = offset.saturating_add(len);
    if end > u.len() as u64 {
        return err(Refusal::Range {
            start: offset,
            end,
            what: "an update",
            len: u.len() as u64,
        });
    }
    match state.encoded.as_ref().filter(|(r, _)| *r == round) {
        Some((_, e)) => match e.chunk(offset as usize, len as usize) {
            Some(c) => Response::CompressedChunk(c),
            None => err(format!("asked for an empty chunk at value {offset}")),
        },
        None => Response::UpdateChunk {
            values: u[offset as usize..end as usize].to_vec(),
        },
    }
}

/// Scoring `model` on the held-out split (and, with personalisation, this silo's own head on
/// it), as a job.
fn score(
    state: &mut TrainerState,
    data: Arc<Dataset>,
    model: ModelRef,
    spec: ModelSpec,
    scaling: Scaling,
    personalize: Option<Personalize>,
    lora: Option<&LoraTrain>,
) -> Result<Job, Refusal> {
    state.check_spec(&data, &spec, &scaling)?;
    let params = state.scored_model(&model, &spec, lora)?;
    let head = state.head.clone();
    // A central hold-out has no training split to personalise on; a silo under its own
    // DP-SGD does not fine-tune outside it.
    let has_training = !data.train.labels.is_empty() && state.args.dp_sgd.is_none();
    Ok(Box::new(move || {
        let x = encode_rows(&data.schema, &data.holdout, &scaling);
        let y = Array1::from(data.holdout.labels.clone());
        let mlp = Mlp::new(&spec);
        let mut metrics = evaluate(&mlp, &params, &x, &y);
        if let Some(p) = personalize.filter(|_| has_training) {
            let xt = encode_rows(&data.schema, &data.train, &scaling);
            let yt = Array1::from(data.train.labels.clone());
            let sgd = Sgd {
                epochs: p.epochs,
                batch_size: p.batch_size as usize,
                learning_rate: p.learning_rate,
                prox_mu: 0.0,
                train_from: 0,
                seed: p.seed,
            };
            let mut h = head.lock().unwrap_or_else(|p| p.into_inner());
            let mine = h.personalise(model.digest, &spec, &params, &xt, &yt, sgd);
            drop(h);
            let p = evaluate(&mlp, &mine, &x, &y);
            metrics.personalized = Some(PersonalizedMetrics {
                loss: p.loss,
                accuracy: p.accuracy,
                auc: p.auc,
            });
        }
        Response::Evaluated(metrics)
    }))
}

/// Checks a `Train` request, charges the silo's own DP-SGD, and readies the round's
/// training (the trainer is busy from here until it is done).
fn start_training(
    state: &mut TrainerState,
    data: Arc<Dataset>,
    round: u64,
    base: ModelRef,
    spec: ModelSpec,
    plan: TrainPlan,
    scaling: Scaling,
) -> Result<Training, Refusal> {
    if let Some(r) = state.busy {
        return Err(Refusal::Busy(r));
    }
    if data.train.labels.is_empty() {
        return Err(Refusal::EvaluateOnly);
    }
    state.check_spec(&data, &spec, &scaling)?;
    let (params, lora) = match &plan.lora {
        Some(_) if state.args.external.is_some() || state.args.dp_sgd.is_some() => {
            return Err(Refusal::LoraNeedsBuiltIn)
        }
        Some(l) => {
            let (layout, frozen, theta) = state.lora_parts(&base, &spec, l)?;
            (theta, Some((layout, frozen)))
        }
        None => {
            let p = state.model(&base)?;
            if p.len() != spec.layout().len {
                return Err(Refusal::Size("base model"));
            }
            (p, None)
        }
    };
    state.charge_dp_sgd(round, &plan)?;
    state.busy = Some(round);
    // The round trains from this model: it was committed, so the head personalised on it is
    // this silo's from now on.
    state
        .head
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .adopt(base.digest);
    let method = match (lora, &state.args.external) {
        (Some((layout, frozen)), _) => Method::Lora { layout, frozen },
        (None, Some(ext)) => Method::External(ext.clone()),
        (None, None) => Method::BuiltIn {
            attack: state.args.faults.attack(round),
            dp: state.args.dp_sgd.as_ref().map(|c| c.dp),
        },
    };
    let masked = state.round_output(round, &plan);
    let name = state.args.name.clone();
    let params: Arc<Vec<f32>> = params;
    Ok(Training {
        round,
        delay: state.args.faults.train_delay(),
        masked,
        job: Box::new(move || {
            train_job(
                &data, &name, round, base, &params, &spec, &plan, &scaling, method,
            )
        }),
    })
}

/// What a finished training job leaves: the update to keep (with its round), the response,
/// and the DP-SGD spend (sampling rate, steps).
pub(super) type Finished = (Option<(u64, Vec<f32>)>, Response, Option<(f64, u64)>);

/// What a finished training job answers.
pub(super) fn trained(
    round: u64,
    masked: bool,
    job: Result<Result<Trained, Refusal>, tokio::task::JoinError>,
) -> Finished {
    match job {
        Ok(Ok((u, mut report, spent))) => {
            if masked {
                report.update_norm = 0.0;
                report.update_digest = Digest::of_f32(&[]);
            }
            (Some((round, u)), Response::Trained(report), spent)
        }
        Ok(Err(e)) => {
            tracing::warn!(round, "training refused: {e}");
            (None, err(e), None)
        }
        Err(e) => (None, err(format!("training failed: {e}")), None),
    }
}
