//! Training speed of the built-in text classifier on the real all-MiniLM-L6-v2: one AdamW step
//! on a batch of 16 texts of exactly 128 tokens, with LoRA (rank 8 on every attention and
//! feed-forward projection), with full fine-tuning, and with LoRA on the top two layers only —
//! once running the whole encoder, once above the cached frozen prefix (`fedsilo_text::prefix`,
//! steady state: the cache is filled by the warm-up step, as by a silo's first epoch); and LoRA
//! and full fine-tuning again without dropout (the manifest's `dropout = 0`) — reported as
//! examples per second and as
//! achieved GFLOP/s against this machine's single-precision GEMM rate (OpenBLAS `sgemm`,
//! 1024³, on all cores), measured in the same run, interleaved — so the ratio holds on a noisy
//! machine. Also: the process's peak memory, and the bytes a silo sends per round (the
//! trainable tensors) against the full model.
//!
//! Useful work counted: a forward pass is 2·L·(4h² + 2h·f) + 4·L²·h FLOPs per layer and
//! example; full fine-tuning does three passes' worth (forward, gradients of activations and
//! of weights), LoRA two (the frozen weights need no gradient, and `fedsilo_text::projection`
//! computes none). The process keeps freed buffers for reuse, as `silo-node` does
//! (`fedsilo_text::heap`).
//!
//!   scripts/ensure-model.sh && cargo bench -p fedsilo-text --bench training

extern crate blas_src;
extern crate openblas_src;

use std::path::PathBuf;
use std::time::Instant;

use burn::prelude::*;
use fedsilo_text::classifier::TextClassifier;
use fedsilo_text::config::EncoderConfig;
use fedsilo_text::exchange::trainable;
use fedsilo_text::lora::LoraSettings;
use fedsilo_text::prefix::PrefixCache;
use fedsilo_text::pretrained::{load_encoder, load_weights, ModelDir};
use fedsilo_text::tokenize::TextTokenizer;
use fedsilo_text::train::{fit_cached, TrainSettings};

const BATCH: usize = 16;
const LENGTH: usize = 128;
const STEPS: usize = 3;

