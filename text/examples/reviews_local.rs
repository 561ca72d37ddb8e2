//! One retailer of the customer-review example, trained alone, and all four pooled — the
//! non-federated columns of issue 17's table, measured with the crate directly (no federation):
//! for each training set, (a) the pretrained encoder frozen with only a head trained, and (b)
//! LoRA (rank 8, alpha 16) on the top two layers above the cached frozen prefix, each scored
//! on the training set's own held-out reviews and on the pooled held-out reviews.
//!
//!   scripts/ensure-model.sh && python3 examples/reviews/split.py examples/reviews/run/data
//!   cargo run --release -p fedsilo-text --example reviews_local -- examples/reviews/run/data [EPOCHS]

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use fedsilo_text::classifier::TextClassifier;
use fedsilo_text::lora::LoraSettings;
use fedsilo_text::prefix::PrefixCache;
use fedsilo_text::pretrained::{load_encoder, ModelDir};
use fedsilo_text::tokenize::TextTokenizer;
use fedsilo_text::train::{fit_cached, predict, TrainSettings};

const RETAILERS: [&str; 4] = ["retailer-a", "retailer-b", "retailer-c", "retailer-d"];

fn read(path: &Path) -> (Vec<String>, Vec<usize>) {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (mut texts, mut labels) = (Vec::new(), Vec::new());
    for row in r.records() {
        let row = row.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        texts.push(row[0].to_string());
        labels.push(usize::from(&row[1] == "great"));
    }
    (texts, labels)
}

/// ROC AUC by its pairwise definition (ties count half).
fn auc(scores: &[f32], labels: &[usize]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let (mut rank_sum, mut i) = (0.0f64, 0usize);
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            if labels[order[k]] == 1 {
                rank_sum += rank;
            }
        }
        i = j + 1;
    }
    let pos = labels.iter().filter(|l| **l == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let data = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "examples/reviews/run/data".into()),
    );
    let epochs: u32 = args
        .next()
        .map_or(2, |e| e.parse().expect("EPOCHS is a number"));
    let model = ModelDir::installed(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    let device = Device::flex().autodiff();
    let (config, base) = load_encoder(&model, &device).expect("model");
    let tok = TextTokenizer::load(&model.tokenizer(), 128, &config).expect("tokenizer");
    let mut pooled_train = (Vec::new(), Vec::new());
    let mut pooled_holdout = (Vec::new(), Vec::new());
    let mut sets = Vec::new();
    for r in RETAILERS {
        let train = read(&data.join(r).join("train.csv"));
        let holdout = read(&data.join(r).join("holdout.csv"));
        pooled_train.0.extend(train.0.clone());
        pooled_train.1.extend(train.1.clone());
        pooled_holdout.0.extend(holdout.0.clone());
        pooled_holdout.1.extend(holdout.1.clone());
        sets.push((r.to_string(), train, holdout));
    }
    sets.push(("pooled".into(), pooled_train, pooled_holdout.clone()));
    println!(
        "{:<11} {:>6} {:>22} {:>22} {:>8}",
        "trained on", "rows", "head only: own / all", "LoRA top 2: own / all", "seconds"
    );
    for (name, (texts, labels), (ht, hl)) in &sets {
        let mut row = format!("{name:<11} {:>6}", texts.len());
        let started = Instant::now();
        for lora in [
            None,
            Some(LoraSettings {
                layers: Some(vec![4, 5]),
                ..LoraSettings::default()
            }),
        ] {
            device.seed(1);
            let (encoder, depth) = match &lora {
                Some(l) => (l.apply(base.clone(), 6).expect("lora"), l.frozen_prefix()),
                // Head only: all six layers are the cached prefix, so only the head trains.
                None => (base.clone(), 6),
            };
            let clf = TextClassifier::new(encoder, config.hidden_size, 2, &device);
            let mut cache = PrefixCache::new(depth);
            let s = TrainSettings {
                epochs,
                batch_size: 16,
                learning_rate: 2e-3,
                weight_decay: 0.01,
                seed: 1,
                prox_mu: 0.0,
            };
            let (clf, _) = fit_cached(
                clf,
                &tok,
                texts,
                &fedsilo_text::Targets::Classes(labels.clone()),
                &s,
                Some(&mut cache),
            )
            .expect("train");
            let score = |t: &[String]| -> Vec<f32> {
                predict(&clf, &tok, t, 64)
                    .expect("predict")
                    .iter()
                    .map(|p| p[1])
                    .collect()
            };
            let own = auc(&score(ht), hl);
            let all = auc(&score(&pooled_holdout.0), &pooled_holdout.1);
            row.push_str(&format!(" {:>10.3} / {:>9.3}", own, all));
        }
        println!("{row} {:>8.0}", started.elapsed().as_secs_f64());
    }
}
