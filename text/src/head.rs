//! Head-only fine-tuning: the encoder (and its adapters) frozen, only the classification head
//! trained — FedPer-style personalisation (Arivazhagan et al. 2019), where the federation's
//! body is shared and each silo keeps its own head. With the body frozen, a text's pooled
//! embedding is a constant, so the embeddings are computed once, in inference mode (no
//! dropout), and the head — a linear layer — is trained on them with AdamW: a pass costs a
//! matrix product per batch instead of the encoder.

use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::classifier::TextClassifier;
use crate::prefix::PrefixCache;
use crate::targets::Targets;
use crate::tokenize::TextTokenizer;
use crate::train::{check_settings, TrainSettings, Trained};
use crate::TextError;

/// Texts embedded per forward pass.
const EMBED_BATCH: usize = 32;

/// Mean-pooled embeddings of `texts` under `model` without dropout, row-major
/// `[texts, hidden]`; through `cache`'s prefix when there is one.
pub fn embeddings(
    model: &TextClassifier,
    tokenizer: &TextTokenizer,
    texts: &[String],
    mut cache: Option<&mut PrefixCache>,
) -> Result<Vec<f32>, TextError> {
    let model = model.valid();
    let device = model.head.weight.device();
    let mut out = Vec::new();
    for chunk in texts.chunks(EMBED_BATCH) {
        let docs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let e = match cache.as_deref_mut() {
            Some(c) => {
                let (states, mask) = c.batch(&model.encoder, tokenizer, &docs, &device)?;
                model.embed_from(states, &mask, c.depth())
            }
            None => model.embed(&tokenizer.encode(&docs, &device)?),
        };
        out.extend(
            e.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| TextError::Data(format!("{e:?}")))?,
        );
    }
    Ok(out)
}

/// Trains `model`'s head alone on `texts` with `labels`, as `s` says (its `prox_mu` must be 0:
/// there is no global head to stay near). The encoder and adapters come back unchanged.
pub fn fit_head(
    model: TextClassifier,
    tokenizer: &TextTokenizer,
    texts: &[String],
    labels: &Targets,
    s: &TrainSettings,
    cache: Option<&mut PrefixCache>,
) -> Result<(TextClassifier, Trained), TextError> {
    check_settings(&model, texts, labels, s)?;
    let embedded = embeddings(&model, tokenizer, texts, cache)?;
    train_head(model, &embedded, labels, s)
}

/// Trains `model`'s head alone on `embedded` (row-major `[labels, hidden]`, from
/// [`embeddings`]) with `labels`, as `s` says — no encoder pass, so it needs neither the
/// tokenizer nor the prefix cache.
pub fn train_head(
    mut model: TextClassifier,
    embedded: &[f32],
    labels: &Targets,
    s: &TrainSettings,
) -> Result<(TextClassifier, Trained), TextError> {
    s.check()?;
    if s.prox_mu != 0.0 {
        return Err(TextError::Setting {
            key: "prox_mu",
            value: s.prox_mu.to_string(),
            allowed: "0 when only the head trains",
        });
    }
    let [hidden, outputs] = model.head.weight.dims();
    if labels.is_empty() || embedded.len() != labels.len() * hidden {
        return Err(TextError::Data(format!(
            "{} embedding values for {} labels of width {hidden}",
            embedded.len(),
            labels.len()
        )));
    }
    labels.check(outputs)?;
    let device = model.head.weight.device();
    let mut head = model.head.clone();
    let mut optim = s.optimizer().init();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(s.seed);
    let mut order: Vec<usize> = (0..labels.len()).collect();
    let (mut last, mut steps) = (0.0, 0u64);
    for _ in 0..s.epochs {
        order.shuffle(&mut rng);
        let mut sum = 0.0f64;
        for batch in order.chunks(s.batch_size) {
            let x: Vec<f32> = batch
                .iter()
                .flat_map(|i| embedded[i * hidden..(i + 1) * hidden].iter().copied())
                .collect();
            let x = Tensor::<2>::from_data(TensorData::new(x, [batch.len(), hidden]), &device);
            let loss = labels.loss(head.forward(x), batch);
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                return Err(TextError::Diverged {
                    step: steps + 1,
                    loss: value,
                });
            }
            sum += value as f64 * batch.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(s.learning_rate, head, grads);
            steps += 1;
        }
        last = sum / labels.len() as f64;
    }
    model.head = head;
    Ok((
        model,
        Trained {
            last_epoch_loss: last,
            examples: labels.len(),
            steps,
        },
    ))
}
