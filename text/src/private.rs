//! Record-level DP-SGD (Abadi et al. 2016) on the trainable tensors: a silo protects its own
//! customers from everyone else, the coordinator included, with a text model too.
//!
//! As the tabular trainer does it: each step samples a lot by Poisson sampling (every text
//! independently with probability q = L / n, L the expected lot size), computes each sampled
//! text's gradient of the adapters and the head (one backward pass per text: burn has no
//! per-example gradients), clips it to L2 norm C over all of them together, sums, adds
//! Gaussian noise N(0, (z·C)²) to every coordinate, divides by L and takes an AdamW step.
//! The lot size and the number of steps are the caller's: exactly those its privacy accountant
//! charged (fedsilo's silo computes both with one function). Frozen weights get no
//! gradient, so nothing about them needs protecting. The noise and the lots come from the
//! caller (fedsilo draws both from the operating system's generator), not from the plan's seed.

use burn::module::ParamId;
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::{Rng, RngCore};

use crate::classifier::TextClassifier;
use crate::prefix::PrefixCache;
use crate::proximal::{add_proximal, put, take, trainable_params};
use crate::targets::Targets;
use crate::tokenize::TextTokenizer;
use crate::train::{check_prefix, check_settings, logits, TrainSettings, Trained};
use crate::TextError;

/// DP-SGD's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSgd {
    /// Per-example L2 clipping norm C (> 0).
    pub clip: f64,
    /// Noise multiplier z (≥ 0): the noise's standard deviation is z·C.
    pub noise_multiplier: f64,
    /// Expected lot size L (1 to the number of texts): each text is sampled with q = L / n.
    pub lot: usize,
    /// Steps to take (`epochs` of the settings is not used).
    pub steps: u64,
}

/// One parameter's gradient as values (zeros when it got none).
fn values(
    grads: &mut GradientsParams,
    id: ParamId,
    shape: &[usize],
) -> Result<Vec<f32>, TextError> {
    Ok(match take(grads, id, shape)? {
        Some((v, _)) => v,
        None => vec![0.0; shape.iter().product()],
    })
}

/// [`crate::train::fit_cached`] under DP-SGD (see the module documentation). `noise` adds
/// Gaussian noise of the given standard deviation to each value; `rng` draws the lots.
#[allow(clippy::too_many_arguments)]
pub fn fit_private(
    mut model: TextClassifier,
    tokenizer: &TextTokenizer,
    texts: &[String],
    labels: &Targets,
    s: &TrainSettings,
    dp: DpSgd,
    mut cache: Option<&mut PrefixCache>,
    rng: &mut dyn RngCore,
    noise: &mut dyn FnMut(&mut [f32], f64),
) -> Result<(TextClassifier, Trained), TextError> {
    check_settings(&model, texts, labels, s)?;
    if !(dp.clip.is_finite()
        && dp.clip > 0.0
        && dp.noise_multiplier.is_finite()
        && dp.noise_multiplier >= 0.0)
    {
        return Err(TextError::Setting {
            key: "DP-SGD clip, noise multiplier",
            value: format!("{}, {}", dp.clip, dp.noise_multiplier),
            allowed: "a positive clipping norm and a noise multiplier of 0 or more",
        });
    }
    if let Some(c) = cache.as_ref() {
        check_prefix(&model, c.depth())?;
    }
    let device = model.head.weight.device();
    device.seed(s.seed);
    let mut optim = s.optimizer().init();
    let frozen = cache.as_ref().map(|_| model.encoder.valid());
    let anchor = trainable_params(&model);
    let params: Vec<(ParamId, Vec<usize>)> = anchor
        .iter()
        .map(|(id, t)| (*id, t.shape.clone()))
        .collect();
    let n = texts.len();
    if dp.lot == 0 || dp.lot > n {
        return Err(TextError::Setting {
            key: "DP-SGD lot",
            value: dp.lot.to_string(),
            allowed: "1 to the number of texts",
        });
    }
    let (q, steps, lot) = (dp.lot as f64 / n as f64, dp.steps, dp.lot as f32);
    let (mut loss_sum, mut loss_n) = (0.0f64, 0usize);
    // The device gradients live on, from a backward pass through no data: every step, even
    // one whose lot is empty by chance, is then noised and taken, as the accountant assumes.
    let gd = {
        let shape = model.head.weight.dims().to_vec();
        let mut probe =
            GradientsParams::from_grads(model.head.weight.val().sum().backward(), &model);
        match take(&mut probe, model.head.weight.id, &shape)? {
            Some((_, d)) => d,
            None => return Err(TextError::Data("DP-SGD: the head has no gradient".into())),
        }
    };
    for step in 0..steps {
        let mut sums: Vec<Vec<f32>> = params
            .iter()
            .map(|(_, shape)| vec![0.0; shape.iter().product()])
            .collect();
        for (i, text) in texts.iter().enumerate() {
            if rng.random::<f64>() >= q {
                continue;
            }
            let out = logits(
                &model,
                tokenizer,
                &[text.as_str()],
                cache.as_deref_mut(),
                frozen.as_ref(),
            )?;
            let loss = labels.loss(out, &[i]);
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                return Err(TextError::Diverged {
                    step: step + 1,
                    loss: value,
                });
            }
            loss_sum += value as f64;
            loss_n += 1;
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            let mut g = Vec::with_capacity(params.len());
            for (id, shape) in &params {
                g.push(values(&mut grads, *id, shape)?);
            }
            let norm = g
                .iter()
                .flatten()
                .map(|v| (*v as f64) * (*v as f64))
                .sum::<f64>()
                .sqrt();
            let scale = if norm > dp.clip {
                (dp.clip / norm) as f32
            } else {
                1.0
            };
            for (sum, gk) in sums.iter_mut().zip(&g) {
                for (a, b) in sum.iter_mut().zip(gk) {
                    *a += b * scale;
                }
            }
        }
        let mut update = GradientsParams::new();
        for ((id, shape), mut sum) in params.iter().zip(sums) {
            noise(&mut sum, dp.noise_multiplier * dp.clip);
            sum.iter_mut().for_each(|v| *v /= lot);
            put(&mut update, *id, shape, sum, &gd);
        }
        if s.prox_mu > 0.0 {
            // FedProx's gradient depends on no text: added after the noise, it costs nothing.
            add_proximal(&mut update, &model, &anchor, s.prox_mu)?;
        }
        model = optim.step(s.learning_rate, model, update);
    }
    Ok((
        model,
        Trained {
            last_epoch_loss: loss_sum / loss_n.max(1) as f64,
            examples: n,
            steps,
        },
    ))
}
