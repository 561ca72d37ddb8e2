//! Which weights get LoRA adapters, and how large. The encoder's every weight is frozen; each
//! chosen projection `W` computes `x·W + (alpha / rank) · (x·A)·B` with `A` `[in, rank]`
//! (random) and `B` `[rank, out]` (zero, so training starts from the pretrained model). Only
//! `A`, `B` and the head train and travel. burn's `Module::apply_lora` attaches the adapters,
//! [`crate::projection`] computes with them; this module only says where.

use burn::module::{Lora, Module, ParamGroup};

use crate::encoder::Encoder;
use crate::TextError;

/// The projections of a layer that may get adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Query, key, value and output of self-attention.
    Attention,
    /// Both linear layers of the feed-forward block.
    FeedForward,
}

/// LoRA's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSettings {
    /// Rank of the adapters (1–256).
    pub rank: usize,
    /// Scale numerator: the adapters add `alpha / rank · A·B`.
    pub alpha: f64,
    /// Which projections.
    pub targets: Vec<Target>,
    /// Which layers (0-based); `None`: all.
    pub layers: Option<Vec<usize>>,
}

impl Default for LoraSettings {
    /// Rank 8, alpha 16, attention and feed-forward of every layer.
    fn default() -> Self {
        LoraSettings {
            rank: 8,
            alpha: 16.0,
            targets: vec![Target::Attention, Target::FeedForward],
            layers: None,
        }
    }
}

impl LoraSettings {
    /// The regular expression of the weights that get adapters (paths in the encoder).
    pub fn pattern(&self) -> String {
        let layers = match &self.layers {
            None => r"\d+".to_string(),
            Some(l) => format!(
                "({})",
                l.iter().map(usize::to_string).collect::<Vec<_>>().join("|")
            ),
        };
        let mut parts = Vec::new();
        if self.targets.contains(&Target::Attention) {
            parts.push(r"mha\.(query|key|value|output)");
        }
        if self.targets.contains(&Target::FeedForward) {
            parts.push(r"pwff\.linear_(inner|outer)");
        }
        format!(
            r"^encoder\.layers\.{layers}\.({})\.weight$",
            parts.join("|")
        )
    }

    /// The layers below the lowest adapted one: frozen whole, so their output per example can
    /// be computed once ([`crate::prefix`]). 0 when every layer is adapted.
    pub fn frozen_prefix(&self) -> usize {
        self.layers
            .as_ref()
            .and_then(|l| l.iter().min().copied())
            .unwrap_or(0)
    }

    /// Checks the settings against an encoder of `layers` layers.
    pub fn check(&self, layers: usize) -> Result<(), TextError> {
        if self.rank == 0 || self.rank > 256 {
            return Err(TextError::Setting {
                key: "lora.rank",
                value: self.rank.to_string(),
                allowed: "between 1 and 256",
            });
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(TextError::Setting {
                key: "lora.alpha",
                value: self.alpha.to_string(),
                allowed: "a positive number",
            });
        }
        if self.targets.is_empty() {
            return Err(TextError::Setting {
                key: "lora.targets",
                value: "[]".into(),
                allowed: "attention, feed_forward or both",
            });
        }
        if self.layers.as_ref().is_some_and(Vec::is_empty) {
            return Err(TextError::Setting {
                key: "lora.layers",
                value: "[]".into(),
                allowed: "at least one layer index (leave it out for all layers)",
            });
        }
        if let Some(bad) = self.layers.iter().flatten().find(|l| **l >= layers) {
            return Err(TextError::Setting {
                key: "lora.layers",
                value: bad.to_string(),
                allowed: "layer indices of the encoder, from 0",
            });
        }
        Ok(())
    }

    /// Freezes `encoder` and attaches the adapters.
    pub fn apply(&self, encoder: Encoder, layers: usize) -> Result<Encoder, TextError> {
        self.check(layers)?;
        let group = ParamGroup::from_regex(self.pattern()).map_err(|e| TextError::Setting {
            key: "lora.layers",
            value: format!("{e:?}"),
            allowed: "layer indices of the encoder",
        })?;
        Ok(encoder.apply_lora(Lora::new(self.rank, self.alpha).set_param_group(group)))
    }
}