fn model_dir() -> ModelDir {
    ModelDir::installed(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// GFLOP/s of a 1024³ sgemm (best of three).
fn sgemm_rate() -> f64 {
    let n = 1024usize;
    let a = vec![1.0f32 / n as f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        // SAFETY: the three buffers are n×n, row-major, as the call describes.
        unsafe {
            cblas_sys::cblas_sgemm(
                cblas_sys::CBLAS_LAYOUT::CblasRowMajor,
                cblas_sys::CBLAS_TRANSPOSE::CblasNoTrans,
                cblas_sys::CBLAS_TRANSPOSE::CblasNoTrans,
                n as i32,
                n as i32,
                n as i32,
                1.0,
                a.as_ptr(),
                n as i32,
                b.as_ptr(),
                n as i32,
                0.0,
                c.as_mut_ptr(),
                n as i32,
            );
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&c);
    2.0 * (n * n * n) as f64 / best / 1e9
}

fn peak_memory_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Texts that tokenize to at least `LENGTH` tokens (cut to exactly that).
fn texts() -> Vec<String> {
    let words = "the coffee arrived fresh and the chocolate was rich but the bag was torn and the tea tasted stale so i wrote to the seller who answered quickly";
    (0..BATCH)
        .map(|i| format!("{i} {}", [words; 6].join(" ")))
        .collect()
}

fn main() {
    let model = model_dir();
    if !model.weights().is_file() {
        eprintln!(
            "no model at {}: run scripts/ensure-model.sh first",
            model.dir.display()
        );
        std::process::exit(2);
    }
    fedsilo_text::heap::keep_freed_buffers();
    let device = Device::flex().autodiff();
    let (config, base) = load_encoder(&model, &device).expect("model");
    let undropped = EncoderConfig {
        hidden_dropout_prob: 0.0,
        ..config.clone()
    };
    let base_undropped = load_weights(&undropped, &model.weights(), &device).expect("model");
    let tok = TextTokenizer::load(&model.tokenizer(), LENGTH, &config).expect("tokenizer");
    let texts = texts();
    let probe = tok.encode(&[texts[0].as_str()], &device).expect("encode");
    assert_eq!(
        probe.ids.dims()[1],
        LENGTH,
        "the bench texts must fill {LENGTH} tokens"
    );
    let labels = fedsilo_text::Targets::Classes((0..BATCH).map(|i| i % 2).collect());
    let settings = TrainSettings {
        epochs: 1,
        batch_size: BATCH,
        learning_rate: 1e-4,
        weight_decay: 0.01,
        seed: 1,
        prox_mu: 0.0,
    };
    let (h, f, layers) = (
        config.hidden_size as f64,
        config.intermediate_size as f64,
        config.num_hidden_layers as f64,
    );
    let l = LENGTH as f64;
    let forward = layers * (2.0 * l * (4.0 * h * h + 2.0 * h * f) + 4.0 * l * l * h);
    let full_bytes = std::fs::metadata(model.weights()).map_or(0, |m| m.len());
    println!(
        "all-MiniLM-L6-v2, batch {BATCH} × {LENGTH} tokens, {:.2} GFLOP forward per example, {} steps each",
        forward / 1e9,
        STEPS
    );
    println!(
        "{:<20} {:>8} {:>12} {:>10} {:>12} {:>14} {:>14}",
        "mode",
        "s/step",
        "examples/s",
        "GFLOP/s",
        "sgemm GFLOP/s",
        "share of sgemm",
        "sent per round"
    );
    let top2 = LoraSettings {
        layers: Some(vec![
            config.num_hidden_layers - 2,
            config.num_hidden_layers - 1,
        ]),
        ..LoraSettings::default()
    };
    let upper = 2.0 / config.num_hidden_layers as f64;
    // (mode, useful passes' worth of forward work, LoRA settings, frozen prefix cached,
    // dropout as the model's config says)
    let modes: [(&str, f64, Option<&LoraSettings>, bool, bool); 6] = [
        ("LoRA r8", 2.0, Some(&LoraSettings::default()), false, true),
        ("full fine-tune", 3.0, None, false, true),
        ("LoRA top 2", 1.0 + upper, Some(&top2), false, true),
        ("LoRA top 2 cached", 2.0 * upper, Some(&top2), true, true),
        (
            "LoRA r8, no dropout",
            2.0,
            Some(&LoraSettings::default()),
            false,
            false,
        ),
        ("full, no dropout", 3.0, None, false, false),
    ];
    for (mode, passes, lora, cached, dropout) in modes {
        let base = if dropout { &base } else { &base_undropped };
        let model = match lora {
            Some(l) => {
                let enc = l
                    .apply(base.clone(), config.num_hidden_layers)
                    .expect("lora");
                TextClassifier::new(enc, config.hidden_size, 2, &device)
            }
            None => TextClassifier::new(base.clone(), config.hidden_size, 2, &device),
        };
        let mut cache = cached.then(|| PrefixCache::new(top2.frozen_prefix()));
        // Full fine-tuning sends every weight; LoRA the adapters and the head.
        let sent: usize = match lora {
            Some(_) => trainable(&model).iter().map(|n| n.values.len() * 4).sum(),
            None => full_bytes as usize,
        };
        // Warm-up step (which also fills the cache), then timed steps each followed by a
        // reference sgemm measurement.
        let (mut model, _) =
            fit_cached(model, &tok, &texts, &labels, &settings, cache.as_mut()).expect("train");
        let (mut secs, mut sgemm) = (Vec::new(), Vec::new());
        for _ in 0..STEPS {
            let t = Instant::now();
            model = fit_cached(model, &tok, &texts, &labels, &settings, cache.as_mut())
                .expect("train")
                .0;
            secs.push(t.elapsed().as_secs_f64());
            sgemm.push(sgemm_rate());
        }
        secs.sort_by(f64::total_cmp);
        sgemm.sort_by(f64::total_cmp);
        let (s, g) = (secs[STEPS / 2], sgemm[STEPS / 2]);
        let rate = passes * forward * BATCH as f64 / s / 1e9;
        println!(
            "{:<20} {:>8.2} {:>12.2} {:>10.1} {:>12.1} {:>13.0}% {:>8.2} MB of {:.0} MB",
            mode,
            s,
            BATCH as f64 / s,
            rate,
            g,
            100.0 * rate / g,
            sent as f64 / 1e6,
            full_bytes as f64 / 1e6,
        );
    }
    println!("peak memory of the process: {:.0} MiB", peak_memory_mib());
}
