//! The work a silo does off its mailbox, the same for every model: a round's training, the
//! scoring of a model (with the silo's own head when it personalises), and the local-only
//! baseline for the comparison at the end of a run — each handed to a [`ModelTrainer`], which
//! sees only the flat trainable vector. What happens around it is the actor's: the busy flag,
//! the silo's DP-SGD ledger, and the update made ready to leave ([`finish_update`]: silo-level
//! DP, then compression or masking in the actor).

use std::sync::Arc;
use std::time::Instant;

use fedsilo::kernels::clip::{clip_l2, l2_norm};
use fedsilo::model::business::{business_metrics, BusinessSpec};
use fedsilo::model::{Architecture, Digest};
use fedsilo::privacy::noise::{add_gaussian, secure_rng};
use fedsilo::protocol::{
    EvalMetrics, ModelRef, Personalize, PersonalizedMetrics, Response, TrainPlan, TrainReport,
    MAX_PASSES,
};

use super::refusal::Refusal;
use super::requests::{Job, Training};
use super::state::{err, TrainerState};
use crate::model_trainers::ModelTrainer;
use crate::train::dp_sgd::schedule;

/// A seed unique to this silo, mixed into every shuffling seed.
pub(super) fn name_seed(name: &str) -> u64 {
    Digest::of_bytes(name.as_bytes())
        .0
        .iter()
        .take(8)
        .fold(0u64, |a, b| (a << 8) | *b as u64)
}

/// `passes` over the data for `what`, refused above [`MAX_PASSES`].
pub(super) fn check_passes(what: &'static str, passes: u64) -> Result<(), Refusal> {
    if passes > MAX_PASSES {
        return Err(Refusal::TooMuchWork {
            what,
            passes,
            max: MAX_PASSES,
        });
    }
    Ok(())
}

/// A trained round: the update, its report, and the DP-SGD spend (sampling rate, steps).
pub(super) type Trained = (Vec<f32>, TrainReport, Option<(f64, u64)>);

