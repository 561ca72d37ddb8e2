//! # fedsilo-text — the built-in text classifier
//!
//! A pretrained BERT-family encoder (all-MiniLM-L6-v2 by default) with a classification head on
//! its mean-pooled token states, fine-tuned with LoRA on the attention and feed-forward
//! projections and AdamW, on the CPU. Only the silo uses this crate: the coordinator sees the
//! trainable tensors (the adapters and the head) as named f32 values, like any other model's.
//!
//! Why burn: training a transformer needs a backward pass through every op (LayerNorm, softmax,
//! GELU, attention); burn's autodiff provides it, its `flex` backend runs on the CPU in pure Rust
//! (gemm, SIMD, rayon), and LoRA is part of its core (`Module::apply_lora`). Hand-written
//! backward passes are what this project stopped doing for models it does not own.
//!
//! - [`config`] — the encoder's `config.json`, checked for what this crate supports;
//! - [`encoder`] — embeddings and the stack of layers;
//! - [`layer`] — BERT's post-norm transformer layer;
//! - [`projection`] — a linear projection with its LoRA adapter beside the frozen weight;
//! - [`dropout`] — dropout with masks drawn in bulk;
//! - [`classifier`] — mean pooling and the head;
//! - [`pretrained`] — loading `model.safetensors` (Hugging Face names) into the encoder;
//! - [`lora`] — which projections get adapters, and their rank and alpha;
//! - [`tokenize`] — `tokenizer.json` to padded id batches;
//! - [`exchange`] — the trainable tensors as named f32 values, out and back in;
//! - [`prefix`] — the frozen layers below the lowest adapter, computed once per example;
//! - [`targets`] — class labels or standardised numbers (regression), and their loss;
//! - [`train`] — AdamW fine-tuning and scoring;
//! - [`head`] — the head alone on frozen embeddings (personalisation);
//! - [`heap`] — keeping freed tensor buffers for reuse (a process-wide allocator setting);
//! - [`private`] — the same under record-level DP-SGD (per-example clipping and noise).

pub mod classifier;
pub mod config;
pub mod dropout;
pub mod encoder;
pub mod error;
pub mod exchange;
pub mod head;
pub mod heap;
pub mod layer;
pub mod lora;
pub mod prefix;
pub mod pretrained;
pub mod private;
pub mod projection;
pub(crate) mod proximal;
pub mod targets;
pub mod tokenize;
pub mod train;

pub use error::TextError;
pub use targets::Targets;

#[cfg(test)]
mod tests;
