//! The real all-MiniLM-L6-v2 (installed by `scripts/ensure-model.sh`, which the test command
//! runs): its token ids and mean-pooled sentence embeddings agree with a reference recorded by
//! an independent NumPy implementation of BERT (`fixtures/minilm_reference.py`), alone and
//! padded in a batch; what the embeddings say about meaning holds; and fine-tuning it twice
//! gives the same values.

use std::path::PathBuf;

use burn::prelude::*;
use fedsilo_text::classifier::TextClassifier;
use fedsilo_text::pretrained::{load_encoder, ModelDir};
use fedsilo_text::tokenize::TextTokenizer;
use serde_json::Value;

fn model_dir() -> ModelDir {
    let model = ModelDir::installed(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    assert!(
        model.weights().is_file(),
        "{} has no model.safetensors: run scripts/ensure-model.sh (the test command does)",
        model.dir.display()
    );
    model
}

fn reference() -> Vec<(String, Vec<u32>, Vec<f32>)> {
    let text = include_str!("fixtures/minilm_reference.json");
    let v: Value = serde_json::from_str(text).unwrap();
    v["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let ids = s["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as u32)
                .collect();
            let e = s["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            (s["text"].as_str().unwrap().to_string(), ids, e)
        })
        .collect()
}

fn cos(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn minilm_matches_an_independent_reference_alone_and_padded() {
    let model = model_dir();
    let device = Device::flex();
    let (config, encoder) = load_encoder(&model, &device).unwrap();
    assert_eq!((config.hidden_size, config.num_hidden_layers), (384, 6));
    let tok = TextTokenizer::load(&model.tokenizer(), 128, &config).unwrap();
    let clf = TextClassifier::new(encoder, config.hidden_size, 2, &device);
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|(t, _, _)| t.as_str()).collect();
    // One batch: the shorter sentences are padded, which mean pooling must ignore.
    let batch = tok.encode(&texts, &device).unwrap();
    let [b, l] = batch.ids.dims();
    let ids: Vec<i64> = batch
        .ids
        .clone()
        .into_data()
        .convert::<i64>()
        .try_into_vec()
        .unwrap();
    let pooled: Vec<f32> = clf
        .embed(&batch)
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .unwrap();
    let h = config.hidden_size;
    let mut worst = 0.0f32;
    for (i, (text, want_ids, want)) in refs.iter().enumerate() {
        let got_ids: Vec<u32> = ids[i * l..(i + 1) * l]
            .iter()
            .filter(|&&x| x != 0)
            .map(|&x| x as u32)
            .collect();
        assert_eq!(&got_ids, want_ids, "{text}");
        let alone = tok.encode(&[text.as_str()], &device).unwrap();
        let alone: Vec<f32> = clf
            .embed(&alone)
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .unwrap();
        for (j, w) in want.iter().enumerate() {
            worst = worst
                .max((alone[j] - w).abs())
                .max((pooled[i * h + j] - w).abs());
        }
    }
    assert_eq!(b, refs.len());
    assert!(
        worst < 2e-4,
        "largest difference from the reference: {worst}"
    );
    // Meaning: eating food is nearer eating bread than riding a horse.
    let e = |i: usize| &pooled[i * h..(i + 1) * h];
    assert!(
        cos(e(0), e(1)) > 0.7 && cos(e(0), e(2)) < 0.4,
        "{} {}",
        cos(e(0), e(1)),
        cos(e(0), e(2))
    );
}

/// Fine-tuning the real model twice with the same seed, data and starting values gives the
/// same trained values, bit for bit: a federation's rounds and its references can be
/// reproduced.
#[test]
fn fine_tuning_minilm_is_reproducible() {
    use fedsilo_text::exchange::trainable;
    use fedsilo_text::lora::{LoraSettings, Target};
    use fedsilo_text::prefix::PrefixCache;
    use fedsilo_text::train::{fit_cached, TrainSettings};
    use fedsilo_text::Targets;
    let model = model_dir();
    // With the frozen prefix cached (as the silo trains) or not.
    let run = |cached: bool| {
        let device = Device::flex().autodiff();
        device.seed(5);
        let (config, encoder) = load_encoder(&model, &device).unwrap();
        let lora = LoraSettings {
            rank: 4,
            alpha: 8.0,
            targets: vec![Target::Attention, Target::FeedForward],
            layers: Some(vec![4, 5]),
        };
        let encoder = lora.apply(encoder, config.num_hidden_layers).unwrap();
        let tok = TextTokenizer::load(&model.tokenizer(), 32, &config).unwrap();
        let clf = TextClassifier::new(encoder, config.hidden_size, 2, &device);
        let texts: Vec<String> = (0..40)
            .map(|i| {
                if i % 2 == 0 {
                    format!("great tasty snack number {i}, I love it")
                } else {
                    format!("stale and awful, batch {i} went in the bin")
                }
            })
            .collect();
        let labels = Targets::Classes((0..40).map(|i| (i + 1) % 2).collect());
        let s = TrainSettings {
            epochs: 2,
            batch_size: 8,
            learning_rate: 2e-3,
            weight_decay: 0.01,
            seed: 1,
            prox_mu: 0.0,
        };
        let mut cache = cached.then(|| PrefixCache::new(4));
        let (trained, _) = fit_cached(clf, &tok, &texts, &labels, &s, cache.as_mut()).unwrap();
        trainable(&trained)
            .into_iter()
            .flat_map(|n| n.values)
            .collect::<Vec<f32>>()
    };
    for cached in [false, true] {
        let (a, b) = (run(cached), run(cached));
        let differ = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x.to_bits() != y.to_bits())
            .count();
        assert_eq!(
            differ,
            0,
            "cached {cached}: {differ} of {} values differ",
            a.len()
        );
    }
}
