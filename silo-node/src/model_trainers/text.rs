//! The built-in text classifier behind [`ModelTrainer`]: fedsilo-text's pretrained encoder
//! (its files checked against the manifest's digests), LoRA and head as the manifest's
//! `[settings]` say, AdamW at the plan's learning rate. The frozen layers below the lowest
//! adapter are computed once per text and kept for the silo's life ([`PrefixCache`]): the
//! base never changes, so a round costs only the trained layers.
//!
//! A regression (`kind = "regression"` in the manifest) has a one-output head trained on the
//! label standardised by the manifest's `mean` and `std`; its predictions and held-out
//! figures are in the label's units.
//!
//! The model and the cache sit behind one lock: training and scoring take turns (the
//! coordinator never asks for both at once; if it did, one would wait).

use std::path::Path;
use std::sync::Mutex;

use burn::prelude::*;
use fedsilo::model::manifest::{Manifest, Task};
use fedsilo::privacy::noise::{add_gaussian, secure_rng};
use fedsilo::protocol::{EvalMetrics, Personalize, TrainPlan};
use fedsilo_text::classifier::TextClassifier;
use fedsilo_text::config::EncoderConfig;
use fedsilo_text::exchange::{set_trainable, trainable, Named};
use fedsilo_text::head::{embeddings, train_head};
use fedsilo_text::prefix::PrefixCache;
use fedsilo_text::pretrained::{load_weights, ModelDir};
use fedsilo_text::private::{self, fit_private};
use fedsilo_text::tokenize::TextTokenizer;
use fedsilo_text::train::{fit_cached, predict, TrainSettings};
use fedsilo_text::Targets;

use crate::train::dp_sgd::{lot, schedule, DpSgd};

use super::recipe::TextRecipe;
use super::rows::Holdout;
use super::rows::Labels;
use super::scoring::{class_metrics, value_metrics};
use super::text_data::TextData;
use super::{DescribedTrainer, Fitted, ModelTrainer, Personalised, TrainError};

/// The files the text classifier reads from its model directory, each pinned by the manifest.
pub const ASSETS: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// Texts scored per batch.
const SCORE_BATCH: usize = 32;

/// A text classifier built from a recipe, before any data: what `fedsilo-model` writes a
/// manifest from and what every silo rebuilds.
pub struct Built {
    /// The classifier (LoRA applied, a fresh head).
    pub model: TextClassifier,
    /// Its tokenizer.
    pub tokenizer: TextTokenizer,
    /// Layers below the lowest adapter (all of them without adapters).
    pub frozen_prefix: usize,
}

/// Builds the classifier `recipe` describes over the encoder in `model_dir`, with a head of
/// `outputs` outputs (one per class; one for a regression), on an autodiff CPU device seeded
/// with `seed`.
pub fn build(
    recipe: &TextRecipe,
    model_dir: &Path,
    outputs: usize,
    seed: u64,
) -> Result<Built, TrainError> {
    let device = Device::flex().autodiff();
    device.seed(seed);
    let dir = ModelDir::new(model_dir);
    let mut config = EncoderConfig::load(&dir.config())?;
    if let Some(p) = recipe.dropout {
        config.hidden_dropout_prob = p;
    }
    let base = load_weights(&config, &dir.weights(), &device)?;
    let tokenizer = TextTokenizer::load(&dir.tokenizer(), recipe.max_length, &config)?;
    let layers = config.num_hidden_layers;
    let (encoder, frozen_prefix) = match &recipe.lora {
        Some(l) => (l.apply(base, layers)?, l.frozen_prefix()),
        None => (base, layers),
    };
    Ok(Built {
        model: TextClassifier::new(encoder, config.hidden_size, outputs, &device),
        tokenizer,
        frozen_prefix,
    })
}

struct Held {
    model: TextClassifier,
    cache: PrefixCache,
}

/// See the module documentation.
pub struct TextTrainer {
    manifest: Manifest,
    recipe: TextRecipe,
    data: TextData,
    /// The training rows' labels as the model trains on them (a regression's standardised).
    train_targets: Targets,
    tokenizer: TextTokenizer,
    held: Mutex<Held>,
}

