//! Fine-tuning and scoring. Training is plain mini-batch AdamW on the task's loss (the
//! cross-entropy of a classifier's logits, the squared error of a regression's output: see
//! [`crate::targets`]), shuffled by a seeded generator (the same seed, data and model give the same
//! batches); frozen weights get no gradient and no optimiser state. A fresh optimiser per call:
//! a federated round starts from the global model, not from a silo's old moments. The device's
//! generator is seeded too (dropout), and a loss that stops being a number ends training with
//! an error instead of sending a broken update.

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::classifier::TextClassifier;
use crate::prefix::PrefixCache;
use crate::proximal::{add_proximal, trainable_params};
use crate::targets::Targets;
use crate::tokenize::TextTokenizer;
use crate::TextError;

/// How to train.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    /// Passes over the data.
    pub epochs: u32,
    /// Examples per step.
    pub batch_size: usize,
    /// AdamW's learning rate.
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Seed of the shuffling.
    pub seed: u64,
    /// FedProx's μ ([`crate::proximal`]; 0: plain training).
    pub prox_mu: f64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            epochs: 1,
            batch_size: 16,
            learning_rate: 1e-3,
            weight_decay: 0.01,
            seed: 0,
            prox_mu: 0.0,
        }
    }
}

/// What training did.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    /// Mean loss of the last epoch.
    pub last_epoch_loss: f64,
    /// Examples seen per epoch.
    pub examples: usize,
    /// Optimiser steps taken.
    pub steps: u64,
}

fn check(texts: &[String], labels: &Targets, outputs: usize) -> Result<(), TextError> {
    if texts.len() != labels.len() {
        return Err(TextError::Data(format!(
            "{} texts but {} labels",
            texts.len(),
            labels.len()
        )));
    }
    if texts.is_empty() {
        return Err(TextError::Data("no training example".into()));
    }
    labels.check(outputs)
}

/// Trains `model` (on an autodiff device) on `texts` with `labels`.
pub fn fit(
    model: TextClassifier,
    tokenizer: &TextTokenizer,
    texts: &[String],
    labels: &Targets,
    s: &TrainSettings,
) -> Result<(TextClassifier, Trained), TextError> {
    fit_cached(model, tokenizer, texts, labels, s, None)
}

/// [`fit`], running only the layers above `cache`'s frozen prefix (see [`crate::prefix`]);
/// the prefix's states are taken from the cache, and computed into it when missing.
pub fn fit_cached(
    mut model: TextClassifier,
    tokenizer: &TextTokenizer,
    texts: &[String],
    labels: &Targets,
    s: &TrainSettings,
    mut cache: Option<&mut PrefixCache>,
) -> Result<(TextClassifier, Trained), TextError> {
    check_settings(&model, texts, labels, s)?;
    let device = model.head.weight.device();
    device.seed(s.seed);
    let mut optim = s.optimizer().init();
    if let Some(c) = cache.as_ref() {
        check_prefix(&model, c.depth())?;
    }
    // An inference-mode copy (no dropout, no gradients) computes the prefixes.
    let frozen = cache.as_ref().map(|_| model.encoder.valid());
    let anchor = (s.prox_mu > 0.0).then(|| trainable_params(&model));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s.seed);
    let mut order: Vec<usize> = (0..texts.len()).collect();
    let (mut last, mut steps) = (0.0, 0u64);
    for _ in 0..s.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut n) = (0.0f64, 0usize);
        for batch in order.chunks(s.batch_size) {
            let docs: Vec<&str> = batch.iter().map(|i| texts[*i].as_str()).collect();
            let logits = logits(
                &model,
                tokenizer,
                &docs,
                cache.as_deref_mut(),
                frozen.as_ref(),
            )?;
            let loss = labels.loss(logits, batch);
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                return Err(TextError::Diverged {
                    step: steps + 1,
                    loss: value,
                });
            }
            sum += value as f64 * batch.len() as f64;
            n += batch.len();
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            if let Some(a) = &anchor {
                add_proximal(&mut grads, &model, a, s.prox_mu)?;
            }
            model = optim.step(s.learning_rate, model, grads);
            steps += 1;
        }
        last = sum / n.max(1) as f64;
    }
    Ok((
        model,
        Trained {
            last_epoch_loss: last,
            examples: texts.len(),
            steps,
        },
    ))
}

