//! What the Trainer answers to each request: at once ([`Answer::Now`]), or from work run on a
//! blocking thread so that heartbeats are answered meanwhile ([`Answer::Blocking`] for
//! scoring and the local baseline, [`Answer::Train`] for a round's training, whose update is
//! kept for `FetchUpdate` before the coordinator is told it is ready).

use std::sync::Arc;
use std::time::Duration;

use fedsilo::model::{Architecture, Described, Digest};
use fedsilo::protocol::trainer_message::HolderRefusal;
use fedsilo::protocol::{FeatureStats, LoraTrain, ModelRef, Request, Response, Scaling, TrainPlan};

use super::files::{AwaitingFiles, FileIntake};
use super::jobs::{local_baseline, score, start_training, Trained};
use super::refusal::Refusal;
use super::state::{err, LocalData, TrainerState};
use crate::data::{local_stats, scaling_from, Dataset};
use crate::model_trainers::tabular::{How, TabularTrainer};
use crate::model_trainers::{DescribedTrainer, ModelTrainer, TrainError};

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
    settle(state);
    let now = Answer::Now;
    match request {
        Request::Ping { seq } => now(Response::Pong {
            seq,
            deployed: state.deployed,
        }),
        Request::Deploy { note } => now(super::deployment::deploy(state, &note)),
        Request::Blocked { reason } => {
            // At most a line's worth of the coordinator's words in the silo's log and status,
            // without control characters (no forged log lines, no terminal escapes).
            let reason: String = reason
                .chars()
                .filter(|c| !c.is_control())
                .take(500)
                .collect();
            state
                .args
                .board
                .report(crate::status::Change::Blocked(reason));
            now(Response::Noted)
        }
        Request::FeatureStats => now(Response::FeatureStats(match &state.args.data {
            LocalData::Tabular(data) => FeatureStats {
                unusable: data.single_class(),
                ..local_stats(&data.schema, &data.train)
            },
            LocalData::Described(t) => described_stats(t.as_ref()),
            LocalData::Awaiting(a) => awaiting_stats(a, state.intake.as_ref()),
        })),
        Request::PutFile {
            sha256,
            offset,
            total,
            bytes,
        } => now(put_file(state, &sha256, offset, total, &bytes)),
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
        // Asked of a round's frozen base, then of its base: one held is pinned, so that
        // models sent after it cannot evict it from the cache.
        Request::Holds { model } => now(match state.model(&model) {
            Ok(p) => {
                state.pin(model, p);
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
            business,
        } => match for_scoring(state, &model, &spec, scaling, lora.as_ref()) {
            Ok((trainer, params)) => Answer::Blocking(
                "evaluation",
                score(state, model, spec, params, trainer, personalize, business),
            ),
            Err(e) => now(err(e)),
        },
        Request::Train {
            round,
            base,
            spec,
            plan,
            scaling,
        } => match ready_to_train(state)
            .and_then(|()| for_training(state, round, &base, &spec, &plan, scaling))
            .and_then(|(trainer, params)| start_training(state, round, base, params, trainer, plan))
        {
            Ok(training) => Answer::Train(training),
            Err(e) => now(err(e)),
        },
        Request::LocalBaseline {
            initial,
            spec,
            plan,
            rounds,
            business,
        } => {
            match super::jobs::check_passes("a local baseline", rounds as u64 * plan.epochs as u64)
                .and_then(|()| for_baseline(state, &initial, &spec))
            {
                Ok((trainer, params)) => Answer::Blocking(
                    "local baseline",
                    local_baseline(state, params, trainer, plan, rounds, business),
                ),
                Err(e) => now(err(e)),
            }
        }
    }
}

/// A model whose files have all arrived and whose trainer is built becomes the silo's model.
fn settle(state: &mut TrainerState) {
    if let LocalData::Awaiting(a) = &state.args.data {
        if let Some(Ok(t)) = a.built.get() {
            state.args.data = LocalData::Described(t.clone());
            state.intake = None;
        }
    }
}

/// A chunk of one of the model's files; the trainer is built once the last is in.
fn put_file(
    state: &mut TrainerState,
    sha256: &str,
    offset: u64,
    total: u64,
    bytes: &[u8],
) -> Response {
    let (LocalData::Awaiting(a), Some(intake)) = (&state.args.data, state.intake.as_mut()) else {
        return err("this silo holds every file of its model: nothing to receive");
    };
    match intake.put(sha256, offset, total, bytes) {
        Ok(received) => {
            if intake.is_complete() {
                a.build(&state.args.name);
            }
            Response::FileChunkStored { received }
        }
        Err(e) => {
            tracing::warn!("refusing a file from the coordinator: {e}");
            err(e)
        }
    }
}

/// The schema check's answer while the model's files arrive: the manifest's digest, the files
/// still missing, whether the model is loading, and why it could not be loaded if it could not.
fn awaiting_stats(a: &AwaitingFiles, intake: Option<&FileIntake>) -> FeatureStats {
    FeatureStats {
        schema_digest: a.manifest.digest,
        software_version: env!("CARGO_PKG_VERSION").to_string(),
        rows: a.rows as u64,
        count: vec![],
        sum: vec![],
        sum_sq: vec![],
        unusable: match a.built.get() {
            Some(Err(e)) => Some(format!("its model cannot be loaded: {e}")),
            _ => a.unusable.clone(),
        },
        partial: intake.and_then(FileIntake::partial),
        // A silo that cannot take part asks for nothing.
        missing_files: match a.unusable {
            Some(_) => vec![],
            None => intake.map(FileIntake::missing).unwrap_or_default(),
        },
        loading: a.loading(),
    }
}

/// Busy, or a silo without training rows, is said before anything about the request's model.
fn ready_to_train(state: &TrainerState) -> Result<(), Refusal> {
    match state.busy {
        Some(r) => Err(Refusal::Busy(r)),
        None if state.args.data.train_rows() == 0 => Err(Refusal::EvaluateOnly),
        None => Ok(()),
    }
}

/// A request's model as this silo holds it: the trainer for it and the values it starts from.
type Resolved = (Arc<dyn ModelTrainer>, Arc<Vec<f32>>);

/// The schema check's answer for a described model: the manifest's digest stands for the
/// schema, and no feature sums (nothing is scaled).
fn described_stats(t: &dyn DescribedTrainer) -> FeatureStats {
    FeatureStats {
        schema_digest: t.manifest().digest,
        software_version: env!("CARGO_PKG_VERSION").to_string(),
        rows: t.train_rows() as u64,
        count: vec![],
        sum: vec![],
        sum_sq: vec![],
        unusable: t.unusable(),
        missing_files: vec![],
        loading: false,
        partial: None,
    }
}

/// The model `m` of the described model `d`, and this silo's trainer for it (if that is the
/// model it was started for); `m` must be of the size of the silo's own manifest (the
/// request's list of tensors is never used: only its manifest digest).
fn described(state: &TrainerState, d: &Described, m: &ModelRef) -> Result<Resolved, Refusal> {
    let trainer = match &state.args.data {
        LocalData::Described(t) if t.manifest().digest == d.manifest => t.clone(),
        LocalData::Awaiting(a) if a.manifest.digest == d.manifest => {
            return Err(Refusal::FilesPending)
        }
        _ => {
            return Err(Refusal::WrongModel {
                asked: format!(
                    "the `{}` model of manifest {}",
                    d.architecture,
                    d.manifest.short()
                ),
                holds: state.args.data.describe(),
            })
        }
    };
    let p = state.model(m)?;
    if p.len() != trainer.manifest().described().layout().len {
        return Err(Refusal::Size("model"));
    }
    Ok((trainer, p))
}

/// This silo's tabular data, if it trains the MLP `spec` asks for.
pub(super) fn tabular(state: &TrainerState, spec: &Architecture) -> Result<Arc<Dataset>, Refusal> {
    match &state.args.data {
        LocalData::Tabular(d) => Ok(d.clone()),
        LocalData::Described(_) | LocalData::Awaiting(_) => Err(Refusal::WrongModel {
            asked: spec.describe(),
            holds: state.args.data.describe(),
        }),
    }
}

/// What scores `model`: under LoRA, the adapters merged into the frozen base.
fn for_scoring(
    state: &mut TrainerState,
    model: &ModelRef,
    spec: &Architecture,
    scaling: Scaling,
    lora: Option<&LoraTrain>,
) -> Result<Resolved, Refusal> {
    let mlp = match spec {
        Architecture::Described(d) => return described(state, d, model),
        Architecture::Mlp(mlp) => mlp,
    };
    let data = tabular(state, spec)?;
    state.check_spec(&data, mlp, &scaling)?;
    let params = state.scored_model(model, mlp, lora)?;
    let how = How::BuiltIn { attack: None };
    let trainer = TabularTrainer::new(data, mlp.clone(), scaling, how);
    Ok((Arc::new(trainer), params))
}

/// What trains round `round` from `base`: a described model's trainer, or the MLP trained by
/// fedsilo's SGD, as LoRA adapters, or by the silo's own program.
fn for_training(
    state: &mut TrainerState,
    round: u64,
    base: &ModelRef,
    spec: &Architecture,
    plan: &TrainPlan,
    scaling: Scaling,
) -> Result<Resolved, Refusal> {
    let mlp = match spec {
        Architecture::Described(_) if plan.lora.is_some() => {
            return Err(Refusal::WrongModel {
                asked: "LoRA on the built-in MLP ([plan.lora])".into(),
                holds: state.args.data.describe(),
            })
        }
        Architecture::Described(d) => return described(state, d, base),
        Architecture::Mlp(mlp) => mlp,
    };
    let data = tabular(state, spec)?;
    state.check_spec(&data, mlp, &scaling)?;
    let (params, how) = match (&plan.lora, &state.args.external) {
        (Some(_), _) if state.args.external.is_some() || state.args.dp_sgd.is_some() => {
            return Err(Refusal::LoraNeedsBuiltIn)
        }
        (Some(l), _) => {
            let (layout, frozen, theta) = state.lora_parts(base, mlp, l)?;
            (theta, How::Lora { layout, frozen })
        }
        // Record-level DP-SGD runs in fedsilo's own trainer; the command line refuses the
        // pair, and so does the actor, before anything is charged.
        (None, Some(_)) if state.args.dp_sgd.is_some() => {
            return Err(Refusal::Trainer(TrainError::Unsupported(
                "record-level DP-SGD (--dp-clip) runs in fedsilo's own trainer, not in an external program".into(),
            )))
        }
        (None, external) => {
            let p = state.model(base)?;
            if p.len() != mlp.layout().len {
                return Err(Refusal::Size("base model"));
            }
            let how = match external {
                Some(runner) => How::External {
                    runner: runner.clone(),
                    round,
                },
                None => How::BuiltIn {
                    attack: state.args.faults.attack(round),
                },
            };
            (p, how)
        }
    };
    let trainer = TabularTrainer::new(data, mlp.clone(), scaling, how);
    Ok((Arc::new(trainer), params))
}

/// What trains `initial` on this silo's rows alone: the MLP with the silo's own scaling.
fn for_baseline(
    state: &TrainerState,
    initial: &ModelRef,
    spec: &Architecture,
) -> Result<Resolved, Refusal> {
    let mlp = match spec {
        Architecture::Described(d) => return described(state, d, initial),
        Architecture::Mlp(mlp) => mlp,
    };
    let data = tabular(state, spec)?;
    let scaling = scaling_from(&local_stats(&data.schema, &data.train));
    state.check_spec(&data, mlp, &scaling)?;
    let params = state.model(initial)?;
    if params.len() != mlp.layout().len {
        return Err(Refusal::Size("model"));
    }
    let how = How::BuiltIn { attack: None };
    let trainer = TabularTrainer::new(data, mlp.clone(), scaling, how);
    Ok((Arc::new(trainer), params))
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

/// Round `round`'s update for the bulk data plane: shared, not copied. A compressed update is
/// served in chunks on the control plane (the coordinator is told to ask there); a securely
/// aggregated one never leaves unmasked.
pub(super) fn take_update(
    state: &TrainerState,
    round: u64,
) -> Result<Arc<Vec<f32>>, HolderRefusal> {
    if state.masked_only == Some(round) || state.secagg.as_ref().is_some_and(|p| p.round() == round)
    {
        return Err(HolderRefusal::Refused(format!(
            "round {round} is securely aggregated: its update leaves this silo only masked"
        )));
    }
    let Some((_, u)) = state.update.as_ref().filter(|(r, _)| *r == round) else {
        return Err(HolderRefusal::Refused(Refusal::NoUpdate(round).to_string()));
    };
    if state.encoded.as_ref().is_some_and(|(r, _)| *r == round) {
        return Err(HolderRefusal::AskControl(format!(
            "round {round}'s update is compressed"
        )));
    }
    Ok(u.clone())
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
