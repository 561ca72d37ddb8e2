//! The work a silo does off its mailbox: a round's training (the built-in MLP trainer with the
//! silo's own DP-SGD, LoRA adapters, or an external program), then distributed DP noise; and
//! the local-only baseline for the comparison at the end of a run.

use std::sync::Arc;
use std::time::Instant;

use fedsilo::kernels::clip::{clip_l2, l2_norm};
use fedsilo::model::lora::Adapters;
use fedsilo::model::{Digest, ModelSpec};
use fedsilo::privacy::noise::{add_gaussian, secure_rng};
use fedsilo::protocol::{ModelRef, Response, Scaling, TrainPlan, TrainReport};
use ndarray::Array1;

use super::refusal::Refusal;
use crate::data::{encode as encode_rows, local_stats, scaling_from, Dataset};
use crate::external::ExternalTrainer;
use crate::faults::{forge, RoundAttack};
use crate::train::dp_sgd::{train_dp, DpSgd};
use crate::train::lora::train_adapters;
use crate::train::{evaluate, train, Mlp, Sgd, TrainOutcome};

/// The built-in trainer's settings for `plan`, shuffled with `seed`.
pub(super) fn sgd(plan: &TrainPlan, seed: u64) -> Sgd {
    Sgd {
        epochs: plan.epochs,
        batch_size: plan.batch_size as usize,
        learning_rate: plan.learning_rate,
        prox_mu: plan.prox_mu,
        train_from: 0,
        seed,
    }
}

/// A seed unique to this silo, mixed into every shuffling seed.
pub(super) fn name_seed(name: &str) -> u64 {
    Digest::of_bytes(name.as_bytes())
        .0
        .iter()
        .take(8)
        .fold(0u64, |a, b| (a << 8) | *b as u64)
}

/// A trained round: the update, its report, and the DP-SGD spend (sampling rate, steps).
pub(super) type Trained = (Vec<f32>, TrainReport, Option<(f64, u64)>);

/// How this silo trains a round.
#[derive(Debug, Clone)]
pub(super) enum Method {
    /// The built-in MLP trainer, with the silo's own DP-SGD if configured (and, in
    /// robustness experiments, a forged update).
    BuiltIn {
        attack: RoundAttack,
        dp: Option<DpSgd>,
    },
    /// An external program ([`crate::external`]).
    External(ExternalTrainer),
    /// LoRA: the round's model is the adapters, trained on top of the frozen base.
    Lora {
        layout: Adapters,
        frozen: Arc<Vec<f32>>,
    },
}

#[allow(clippy::too_many_arguments)]
pub(super) fn train_job(
    data: &Dataset,
    name: &str,
    round: u64,
    base_ref: ModelRef,
    base: &[f32],
    spec: &ModelSpec,
    plan: &TrainPlan,
    scaling: &Scaling,
    method: Method,
) -> Result<Trained, Refusal> {
    let started = Instant::now();
    let x = encode_rows(&data.schema, &data.train, scaling);
    let y = Array1::from(data.train.labels.clone());
    let seed = plan.seed ^ name_seed(name);
    let (update, out, spent) = match method {
        Method::External(ext) => {
            // The silo's own shuffling seed, as the built-in trainer uses.
            let own = TrainPlan {
                seed,
                ..plan.clone()
            };
            let got = ext.run(round, spec, base, &own, &x, &y)?;
            let update: Vec<f32> = got.params.iter().zip(base).map(|(n, b)| n - b).collect();
            let out = TrainOutcome {
                last_epoch_loss: got.train_loss,
                examples: x.nrows(),
            };
            (update, out, None)
        }
        Method::BuiltIn { attack, dp } => built_in(&x, &y, base, spec, plan, seed, attack, dp),
        Method::Lora { layout, frozen } => {
            let mut adapters = base.to_vec();
            let out = train_adapters(
                &layout,
                &Mlp::new(spec),
                &frozen,
                &mut adapters,
                &x,
                &y,
                sgd(plan, seed),
            );
            let update = adapters.iter().zip(base).map(|(n, b)| n - b).collect();
            (update, out, None)
        }
    };
    Ok(finish_update(
        update,
        round,
        base_ref,
        out.examples,
        out.last_epoch_loss,
        started,
        plan,
        spent,
    ))
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

/// Trains with the built-in MLP trainer: the update, what training did, and the DP-SGD spend.
#[allow(clippy::too_many_arguments)]
fn built_in(
    x: &ndarray::Array2<f32>,
    y: &Array1<f32>,
    base: &[f32],
    spec: &ModelSpec,
    plan: &TrainPlan,
    seed: u64,
    attack: RoundAttack,
    dp: Option<DpSgd>,
) -> (Vec<f32>, TrainOutcome, Option<(f64, u64)>) {
    let mlp = Mlp::new(spec);
    let honest = |x: &ndarray::Array2<f32>, y: &Array1<f32>, seed: u64| {
        let mut params = base.to_vec();
        let (out, spent): (TrainOutcome, Option<(f64, u64)>) = match dp {
            Some(settings) => {
                let o = train_dp(
                    &mlp,
                    &mut params,
                    x,
                    y,
                    sgd(plan, seed),
                    settings,
                    &mut secure_rng(),
                );
                (o.outcome, Some((o.sampling_rate, o.steps)))
            }
            None => (train(&mlp, &mut params, x, y, sgd(plan, seed)), None),
        };
        let update: Vec<f32> = params.iter().zip(base).map(|(n, b)| n - b).collect();
        (update, out, spent)
    };
    let (update, mut out, spent) = honest(x, y, seed);
    let retrain = |rows: &[usize], seed: u64| {
        let (xs, ys) = (
            x.select(ndarray::Axis(0), rows),
            y.select(ndarray::Axis(0), rows),
        );
        honest(&xs, &ys, seed).0
    };
    let (update, examples) = forge(attack, update, out.examples, x.nrows(), seed, &retrain);
    out.examples = examples;
    (update, out, spent)
}

/// Trains `initial` on this silo's data alone for `rounds` rounds, with its own scaling, and
/// scores it on its held-out split.
pub(super) fn local_baseline(
    data: &Dataset,
    name: &str,
    initial: &[f32],
    spec: &ModelSpec,
    plan: &TrainPlan,
    rounds: u32,
) -> Response {
    let scaling = scaling_from(&local_stats(&data.schema, &data.train));
    let mlp = Mlp::new(spec);
    let x = encode_rows(&data.schema, &data.train, &scaling);
    let y = Array1::from(data.train.labels.clone());
    let mut params = initial.to_vec();
    for r in 0..rounds as u64 {
        let seed = plan.seed.wrapping_add(r) ^ Digest::of_bytes(name.as_bytes()).0[0] as u64;
        train(&mlp, &mut params, &x, &y, sgd(plan, seed));
    }
    let xh = encode_rows(&data.schema, &data.holdout, &scaling);
    let yh = Array1::from(data.holdout.labels.clone());
    Response::Evaluated(evaluate(&mlp, &params, &xh, &yh))
}
