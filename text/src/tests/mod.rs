//! Tests on a tiny BERT written the way Hugging Face writes one (random weights, real names and
//! layouts) and a tiny WordPiece tokenizer: loading, LoRA, gradients against finite
//! differences, training, and the exchange of trainable tensors. `pretrained_minilm.rs` runs
//! the real all-MiniLM-L6-v2.

use std::collections::BTreeMap;
use std::path::Path;

use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};

use crate::classifier::TextClassifier;
use crate::config::EncoderConfig;
use crate::exchange::{set_trainable, trainable, Named};
use crate::lora::{LoraSettings, Target};
use crate::pretrained::{load_encoder, ModelDir};
use crate::tokenize::TextTokenizer;
use crate::train::{fit, predict, TrainSettings};
use crate::TextError;

const WORDS: [&str; 16] = [
    "good",
    "great",
    "excellent",
    "tasty",
    "love",
    "fresh",
    "fine",
    "nice",
    "bad",
    "awful",
    "terrible",
    "stale",
    "hate",
    "broken",
    "poor",
    "the",
];

/// Tensors by name: shape and values.
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

pub(crate) fn tiny_config() -> EncoderConfig {
    EncoderConfig {
        vocab_size: 4 + WORDS.len(),
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 32,
        max_position_embeddings: 32,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        hidden_dropout_prob: 0.0,
        hidden_act: "gelu".into(),
        model_type: "bert".into(),
        position_embedding_type: "absolute".into(),
    }
}

/// The tensors of a BERT of `c` under Hugging Face's names and PyTorch's layouts.
fn hf_tensors(c: &EncoderConfig, seed: u64) -> Tensors {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut t = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>, around: f32| {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|_| around + rng.random_range(-0.2f32..0.2))
            .collect();
        t.insert(name, (shape, v));
    };
    let (h, f) = (c.hidden_size, c.intermediate_size);
    add(
        "embeddings.word_embeddings.weight".into(),
        vec![c.vocab_size, h],
        0.0,
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        vec![c.max_position_embeddings, h],
        0.0,
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        vec![c.type_vocab_size, h],
        0.0,
    );
    add("embeddings.LayerNorm.weight".into(), vec![h], 1.0);
    add("embeddings.LayerNorm.bias".into(), vec![h], 0.0);
    for i in 0..c.num_hidden_layers {
        let l = format!("encoder.layer.{i}");
        for p in ["query", "key", "value"] {
            add(format!("{l}.attention.self.{p}.weight"), vec![h, h], 0.0);
            add(format!("{l}.attention.self.{p}.bias"), vec![h], 0.0);
        }
        add(
            format!("{l}.attention.output.dense.weight"),
            vec![h, h],
            0.0,
        );
        add(format!("{l}.attention.output.dense.bias"), vec![h], 0.0);
        add(
            format!("{l}.attention.output.LayerNorm.weight"),
            vec![h],
            1.0,
        );
        add(format!("{l}.attention.output.LayerNorm.bias"), vec![h], 0.0);
        add(format!("{l}.intermediate.dense.weight"), vec![f, h], 0.0);
        add(format!("{l}.intermediate.dense.bias"), vec![f], 0.0);
        add(format!("{l}.output.dense.weight"), vec![h, f], 0.0);
        add(format!("{l}.output.dense.bias"), vec![h], 0.0);
        add(format!("{l}.output.LayerNorm.weight"), vec![h], 1.0);
        add(format!("{l}.output.LayerNorm.bias"), vec![h], 0.0);
    }
    add("pooler.dense.weight".into(), vec![h, h], 0.0);
    t
}