impl std::fmt::Debug for TextTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTrainer")
            .field("manifest", &self.manifest.digest)
            .field("recipe", &self.recipe)
            .field("train", &self.data.train.len())
            .field("holdout", &self.data.holdout.len())
            .finish()
    }
}

impl TextTrainer {
    /// Checks the manifest's assets in `model_dir`, builds the model its settings describe,
    /// checks that its trainable tensors are the manifest's, and reads the silo's CSV.
    pub fn load(
        manifest: Manifest,
        model_dir: &Path,
        data: &Path,
        holdout: &Holdout,
    ) -> Result<Self, TrainError> {
        let recipe = TextRecipe::from_table(&manifest.settings)?;
        fedsilo::model::files::verify(&manifest, model_dir, &ASSETS)?;
        let built = build(&recipe, model_dir, manifest.task.outputs(), 0)?;
        check_layout(&manifest, &trainable(&built.model))?;
        let data = TextData::read(data, holdout, &manifest)?;
        Ok(TextTrainer {
            train_targets: targets(&manifest.task, &data.train.labels),
            held: Mutex::new(Held {
                model: built.model,
                cache: PrefixCache::new(built.frozen_prefix),
            }),
            tokenizer: built.tokenizer,
            manifest,
            recipe,
            data,
        })
    }

