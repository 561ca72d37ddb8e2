//! The Trainer's answers for a described model (one with a manifest): its schema check, a
//! round's training, scoring and the local baseline, each handed to the silo's
//! [`ModelTrainer`]. The trainer sees only the flat trainable vector; what the actor does
//! around it — the busy flag, compression, secure aggregation, the silo-level DP noise in
//! [`super::jobs::finish_update`] — is the same as for the MLP.

use std::sync::Arc;
use std::time::Instant;

use fedsilo::model::{Architecture, Described, Digest};
use fedsilo::protocol::{
    EvalMetrics, FeatureStats, ModelRef, Personalize, PersonalizedMetrics, Response, TrainPlan,
};

use super::jobs::{finish_update, name_seed, Trained};
use super::refusal::Refusal;
use super::requests::{Job, Training};
use super::state::TrainerState;
use crate::described::ModelTrainer;
use crate::train::dp_sgd::schedule;

/// The schema check's answer: the manifest's digest stands for the schema, and no feature
/// sums (nothing is scaled).
pub(super) fn feature_stats(t: &dyn ModelTrainer) -> FeatureStats {
    FeatureStats {
        schema_digest: t.manifest().digest,
        software_version: env!("CARGO_PKG_VERSION").to_string(),
        rows: t.train_rows() as u64,
        count: vec![],
        sum: vec![],
        sum_sq: vec![],
        unusable: t.unusable(),
    }
}

/// This silo's trainer, if it holds the model `d` describes.
fn trainer_for(state: &TrainerState, d: &Described) -> Result<Arc<dyn ModelTrainer>, Refusal> {
    let wrong = || Refusal::WrongModel {
        asked: format!(
            "the `{}` model of manifest {}",
            d.architecture,
            d.manifest.short()
        ),
        holds: state.args.data.describe(),
    };
    match &state.args.data {
        super::LocalData::Described(t) if t.manifest().digest == d.manifest => Ok(t.clone()),
        _ => Err(wrong()),
    }
}

/// The model `m`, checked to be of the size of this silo's own manifest (the request's list of
/// tensors is never used: only its manifest digest, already checked).
fn held(
    state: &TrainerState,
    m: &ModelRef,
    trainer: &dyn ModelTrainer,
) -> Result<Arc<Vec<f32>>, Refusal> {
    let p = state.model(m)?;
    if p.len() != trainer.manifest().described().layout().len {
        return Err(Refusal::Size("model"));
    }
    Ok(p)
}

/// Readies a round's training of a described model.
pub(super) fn start_training(
    state: &mut TrainerState,
    round: u64,
    base: ModelRef,
    d: &Described,
    plan: TrainPlan,
) -> Result<Training, Refusal> {
    if let Some(r) = state.busy {
        return Err(Refusal::Busy(r));
    }
    let trainer = trainer_for(state, d)?;
    if trainer.train_rows() == 0 {
        return Err(Refusal::EvaluateOnly);
    }
    if plan.lora.is_some() {
        return Err(Refusal::WrongModel {
            asked: "LoRA on the built-in MLP ([plan.lora])".into(),
            holds: state.args.data.describe(),
        });
    }
    let params = held(state, &base, trainer.as_ref())?;
    // The plan checked first: a round refused after its charge would spend budget for nothing.
    trainer.check_plan(&plan)?;
    // The silo's own DP-SGD, charged (and synced) before any training starts.
    state.charge_dp_sgd(round, &plan)?;
    let dp = state.args.dp_sgd.as_ref().map(|c| c.dp);
    let spent = dp.map(|_| schedule(trainer.train_rows(), plan.batch_size as usize, plan.epochs));
    state.busy = Some(round);
    // The round trains from this model: it was committed, so the head personalised on it is
    // this silo's from now on.
    state
        .head
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .adopt(base.digest);
    let masked = state.round_output(round, &plan);
    let name = state.args.name.clone();
    Ok(Training {
        round,
        delay: state.args.faults.train_delay(),
        masked,
        job: Box::new(move || -> Result<Trained, Refusal> {
            let started = Instant::now();
            let seed = plan.seed ^ name_seed(&name);
            let fitted = trainer.train(&params, &plan, seed, dp)?;
            let update: Vec<f32> = fitted
                .params
                .iter()
                .zip(params.iter())
                .map(|(n, b)| n - b)
                .collect();
            Ok(finish_update(
                update,
                round,
                base,
                fitted.examples,
                fitted.loss,
                started,
                &plan,
                spent,
            ))
        }),
    })
}

/// Scores `model` on the held-out rows (and, with personalisation, this silo's own head on
/// it), as a job.
pub(super) fn score(
    state: &TrainerState,
    model: ModelRef,
    d: &Described,
    personalize: Option<Personalize>,
) -> Result<Job, Refusal> {
    let trainer = trainer_for(state, d)?;
    let params = held(state, &model, trainer.as_ref())?;
    // An evaluate-only silo has no training split to personalise on; a silo under its own
    // DP-SGD does not fine-tune outside it.
    let personalize =
        personalize.filter(|_| trainer.train_rows() > 0 && state.args.dp_sgd.is_none());
    let heads = state.head.clone();
    let arch = Architecture::Described(d.clone());
    Ok(Box::new(move || {
        let scored = trainer.evaluate(&params).and_then(|mut metrics| {
            if let Some(p) = personalize {
                let own = heads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .own(&arch)
                    .map(<[f32]>::to_vec);
                match trainer.personalise(&params, own.as_deref(), &p)? {
                    Some(mine) => {
                        metrics.personalized = Some(personalized(trainer.evaluate(&mine.params)?));
                        heads
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .stage(model.digest, arch, mine.head);
                    }
                    None => tracing::warn!(
                        "personalisation asked, but the `{}` trainer has no head to fine-tune alone; scored the global model only",
                        trainer.manifest().architecture
                    ),
                }
            }
            Ok(metrics)
        });
        match scored {
            Ok(m) => Response::Evaluated(m),
            Err(e) => super::state::err(Refusal::from(e)),
        }
    }))
}

fn personalized(m: EvalMetrics) -> PersonalizedMetrics {
    PersonalizedMetrics {
        loss: m.loss,
        accuracy: m.accuracy,
        auc: m.auc,
    }
}

/// Trains `initial` on this silo's rows alone for `rounds` rounds of `plan` and scores it.
pub(super) fn local_baseline(
    state: &TrainerState,
    initial: ModelRef,
    d: &Described,
    plan: TrainPlan,
    rounds: u32,
) -> Result<Job, Refusal> {
    let trainer = trainer_for(state, d)?;
    let params = held(state, &initial, trainer.as_ref())?;
    let name = state.args.name.clone();
    Ok(Box::new(move || {
        let mut p = params.to_vec();
        for r in 0..rounds as u64 {
            let seed = plan.seed.wrapping_add(r) ^ Digest::of_bytes(name.as_bytes()).0[0] as u64;
            match trainer.train(&p, &plan, seed, None) {
                Ok(f) => p = f.params,
                Err(e) => return super::state::err(Refusal::from(e)),
            }
        }
        match trainer.evaluate(&p) {
            Ok(m) => Response::Evaluated(m),
            Err(e) => super::state::err(Refusal::from(e)),
        }
    }))
}
