//! The encoder's configuration, read from the model's `config.json` (the Hugging Face format),
//! and checked for what [`crate::encoder`] implements: a BERT-family encoder with exact GELU and
//! absolute position embeddings. Anything else is refused at load, naming the key.

use std::path::Path;

use serde::Deserialize;

use crate::TextError;

/// What the encoder is made of.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EncoderConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Width of every token state.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Longest input, in tokens.
    pub max_position_embeddings: usize,
    /// Segment types (2 for BERT).
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (BERT: 1e-12).
    #[serde(default = "bert_eps")]
    pub layer_norm_eps: f64,
    /// Dropout on hidden states while training.
    #[serde(default = "bert_dropout")]
    pub hidden_dropout_prob: f64,
    /// The activation (only `gelu` is implemented).
    #[serde(default = "gelu")]
    pub hidden_act: String,
    /// The architecture family (`bert`).
    #[serde(default = "bert")]
    pub model_type: String,
    /// How positions are embedded (only `absolute` is implemented).
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

/// The largest value of each size this crate accepts: far above the BERT family's (BERT-large:
/// vocabulary 30,522, width 1,024, 24 layers, 16 heads, 4,096, 512 positions), far below what
/// would exhaust memory before the weights are even read.
const LIMITS: [(&str, usize); 7] = [
    ("vocab_size", 262_144),
    ("hidden_size", 4_096),
    ("num_hidden_layers", 48),
    ("num_attention_heads", 64),
    ("intermediate_size", 16_384),
    ("max_position_embeddings", 8_192),
    ("type_vocab_size", 16),
];

fn two() -> usize {
    2
}
fn bert_eps() -> f64 {
    1e-12
}
fn bert_dropout() -> f64 {
    0.1
}
fn gelu() -> String {
    "gelu".into()
}
fn bert() -> String {
    "bert".into()
}
fn absolute() -> String {
    "absolute".into()
}

impl EncoderConfig {
    /// Reads and checks `config.json`.
    pub fn load(path: &Path) -> Result<Self, TextError> {
        let text = std::fs::read_to_string(path).map_err(|source| TextError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let c: EncoderConfig = serde_json::from_str(&text).map_err(|e| TextError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        c.check().map_err(|reason| TextError::Config {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(c)
    }

    /// What this crate cannot run, named.
    fn check(&self) -> Result<(), String> {
        if self.model_type != "bert" {
            return Err(format!(
                "model_type {:?}: only BERT-family encoders (\"bert\") are built in; use an external trainer for others",
                self.model_type
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act {:?}: only \"gelu\" is implemented",
                self.hidden_act
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type {:?}: only \"absolute\" is implemented",
                self.position_embedding_type
            ));
        }
        let values = [
            self.vocab_size,
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.intermediate_size,
            self.max_position_embeddings,
            self.type_vocab_size,
        ];
        for ((key, max), v) in LIMITS.iter().zip(values) {
            if v == 0 || v > *max {
                return Err(format!("{key} = {v}: must be between 1 and {max}"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!(
                "layer_norm_eps = {}: must be a small positive number",
                self.layer_norm_eps
            ));
        }
        if !(0.0..1.0).contains(&self.hidden_dropout_prob) {
            return Err(format!(
                "hidden_dropout_prob = {}: must be in [0, 1)",
                self.hidden_dropout_prob
            ));
        }
        Ok(())
    }
}