fn write_safetensors(path: &Path, t: &Tensors) {
    let bytes: BTreeMap<&String, Vec<u8>> = t
        .iter()
        .map(|(k, (_, v))| (k, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(&String, TensorView)> = t
        .iter()
        .map(|(k, (s, _))| {
            (
                k,
                TensorView::new(Dtype::F32, s.clone(), &bytes[k]).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn tokenizer_json() -> String {
    let mut vocab = vec![
        "\"[PAD]\":0".to_string(),
        "\"[UNK]\":1".into(),
        "\"[CLS]\":2".into(),
        "\"[SEP]\":3".into(),
    ];
    vocab.extend(
        WORDS
            .iter()
            .enumerate()
            .map(|(i, w)| format!("\"{w}\":{}", i + 4)),
    );
    format!(
        r###"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
"normalizer":{{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":true}},
"pre_tokenizer":{{"type":"BertPreTokenizer"}},
"post_processor":{{"type":"BertProcessing","sep":["[SEP]",3],"cls":["[CLS]",2]}},
"decoder":null,
"model":{{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,"vocab":{{{}}}}}}}"###,
        vocab.join(",")
    )
}

/// A model directory with a tiny BERT; returns it with the tensors written.
fn tiny_model_dir(dir: &Path, seed: u64) -> (ModelDir, Tensors) {
    let c = tiny_config();
    std::fs::write(
        dir.join("config.json"),
        format!(
            r#"{{"model_type":"bert","vocab_size":{},"hidden_size":{},"num_hidden_layers":{},"num_attention_heads":{},"intermediate_size":{},"max_position_embeddings":{},"type_vocab_size":2,"layer_norm_eps":1e-12,"hidden_dropout_prob":0.0,"hidden_act":"gelu"}}"#,
            c.vocab_size,
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.intermediate_size,
            c.max_position_embeddings
        ),
    )
    .unwrap();
    let t = hf_tensors(&c, seed);
    write_safetensors(&dir.join("model.safetensors"), &t);
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    (ModelDir::new(dir), t)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn hugging_face_weights_load_under_their_names_transposed_where_burn_wants_it() {
    let dir = tempfile::tempdir().unwrap();
    let (model, t) = tiny_model_dir(dir.path(), 1);
    let device = Device::flex();
    let (c, enc) = load_encoder(&model, &device).unwrap();
    assert_eq!(c, tiny_config());
    // PyTorch stores a linear weight [out, in]; burn [in, out].
    let (shape, file) = &t["encoder.layer.1.attention.self.key.weight"];
    let got = values(enc.encoder.layers[1].mha.key.weight.val());
    let (o, i) = (shape[0], shape[1]);
    for r in 0..o {
        for k in 0..i {
            assert_eq!(got[k * o + r], file[r * i + k]);
        }
    }
    let (_, ffn) = &t["encoder.layer.0.intermediate.dense.bias"];
    assert_eq!(
        &values(
            enc.encoder.layers[0]
                .pwff
                .linear_inner
                .bias
                .as_ref()
                .unwrap()
                .val()
        ),
        ffn
    );
    let (_, gamma) = &t["encoder.layer.0.output.LayerNorm.weight"];
    assert_eq!(&values(enc.encoder.layers[0].norm_2.gamma.val()), gamma);
    let (_, words) = &t["embeddings.word_embeddings.weight"];
    assert_eq!(&values(enc.embeddings.word_embeddings.weight.val()), words);
}

#[test]
fn a_missing_or_misshapen_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (model, mut t) = tiny_model_dir(dir.path(), 2);
    let device = Device::flex();
    t.remove("encoder.layer.1.output.dense.bias");
    write_safetensors(&model.weights(), &t);
    let e = load_encoder(&model, &device).unwrap_err();
    assert!(matches!(e, TextError::Weights { .. }), "{e}");
    assert!(
        e.to_string().contains("layers.1.pwff.linear_outer.bias"),
        "{e}"
    );
    let (model, mut t) = tiny_model_dir(dir.path(), 2);
    t.insert(
        "encoder.layer.0.attention.self.query.weight".into(),
        (vec![3, 3], vec![0.0; 9]),
    );
    write_safetensors(&model.weights(), &t);
    let e = load_encoder(&model, &device).unwrap_err();
    assert!(matches!(e, TextError::Weights { .. }), "{e}");
    assert!(e.to_string().contains("layers.0.mha.query.weight"), "{e}");
    // A config of another architecture is refused, naming the key.
    std::fs::write(model.config(), r#"{"model_type":"gpt2","vocab_size":1,"hidden_size":1,"num_hidden_layers":1,"num_attention_heads":1,"intermediate_size":1,"max_position_embeddings":1}"#).unwrap();
    let e = load_encoder(&model, &device).unwrap_err();
    assert!(e.to_string().contains("model_type"), "{e}");
    // Sizes that would exhaust memory before a weight is read, and relative positions.
    for (json, key) in [
        (r#""num_hidden_layers":1048576"#, "num_hidden_layers"),
        (
            r#""position_embedding_type":"relative_key""#,
            "position_embedding_type",
        ),
    ] {
        std::fs::write(model.config(), format!(r#"{{"vocab_size":8,"hidden_size":4,"num_hidden_layers":1,"num_attention_heads":1,"intermediate_size":4,"max_position_embeddings":8,{json}}}"#)).unwrap();
        let e = load_encoder(&model, &device).unwrap_err();
        assert!(
            matches!(e, TextError::Config { .. }) && e.to_string().contains(key),
            "{e}"
        );
    }
}

/// Rank-2 adapters (alpha 4) on both projections of `layers` (every layer if `None`).
fn tiny_lora(layers: Option<Vec<usize>>) -> LoraSettings {
    LoraSettings {
        rank: 2,
        alpha: 4.0,
        layers,
        ..LoraSettings::default()
    }
}

fn classifier(dir: &Path, lora: &LoraSettings, device: &Device) -> (TextClassifier, TextTokenizer) {
    with_outputs(dir, lora, device, 2)
}

/// The tiny model with a head of `outputs` outputs (1: a regression).
fn with_outputs(
    dir: &Path,
    lora: &LoraSettings,
    device: &Device,
    outputs: usize,
) -> (TextClassifier, TextTokenizer) {
    let (model, _) = tiny_model_dir(dir, 3);
    let (c, enc) = load_encoder(&model, device).unwrap();
    let enc = lora.apply(enc, c.num_hidden_layers).unwrap();
    let tok = TextTokenizer::load(&model.tokenizer(), 16, &c).unwrap();
    (
        TextClassifier::new(enc, c.hidden_size, outputs, device),
        tok,
    )
}

#[test]
fn a_tokenizer_that_does_not_fit_its_encoder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = tiny_model_dir(dir.path(), 4);
    let c = tiny_config();
    // Longer than the position embeddings: the ids would index outside them.
    let e = TextTokenizer::load(&model.tokenizer(), c.max_position_embeddings + 1, &c).unwrap_err();
    assert!(
        matches!(
            e,
            TextError::Setting {
                key: "max_length",
                ..
            }
        ),
        "{e}"
    );
    // Another model's tokenizer: more tokens than the encoder embeds.
    let small = EncoderConfig {
        vocab_size: 5,
        ..tiny_config()
    };
    let e = TextTokenizer::load(&model.tokenizer(), 16, &small).unwrap_err();
    assert!(matches!(e, TextError::Tokenizer { .. }), "{e}");
    assert!(TextTokenizer::load(&model.tokenizer(), 16, &c).is_ok());
}

fn toy_data() -> (Vec<String>, Vec<usize>) {
    let pos = [
        "good great",
        "excellent tasty",
        "love the fresh",
        "nice fine",
        "great love",
    ];
    let neg = [
        "bad awful",
        "terrible stale",
        "hate the broken",
        "poor bad",
        "awful hate",
    ];
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for (p, n) in pos.iter().zip(neg) {
        texts.push(p.to_string());
        labels.push(1);
        texts.push(n.to_string());
        labels.push(0);
    }
    (texts, labels)
}

#[test]
fn only_the_adapters_and_the_head_train_and_the_loss_falls() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex().autodiff();
    let lora = tiny_lora(None);
    let (model, tok) = classifier(dir.path(), &lora, &device);
    let names: Vec<String> = trainable(&model).into_iter().map(|n| n.name).collect();
    // 2 layers × (4 attention + 2 feed-forward) projections × (A, B), and the head's weight and bias.
    assert_eq!(names.len(), 2 * 6 * 2 + 2, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.contains(".lora.") || n.starts_with("head.")),
        "{names:?}"
    );
    let frozen_before = values(model.encoder.embeddings.word_embeddings.weight.val());
    let key_before = values(model.encoder.encoder.layers[0].mha.key.weight.base());
    let (texts, labels) = toy_data();
    let targets = crate::Targets::Classes(labels.clone());
    let s = TrainSettings {
        epochs: 30,
        batch_size: 4,
        learning_rate: 0.01,
        weight_decay: 0.0,
        seed: 7,
        prox_mu: 0.0,
    };
    let (_, first) = fit(
        model.clone(),
        &tok,
        &texts,
        &targets,
        &TrainSettings {
            epochs: 1,
            ..s.clone()
        },
    )
    .unwrap();
    let (trained, report) = fit(model, &tok, &texts, &targets, &s).unwrap();
    assert_eq!(report.examples, 10);
    assert!(
        report.last_epoch_loss < first.last_epoch_loss / 3.0,
        "first epoch {first:?}, last {report:?}"
    );
    assert_eq!(report.steps, 30 * 3);
    assert!(report.last_epoch_loss < 0.2, "{report:?}");
    assert_eq!(
        values(trained.encoder.embeddings.word_embeddings.weight.val()),
        frozen_before
    );
    assert_eq!(
        values(trained.encoder.encoder.layers[0].mha.key.weight.base()),
        key_before
    );
    let p = predict(&trained, &tok, &texts, 4).unwrap();
    for (probs, y) in p.iter().zip(&labels) {
        assert!(probs[*y] > 0.5, "{probs:?} for class {y}");
    }
}

#[test]
fn gradients_match_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex().autodiff();
    let lora = LoraSettings {
        rank: 2,
        alpha: 2.0,
        targets: vec![Target::Attention],
        layers: Some(vec![1]),
    };
    let (model, tok) = classifier(dir.path(), &lora, &device);
    // B starts at zero, which makes A's gradient zero: give both factors values first.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let start: Vec<Named> = trainable(&model)
        .into_iter()
        .map(|mut n| {
            n.values
                .iter_mut()
                .for_each(|v| *v = rng.random_range(-0.5f32..0.5));
            n
        })
        .collect();
    let model = set_trainable(&model, &start).unwrap();
    let (texts, labels) = toy_data();
    let docs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens = tok.encode(&docs, &device).unwrap();
    let y: Vec<i64> = labels.iter().map(|l| *l as i64).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(y, [labels.len()]), &device);
    let ce = burn::nn::loss::CrossEntropyLossConfig::new().init(&device);
    let loss_of = |m: &TextClassifier| -> f64 {
        let l: f32 = ce.forward(m.forward(&tokens), y.clone()).into_scalar();
        l as f64
    };
    let loss = ce.forward(model.forward(&tokens), y.clone());
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let a = &model.encoder.encoder.layers[1].mha.value.weight;
    let adapter = a
        .adapter()
        .expect("an adapter on layer 1's value projection");
    let ga: Vec<f32> = values(grads.get::<2>(adapter.a.id).unwrap());
    let gh: Vec<f32> = values(grads.get::<2>(model.head.weight.id).unwrap());
    // Not a vacuous comparison: the checked entries have gradients well away from zero.
    assert!(
        [0usize, 3, 7]
            .iter()
            .all(|i| ga[*i].abs() > 1e-4 && gh[*i].abs() > 1e-4),
        "{ga:?} {gh:?}"
    );
    let name_a = "encoder.encoder.layers.1.mha.value.weight.lora.a";
    let name_h = "head.weight";
    for (name, g) in [(name_a, &ga), (name_h, &gh)] {
        for i in [0usize, 3, 7] {
            let eps = 1e-2f32;
            let shift = |d: f32| {
                let mut v = start.clone();
                let n = v.iter_mut().find(|n| n.name == name).unwrap();
                n.values[i] += d;
                loss_of(&set_trainable(&model, &v).unwrap())
            };
            let numeric = (shift(eps) - shift(-eps)) / (2.0 * eps as f64);
            let analytic = g[i] as f64;
            let tol = 2e-2 * analytic.abs().max(numeric.abs()).max(1e-2);
            assert!(
                (numeric - analytic).abs() <= tol,
                "{name}[{i}]: numeric {numeric}, autodiff {analytic}"
            );
        }
    }
}

#[test]
fn trainable_values_round_trip_and_bad_ones_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex().autodiff();
    let (model, tok) = classifier(dir.path(), &LoraSettings::default(), &device);
    let mut out = trainable(&model);
    out.iter_mut().for_each(|n| {
        n.values
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i % 7) as f32 * 0.01)
    });
    let moved = set_trainable(&model, &out).unwrap();
    assert_eq!(trainable(&moved), out);
    let (texts, _) = toy_data();
    assert_ne!(
        predict(&moved, &tok, &texts, 5).unwrap(),
        predict(&model, &tok, &texts, 5).unwrap()
    );
    let mut missing = out.clone();
    let gone = missing.remove(3).name;
    let e = set_trainable(&model, &missing).unwrap_err();
    assert!(
        matches!(&e, TextError::Exchange { name, .. } if *name == gone),
        "{e}"
    );
    let mut shaped = out.clone();
    shaped[0].shape = vec![1, shaped[0].values.len()];
    assert!(set_trainable(&model, &shaped)
        .unwrap_err()
        .to_string()
        .contains("shape"));
    let mut nan = out.clone();
    nan[1].values[2] = f32::NAN;
    assert!(set_trainable(&model, &nan)
        .unwrap_err()
        .to_string()
        .contains("not finite"));
    let mut extra = out.clone();
    extra.push(Named {
        name: "encoder.embeddings.word_embeddings.weight".into(),
        shape: vec![1],
        values: vec![0.0],
    });
    let e = set_trainable(&model, &extra).unwrap_err();
    assert!(e.to_string().contains("not a trainable tensor"), "{e}");
    let mut huge = out.clone();
    huge[2].values[0] = 1e9;
    let e = set_trainable(&model, &huge).unwrap_err();
    assert!(e.to_string().contains("beyond"), "{e}");
    // A refusal leaves the model as it was.
    assert_eq!(
        trainable(&model),
        trainable(&set_trainable(&model, &trainable(&model)).unwrap())
    );
    // The same tensors on a device without autodiff (where burn tracks no gradient).
    let plain = classifier(dir.path(), &LoraSettings::default(), &Device::flex()).0;
    let names = |m: &TextClassifier| trainable(m).into_iter().map(|n| n.name).collect::<Vec<_>>();
    assert_eq!(names(&plain), names(&model));
    assert!(!names(&plain).is_empty());
}

#[test]
fn a_diverging_run_is_an_error_not_an_update() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex().autodiff();
    let (model, tok) = classifier(dir.path(), &LoraSettings::default(), &device);
    let (texts, labels) = toy_data();
    let targets = crate::Targets::Classes(labels.clone());
    let s = TrainSettings {
        epochs: 20,
        batch_size: 2,
        learning_rate: 1e38,
        weight_decay: 0.0,
        seed: 1,
        prox_mu: 0.0,
    };
    let e = fit(model.clone(), &tok, &texts, &targets, &s).unwrap_err();
    assert!(matches!(e, TextError::Diverged { .. }), "{e}");
    let wd = TrainSettings {
        learning_rate: 0.1,
        weight_decay: 20.0,
        ..s
    };
    let e = fit(model, &tok, &texts, &targets, &wd).unwrap_err();
    assert!(
        matches!(
            e,
            TextError::Setting {
                key: "weight_decay",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn lora_settings_are_checked_and_select_the_asked_projections() {
    let s = LoraSettings {
        targets: vec![Target::FeedForward],
        layers: Some(vec![0, 5]),
        ..LoraSettings::default()
    };
    let re = regex_lite(&s.pattern());
    assert!(re("encoder.layers.5.pwff.linear_inner.weight"));
    assert!(!re("encoder.layers.1.pwff.linear_inner.weight"));
    assert!(!re("encoder.layers.0.mha.query.weight"));
    assert!(!re("encoder.layers.0.pwff.linear_inner.bias"));
    assert!(matches!(
        s.check(4),
        Err(TextError::Setting {
            key: "lora.layers",
            ..
        })
    ));
    assert!(s.check(6).is_ok());
    let none = LoraSettings {
        layers: Some(vec![]),
        ..LoraSettings::default()
    };
    assert!(matches!(
        none.check(6),
        Err(TextError::Setting {
            key: "lora.layers",
            ..
        })
    ));
    let zero = LoraSettings {
        rank: 0,
        ..LoraSettings::default()
    };
    assert!(matches!(
        zero.check(6),
        Err(TextError::Setting {
            key: "lora.rank",
            ..
        })
    ));
}

/// Whether a path matches a pattern, through burn's own group matching.
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
    let group = burn::module::ParamGroup::from_regex(pattern).unwrap();
    move |path: &str| group.matches(&burn::module::ParamId::new(), Some(path))
}

#[test]
fn training_above_a_cached_frozen_prefix_is_training_the_whole_model() {
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex().autodiff();
    // Adapters on layer 1 only: the embeddings and layer 0 are the frozen prefix.
    let lora = tiny_lora(Some(vec![1]));
    assert_eq!(lora.frozen_prefix(), 1);
    let (model, tok) = classifier(dir.path(), &lora, &device);
    let (texts, labels) = toy_data();
    let targets = crate::Targets::Classes(labels.clone());
    let s = TrainSettings {
        epochs: 5,
        batch_size: 3,
        learning_rate: 0.01,
        weight_decay: 0.01,
        seed: 3,
        prox_mu: 0.0,
    };
    let (plain, plain_report) = fit(model.clone(), &tok, &texts, &targets, &s).unwrap();
    let mut cache = crate::prefix::PrefixCache::new(lora.frozen_prefix());
    let (cached, cached_report) =
        crate::train::fit_cached(model.clone(), &tok, &texts, &targets, &s, Some(&mut cache))
            .unwrap();
    assert_eq!(cache.len(), texts.len());
    assert!(
        (plain_report.last_epoch_loss - cached_report.last_epoch_loss).abs() < 1e-4,
        "{plain_report:?} vs {cached_report:?}"
    );
    for (a, b) in trainable(&plain).iter().zip(trainable(&cached)) {
        assert_eq!(a.name, b.name);
        let worst = a
            .values
            .iter()
            .zip(&b.values)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "{}: {worst}", a.name);
    }
    // A second round reuses every cached example.
    crate::train::fit_cached(cached, &tok, &texts, &targets, &s, Some(&mut cache)).unwrap();
    assert_eq!(cache.len(), texts.len());
    // A prefix over the adapted layer would freeze its adapters: refused.
    let mut deep = crate::prefix::PrefixCache::new(2);
    let e =
        crate::train::fit_cached(model, &tok, &texts, &targets, &s, Some(&mut deep)).unwrap_err();
    assert!(
        matches!(
            e,
            TextError::Setting {
                key: "prefix depth",
                ..
            }
        ),
        "{e}"
    );
}

mod head;
mod private;
mod regression;