    /// The model with its trainable tensors set to `params` (the manifest's layout).
    fn with(&self, model: &TextClassifier, params: &[f32]) -> Result<TextClassifier, TrainError> {
        Ok(set_trainable(model, &unflatten(&self.manifest, params)?)?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Labels as the model trains on them: classes as they are, a regression's numbers
/// standardised by the task's `mean` and `std`.
fn targets(task: &Task, labels: &Labels) -> Targets {
    match (labels, task) {
        (Labels::Values(v), Task::Regression { mean, std }) => {
            Targets::Values(v.iter().map(|y| ((y - mean) / std) as f32).collect())
        }
        (Labels::Values(v), _) => Targets::Values(v.iter().map(|y| *y as f32).collect()),
        (Labels::Classes(c), _) => Targets::Classes(c.clone()),
    }
}

/// Scores the rows of the CSV at `path` (the manifest's text columns; no label needed) with
/// the trainable values `params` over the encoder in `model_dir`, without any training data:
/// what `silo-node score` runs with a deployed version. Class probabilities, or a
/// regression's value in the label's units, per row in the file's order.
pub fn score_file(
    manifest: &Manifest,
    model_dir: &Path,
    params: &[f32],
    path: &Path,
) -> Result<Vec<Vec<f32>>, TrainError> {
    let recipe = TextRecipe::from_table(&manifest.settings)?;
    fedsilo::model::files::verify(manifest, model_dir, &ASSETS)?;
    let built = build(&recipe, model_dir, manifest.task.outputs(), 0)?;
    check_layout(manifest, &trainable(&built.model))?;
    let model = set_trainable(&built.model, &unflatten(manifest, params)?)?;
    let texts = super::text_data::read_texts(path, manifest)?;
    let out = predict(&model, &built.tokenizer, &texts, SCORE_BATCH)?;
    Ok(in_units(&manifest.task, out))
}

/// The model's outputs in the task's terms: class probabilities as they are, a regression's
/// standardised value back in the label's units.
fn in_units(task: &Task, mut outputs: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    if let Task::Regression { mean, std } = task {
        for row in &mut outputs {
            for v in row.iter_mut() {
                *v = (mean + std * *v as f64) as f32;
            }
        }
    }
    outputs
}

/// The manifest's trainable tensors must be the model's: same names, same shapes.
pub fn check_layout(manifest: &Manifest, model: &[Named]) -> Result<(), TrainError> {
    let theirs: std::collections::BTreeMap<&str, &[usize]> = model
        .iter()
        .map(|n| (n.name.as_str(), n.shape.as_slice()))
        .collect();
    for t in &manifest.trainable {
        match theirs.get(t.name.as_str()) {
            None => {
                return Err(TrainError::Layout(format!(
                    "`{}` is not a trainable tensor of this model",
                    t.name
                )))
            }
            Some(s) if *s != t.shape.as_slice() => {
                return Err(TrainError::Layout(format!(
                    "`{}` has shape {:?} in the manifest, {s:?} in the model",
                    t.name, t.shape
                )))
            }
            Some(_) => {}
        }
    }
    if model.len() != manifest.trainable.len() {
        let listed: std::collections::BTreeSet<&str> =
            manifest.trainable.iter().map(|t| t.name.as_str()).collect();
        let extra = model
            .iter()
            .find(|n| !listed.contains(n.name.as_str()))
            .map_or("?", |n| n.name.as_str());
        return Err(TrainError::Layout(format!(
            "the model trains `{extra}`, which the manifest does not list"
        )));
    }
    Ok(())
}

/// The flat vector as named tensors, in the manifest's order.
fn unflatten(manifest: &Manifest, params: &[f32]) -> Result<Vec<Named>, TrainError> {
    let layout = manifest.described().layout();
    if params.len() != layout.len {
        return Err(TrainError::Layout(format!(
            "{} values received, the manifest's tensors hold {}",
            params.len(),
            layout.len
        )));
    }
    Ok(layout
        .tensors
        .iter()
        .map(|t| Named {
            name: t.name.clone(),
            shape: t.shape.clone(),
            values: params[t.offset..t.offset + t.len()].to_vec(),
        })
        .collect())
}

/// Where the head's tensors (`head.*`) sit in the flat vector, in the manifest's order.
fn head_ranges(manifest: &Manifest) -> Vec<std::ops::Range<usize>> {
    manifest
        .described()
        .layout()
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("head."))
        .map(|t| t.offset..t.offset + t.len())
        .collect()
}

/// Named tensors as the flat vector, in the manifest's order.
fn flatten(manifest: &Manifest, named: Vec<Named>) -> Result<Vec<f32>, TrainError> {
    let mut by_name: std::collections::HashMap<String, Vec<f32>> =
        named.into_iter().map(|n| (n.name, n.values)).collect();
    let mut out = Vec::new();
    for t in &manifest.trainable {
        let v = by_name
            .remove(&t.name)
            .ok_or_else(|| TrainError::Layout(format!("the trained model lost `{}`", t.name)))?;
        out.extend(v);
    }
    Ok(out)
}

impl TextTrainer {
    /// fedsilo-text's settings for `plan`, shuffled with `seed`.
    fn settings(&self, plan: &TrainPlan, seed: u64) -> TrainSettings {
        TrainSettings {
            epochs: plan.epochs,
            batch_size: plan.batch_size as usize,
            learning_rate: plan.learning_rate as f64,
            weight_decay: self.recipe.weight_decay,
            seed,
            prox_mu: plan.prox_mu as f64,
        }
    }
}

impl ModelTrainer for TextTrainer {
    fn train_rows(&self) -> usize {
        self.data.train.len()
    }

    /// Everything fedsilo-text would refuse before the first step (a learning rate that, with
    /// the manifest's weight decay, would flip the weights' sign, included), so that the
    /// silo's DP-SGD never charges a round that cannot train.
    fn check_plan(&self, plan: &TrainPlan) -> Result<(), TrainError> {
        Ok(self.settings(plan, 0).check()?)
    }

    fn train(
        &self,
        base: &[f32],
        plan: &TrainPlan,
        seed: u64,
        dp: Option<DpSgd>,
    ) -> Result<Fitted, TrainError> {
        let settings = self.settings(plan, seed);
        let mut held = self.lock();
        let model = self.with(&held.model, base)?;
        let (texts, labels) = (&self.data.train.texts, &self.train_targets);
        let (trained, out) = match dp {
            None => fit_cached(
                model,
                &self.tokenizer,
                texts,
                labels,
                &settings,
                Some(&mut held.cache),
            )?,
            Some(dp) => fit_private(
                model,
                &self.tokenizer,
                texts,
                labels,
                &settings,
                {
                    // The schedule the silo's ledger was charged with, from the same function.
                    let (_, steps) = schedule(texts.len(), settings.batch_size, settings.epochs);
                    private::DpSgd {
                        clip: dp.clip as f64,
                        noise_multiplier: dp.noise_multiplier as f64,
                        lot: lot(texts.len(), settings.batch_size),
                        steps,
                    }
                },
                Some(&mut held.cache),
                &mut secure_rng(),
                &mut |v, std| add_gaussian(v, std, &mut secure_rng()),
            )?,
        };
        Ok(Fitted::from_trained(
            base,
            &flatten(&self.manifest, trainable(&trained))?,
            out.last_epoch_loss,
            out.examples,
        ))
    }

    fn personalise(
        &self,
        params: &[f32],
        own: Option<&[f32]>,
        p: &Personalize,
    ) -> Result<Option<Personalised>, TrainError> {
        let head = head_ranges(&self.manifest);
        let mut start = params.to_vec();
        if let Some(own) = own.filter(|h| h.len() == head.iter().map(|r| r.len()).sum::<usize>()) {
            let mut from = own;
            for r in &head {
                let (this, rest) = from.split_at(r.len());
                start[r.clone()].copy_from_slice(this);
                from = rest;
            }
        }
        let settings = TrainSettings {
            epochs: p.epochs,
            batch_size: p.batch_size.max(1) as usize,
            learning_rate: p.learning_rate as f64,
            weight_decay: self.recipe.weight_decay,
            seed: p.seed,
            prox_mu: 0.0,
        };
        settings.check()?;
        // The lock only while the cache is used: the head trains on the embeddings without it.
        let mut held = self.lock();
        let model = self.with(&held.model, &start)?;
        let embedded = embeddings(
            &model,
            &self.tokenizer,
            &self.data.train.texts,
            Some(&mut held.cache),
        )?;
        drop(held);
        let (trained, _) = train_head(model, &embedded, &self.train_targets, &settings)?;
        let params = flatten(&self.manifest, trainable(&trained))?;
        let head = head
            .iter()
            .flat_map(|r| params[r.clone()].to_vec())
            .collect();
        Ok(Some(Personalised { params, head }))
    }

    fn evaluate(&self, params: &[f32]) -> Result<EvalMetrics, TrainError> {
        let held = self.lock();
        let model = self.with(&held.model, params)?;
        drop(held);
        let out = predict(
            &model,
            &self.tokenizer,
            &self.data.holdout.texts,
            SCORE_BATCH,
        )?;
        let out = in_units(&self.manifest.task, out);
        Ok(match &self.data.holdout.labels {
            Labels::Classes(c) => class_metrics(&out, c),
            Labels::Values(v) => {
                let predicted: Vec<f64> = out
                    .iter()
                    .map(|r| r.first().map_or(f64::NAN, |v| *v as f64))
                    .collect();
                value_metrics(&predicted, v)
            }
        })
    }

    fn predict(&self, params: &[f32], path: &Path) -> Result<Vec<Vec<f32>>, TrainError> {
        let texts = super::text_data::read_texts(path, &self.manifest)?;
        let held = self.lock();
        let model = self.with(&held.model, params)?;
        drop(held);
        let out = predict(&model, &self.tokenizer, &texts, SCORE_BATCH)?;
        Ok(in_units(&self.manifest.task, out))
    }
}

impl DescribedTrainer for TextTrainer {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn unusable(&self) -> Option<String> {
        self.data.single_class(&self.manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo_text::lora::LoraSettings;

    /// The recipe's dropout replaces the model's own; without one, the model's config holds.
    #[test]
    fn the_recipes_dropout_replaces_the_models_own() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../.cache/models/all-MiniLM-L6-v2");
        assert!(
            dir.join("config.json").is_file(),
            "run scripts/ensure-model.sh"
        );
        let recipe = |dropout| TextRecipe {
            base: "all-MiniLM-L6-v2".into(),
            max_length: 16,
            lora: Some(LoraSettings {
                rank: 2,
                alpha: 4.0,
                targets: vec![fedsilo_text::lora::Target::Attention],
                layers: Some(vec![5]),
            }),
            weight_decay: 0.0,
            dropout,
        };
        let prob = |dropout| {
            build(&recipe(dropout), &dir, 2, 0)
                .unwrap()
                .model
                .encoder
                .embeddings
                .dropout
                .prob
        };
        assert_eq!(prob(Some(0.0)), 0.0);
        assert_eq!(prob(None), 0.1, "MiniLM's hidden_dropout_prob");
    }
}