/// Readies round `round`'s training of `trainer` from `params` (the model `base`): refuses
/// while busy, on a silo with no training rows, or a plan the trainer cannot train (before
/// the silo's DP-SGD charges its ledger); then charges, marks the silo busy, and adopts the
/// head personalised on `base`.
pub(super) fn start_training(
    state: &mut TrainerState,
    round: u64,
    base: ModelRef,
    params: Arc<Vec<f32>>,
    trainer: Arc<dyn ModelTrainer>,
    plan: TrainPlan,
) -> Result<Training, Refusal> {
    if let Some(r) = state.busy {
        return Err(Refusal::Busy(r));
    }
    if trainer.train_rows() == 0 {
        return Err(Refusal::EvaluateOnly);
    }
    check_passes("a round", plan.epochs as u64)?;
    // The plan checked first: a round refused after its charge would spend budget for nothing.
    trainer.check_plan(&plan)?;
    // The silo's own DP-SGD, charged (and synced) before any training starts.
    state.charge_dp_sgd(round, &plan)?;
    let dp = state.args.dp_sgd.as_ref().map(|c| c.dp);
    let spent = dp.map(|_| schedule(trainer.train_rows(), plan.batch_size as usize, plan.epochs));
    state.busy = Some(round);
    state
        .args
        .board
        .report(crate::status::Change::TrainingStarted(round));
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
            Ok(finish_update(
                fitted.update,
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

/// A trained update made ready to leave: clipped and noised if the plan asks for silo-level
/// DP (nothing leaves the silo unclipped or un-noised), with its report. Every trainer's
/// update passes here.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish_update(
    mut update: Vec<f32>,
    round: u64,
    base: ModelRef,
    examples: usize,
    loss: f64,
    started: Instant,
    plan: &TrainPlan,
    spent: Option<(f64, u64)>,
) -> Trained {
    if let Some(noise) = plan.noise {
        clip_l2(&mut update, noise.clip_norm);
        add_gaussian(&mut update, noise.std, &mut secure_rng());
    }
    let report = TrainReport {
        round,
        base,
        examples: examples as u64,
        train_loss: loss,
        train_seconds: started.elapsed().as_secs_f64(),
        update_len: update.len() as u64,
        update_digest: Digest::of_f32(&update),
        update_norm: l2_norm(&update),
    };
    (update, report, spent)
}

/// Scores `params` (the model `model`, of `arch`) on the held-out rows, as a job; with
/// `personalize`, also the model under this silo's own head, fine-tuned on its training rows.
/// The fine-tuned head is staged, to become the silo's if a round trains from `model`.
pub(super) fn score(
    state: &TrainerState,
    model: ModelRef,
    arch: Architecture,
    params: Arc<Vec<f32>>,
    trainer: Arc<dyn ModelTrainer>,
    personalize: Option<Personalize>,
    business: Option<BusinessSpec>,
) -> Job {
    // An evaluate-only silo has no training split to personalise on; a silo under its own
    // DP-SGD does not fine-tune outside it.
    let personalize =
        personalize.filter(|_| trainer.train_rows() > 0 && state.args.dp_sgd.is_none());
    let personalize =
        personalize.filter(
            |p| match check_passes("a personalisation", p.epochs as u64) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("scoring without the personalised head: {e}");
                    false
                }
            },
        );
    let heads = state.head.clone();
    Box::new(move || {
        let mut metrics = match trainer.evaluate(&params) {
            Ok(m) => m,
            Err(e) => return err(Refusal::from(e)),
        };
        metrics.business = business_of(trainer.as_ref(), &params, business.as_ref());
        if let Some(p) = personalize {
            let own = heads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .own(&arch)
                .map(<[f32]>::to_vec);
            // Personalisation failing (a diverging head, say) costs its own figures, not the
            // global model's score.
            let mine = trainer
                .personalise(&params, own.as_deref(), &p)
                .and_then(|m| {
                    m.map(|m| trainer.evaluate(&m.params).map(|e| (m.head, e)))
                        .transpose()
                });
            match mine {
                Ok(Some((head, scored))) => {
                    metrics.personalized = Some(personalized(scored));
                    heads
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .stage(model.digest, arch, head);
                }
                Ok(None) => tracing::warn!(
                    "personalisation asked, but the trainer of {} has no head to fine-tune alone; scored the global model only",
                    arch.describe()
                ),
                Err(e) => tracing::warn!(
                    "personalisation failed, scored the global model only: {e}"
                ),
            }
        }
        Response::Evaluated(metrics)
    })
}

/// The business metrics the policy asked for, on the held-out rows (only the aggregates are
/// kept); `None` when not asked, or when the trainer has no binary scores to give.
fn business_of(
    trainer: &dyn ModelTrainer,
    params: &[f32],
    spec: Option<&BusinessSpec>,
) -> Option<fedsilo::model::business::BusinessMetrics> {
    let spec = spec?;
    match trainer.holdout_scores(params) {
        Ok(Some((scores, labels))) => business_metrics(&scores, &labels, spec, None),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("business metrics left out: {e}");
            None
        }
    }
}

fn personalized(m: EvalMetrics) -> PersonalizedMetrics {
    PersonalizedMetrics {
        loss: m.loss,
        accuracy: m.accuracy,
        auc: m.auc,
        r2: m.r2,
        mae: m.mae,
    }
}

/// Trains `initial` on this silo's rows alone for `rounds` rounds of `plan` (without the
/// silo's DP-SGD: nothing leaves) and scores it, as a job.
pub(super) fn local_baseline(
    state: &TrainerState,
    initial: Arc<Vec<f32>>,
    trainer: Arc<dyn ModelTrainer>,
    plan: TrainPlan,
    rounds: u32,
    business: Option<BusinessSpec>,
) -> Job {
    let name = state.args.name.clone();
    Box::new(move || {
        let mut p = initial.to_vec();
        for r in 0..rounds as u64 {
            let seed = plan.seed.wrapping_add(r) ^ Digest::of_bytes(name.as_bytes()).0[0] as u64;
            match trainer.train(&p, &plan, seed, None) {
                Ok(f) => p = f.applied_to(&p),
                Err(e) => return err(Refusal::from(e)),
            }
        }
        match trainer.evaluate(&p) {
            Ok(mut m) => {
                m.business = business_of(trainer.as_ref(), &p, business.as_ref());
                Response::Evaluated(m)
            }
            Err(e) => err(Refusal::from(e)),
        }
    })
}