/// The logits of `docs`: from the cached prefix's states when there is a cache (`frozen`
/// computes missing ones), else through the whole model.
pub(crate) fn logits(
    model: &TextClassifier,
    tokenizer: &TextTokenizer,
    docs: &[&str],
    cache: Option<&mut PrefixCache>,
    frozen: Option<&crate::encoder::Encoder>,
) -> Result<Tensor<2>, TextError> {
    let device = model.head.weight.device();
    Ok(match (cache, frozen) {
        (Some(c), Some(f)) => {
            let (states, mask) = c.batch(f, tokenizer, docs, &device)?;
            model.forward_from(states, &mask, c.depth())
        }
        _ => model.forward(&tokenizer.encode(docs, &device)?),
    })
}

/// Checks `s` for training on `texts` with `labels` under `model`'s head.
pub(crate) fn check_settings(
    model: &TextClassifier,
    texts: &[String],
    labels: &Targets,
    s: &TrainSettings,
) -> Result<(), TextError> {
    let outputs = model.head.weight.dims()[1];
    check(texts, labels, outputs)?;
    s.check()
}

impl TrainSettings {
    /// AdamW with these settings' decoupled weight decay (every trainer here uses it: plain,
    /// DP-SGD and head-only).
    pub(crate) fn optimizer(&self) -> AdamWConfig {
        AdamWConfig::new()
            .with_weight_decay(self.weight_decay as f32)
            .with_epsilon(1e-8)
    }

    /// Whether these settings can train at all, whatever the data: at least one epoch and
    /// example per step, a positive learning rate, a weight decay that does not flip the
    /// weights' sign (learning rate × weight decay below 1), μ of 0 or more.
    pub fn check(&self) -> Result<(), TextError> {
        let s = self;
        if s.batch_size == 0 || s.epochs == 0 {
            return Err(TextError::Setting {
                key: "batch_size, epochs",
                value: format!("{}, {}", s.batch_size, s.epochs),
                allowed: "at least 1 each",
            });
        }
        if !(s.learning_rate.is_finite() && s.learning_rate > 0.0) {
            return Err(TextError::Setting {
                key: "learning_rate",
                value: s.learning_rate.to_string(),
                allowed: "a positive number",
            });
        }
        if !(s.weight_decay.is_finite()
            && s.weight_decay >= 0.0
            && s.learning_rate * s.weight_decay < 1.0)
        {
            return Err(TextError::Setting {
                key: "weight_decay",
                value: s.weight_decay.to_string(),
                allowed: "0 or more, with learning_rate × weight_decay below 1",
            });
        }
        if !(s.prox_mu.is_finite() && s.prox_mu >= 0.0) {
            return Err(TextError::Setting {
                key: "prox_mu",
                value: s.prox_mu.to_string(),
                allowed: "0 (plain training) or a positive number",
            });
        }
        Ok(())
    }
}

/// A cached prefix may only cover layers without adapters: above them, adapters would be run
/// frozen and never train.
pub(crate) fn check_prefix(model: &TextClassifier, depth: usize) -> Result<(), TextError> {
    if depth > model.encoder.depth() {
        return Err(TextError::Setting {
            key: "prefix depth",
            value: depth.to_string(),
            allowed: "at most the encoder's number of layers",
        });
    }
    let lowest = crate::exchange::trainable(model)
        .iter()
        .filter_map(|n| {
            n.name
                .strip_prefix("encoder.encoder.layers.")
                .and_then(|r| r.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
        })
        .min();
    match lowest {
        Some(l) if depth > l => Err(TextError::Setting {
            key: "prefix depth",
            value: depth.to_string(),
            allowed: "at most the lowest layer with adapters (LoraSettings::frozen_prefix)",
        }),
        _ => Ok(()),
    }
}

/// Class probabilities of `texts`, `batch_size` at a time, without dropout — or, from a
/// regression's single-output head, its (standardised) value in a row of one.
pub fn predict(
    model: &TextClassifier,
    tokenizer: &TextTokenizer,
    texts: &[String],
    batch_size: usize,
) -> Result<Vec<Vec<f32>>, TextError> {
    let model = model.valid();
    let device = model.head.weight.device();
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(batch_size.max(1)) {
        let docs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let tokens = tokenizer.encode(&docs, &device)?;
        let outputs = model.forward(&tokens);
        let p = if outputs.dims()[1] == 1 {
            outputs
        } else {
            burn::tensor::activation::softmax(outputs, 1)
        };
        let [b, c] = p.dims();
        let v = p
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| TextError::Data(format!("{e:?}")))?;
        out.extend((0..b).map(|i| v[i * c..(i + 1) * c].to_vec()));
    }
    Ok(out)
}
