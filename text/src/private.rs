//! Record-level DP-SGD (Abadi et al. 2016) on the trainable tensors: a silo protects its own
//! customers from everyone else, the coordinator included, with a text model too.
//!
//! As the tabular trainer does it: each step samples a lot by Poisson sampling (every text
//! independently with probability q = L / n, L the expected lot size), computes each sampled
//! text's gradient of the adapters and the head (one backward pass per text: burn has no
//! per-example gradients), clips it to L2 norm C over all of them together, sums, adds
//! Gaussian noise N(0, (z·C)²) to every coordinate, divides by L and takes an AdamW step —
//! `epochs · ⌈n / L⌉` steps, the schedule the privacy accountant charges. Frozen weights get no
//! gradient, so nothing about them needs protecting. The noise and the lots come from the
//! caller (fedsilo draws both from the operating system's generator), not from the plan's seed.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use rand::{Rng, RngCore};

use crate::classifier::TextClassifier;
use crate::exchange::is_trainable;
use crate::prefix::PrefixCache;
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
}

/// The lot schedule over `n` texts: sampling rate q = L / n for an expected lot size
/// L = `batch_size` (at most n), and `epochs · ⌈n / L⌉` steps.
pub fn schedule(n: usize, batch_size: usize, epochs: u32) -> (f64, u64) {
    let lot = batch_size.clamp(1, n.max(1));
    (
        lot as f64 / n.max(1) as f64,
        epochs as u64 * n.div_ceil(lot) as u64,
    )
}

/// The trainable parameters' ids and shapes, in the model's order.
struct Trainables {
    path: Vec<String>,
    out: Vec<(ParamId, Vec<usize>)>,
}

impl ModuleVisitor for Trainables {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if is_trainable(&self.path.join(".")) {
            self.out.push((p.id, p.lazy_shape().dims::<D>().to_vec()));
        }
    }
}

/// One parameter's gradient as values (zeros when it got none).
fn values(grads: &GradientsParams, id: ParamId, shape: &[usize]) -> Result<Vec<f32>, TextError> {
    let t = match shape.len() {
        1 => grads.get::<1>(id).map(|t| t.into_data()),
        2 => grads.get::<2>(id).map(|t| t.into_data()),
        d => {
            return Err(TextError::Data(format!(
                "DP-SGD: a trainable tensor of {d} dimensions"
            )))
        }
    };
    match t {
        None => Ok(vec![0.0; shape.iter().product()]),
        Some(data) => data
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| TextError::Data(format!("{e:?}"))),
    }
}

/// [`crate::train::fit_cached`] under DP-SGD (see the module documentation). `noise` adds
/// Gaussian noise of the given standard deviation to each value; `rng` draws the lots.
#[allow(clippy::too_many_arguments)]
pub fn fit_private(
    mut model: TextClassifier,
    tokenizer: &TextTokenizer,
    texts: &[String],
    labels: &[usize],
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
    let mut optim = AdamWConfig::new()
        .with_weight_decay(s.weight_decay as f32)
        .with_epsilon(1e-8)
        .init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let frozen = cache.as_ref().map(|_| model.encoder.valid());
    let mut visitor = Trainables {
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut visitor);
    let params = visitor.out;
    let n = texts.len();
    let (q, steps) = schedule(n, s.batch_size, s.epochs);
    let lot = s.batch_size.clamp(1, n) as f32;
    let (mut loss_sum, mut loss_n) = (0.0f64, 0usize);
    // The backend device of gradients, from the first one computed.
    let mut grad_device = None;
    for step in 0..steps {
        let mut sums: Vec<Vec<f32>> = params
            .iter()
            .map(|(_, shape)| vec![0.0; shape.iter().product()])
            .collect();
        for i in 0..n {
            if rng.random::<f64>() >= q {
                continue;
            }
            let out = logits(
                &model,
                tokenizer,
                &[texts[i].as_str()],
                cache.as_deref_mut(),
                frozen.as_ref(),
            )?;
            let y =
                Tensor::<1, Int>::from_data(TensorData::new(vec![labels[i] as i64], [1]), &device);
            let loss = loss_fn.forward(out, y);
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                return Err(TextError::Diverged {
                    step: step + 1,
                    loss: value,
                });
            }
            loss_sum += value as f64;
            loss_n += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            if grad_device.is_none() {
                grad_device = params.iter().find_map(|(id, shape)| match shape.len() {
                    1 => grads.get::<1>(*id).map(|t| t.device()),
                    _ => grads.get::<2>(*id).map(|t| t.device()),
                });
            }
            let g = params
                .iter()
                .map(|(id, shape)| values(&grads, *id, shape))
                .collect::<Result<Vec<_>, _>>()?;
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
        // Until the first text is sampled there is no gradient to update with: such a step
        // (its lot empty by chance, whatever the data) takes no step at all.
        let Some(gd) = grad_device.as_ref() else {
            continue;
        };
        let mut update = GradientsParams::new();
        for ((id, shape), mut sum) in params.iter().zip(sums) {
            noise(&mut sum, dp.noise_multiplier * dp.clip);
            sum.iter_mut().for_each(|v| *v /= lot);
            let data = TensorData::new(sum, shape.clone());
            match shape.len() {
                1 => update.register::<1>(*id, Tensor::from_data(data, gd)),
                _ => update.register::<2>(*id, Tensor::from_data(data, gd)),
            }
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
