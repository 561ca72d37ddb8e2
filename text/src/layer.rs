//! BERT's transformer layer, post-norm: `h = norm₁(x + drop(attention(x)))`, then
//! `norm₂(h + drop(W₂·gelu(W₁·h)))`, with exact GELU, biases everywhere and dropout where
//! Hugging Face's `BertLayer` has it (attention probabilities, and each sub-layer's output).
//!
//! Written here rather than taken from burn's `TransformerEncoderLayer` for speed, with the
//! same parameter names (`mha.query`, `pwff.linear_inner`, `norm_1`, …) so pretrained loading,
//! LoRA targeting and the exchange are unchanged. What differs from burn's layer:
//! - projections run through [`crate::projection`]: a LoRA adapter beside its frozen weight,
//!   so no gradient of the full weight is computed;
//! - dropout draws its masks in bulk ([`crate::dropout`]);
//! - the attention scale is applied to the queries (`[.., length, head]`) rather than to the
//!   scores (`[.., length, length]`);
//! - no dropout between the feed-forward block's two projections, which BERT does not have
//!   and burn's block adds.

use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};

use crate::config::EncoderConfig;
use crate::dropout::dropout;
use crate::projection::project;

/// The value padding positions get among the attention scores before the softmax (burn's and
/// BERT's: far below any real score, so they receive no weight).
const MASKED_SCORE: f32 = -1.0e4;

/// Multi-head self-attention.
#[derive(Module, Debug)]
pub struct SelfAttention {
    /// Queries `[hidden, hidden]`.
    pub query: Linear,
    /// Keys.
    pub key: Linear,
    /// Values.
    pub value: Linear,
    /// The heads' concatenated outputs back to the hidden width.
    pub output: Linear,
    /// Dropout on the attention probabilities.
    pub dropout: Dropout,
    /// Heads.
    pub n_heads: usize,
}

/// The feed-forward block: widen, GELU, narrow.
#[derive(Module, Debug)]
pub struct FeedForward {
    /// `[hidden, intermediate]`.
    pub linear_inner: Linear,
    /// `[intermediate, hidden]`.
    pub linear_outer: Linear,
}

/// One layer.
#[derive(Module, Debug)]
pub struct Layer {
    /// Self-attention.
    pub mha: SelfAttention,
    /// Feed-forward.
    pub pwff: FeedForward,
    /// The LayerNorm after attention.
    pub norm_1: LayerNorm,
    /// The LayerNorm after the feed-forward block.
    pub norm_2: LayerNorm,
    /// Dropout on each sub-layer's output.
    pub dropout: Dropout,
}

impl Layer {
    /// A layer of `config` with fresh (random) weights.
    pub fn new(config: &EncoderConfig, device: &Device) -> Self {
        let (h, f) = (config.hidden_size, config.intermediate_size);
        let square = || LinearConfig::new(h, h).init(device);
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(config.layer_norm_eps)
                .init(device)
        };
        let drop = || DropoutConfig::new(config.hidden_dropout_prob).init();
        Layer {
            mha: SelfAttention {
                query: square(),
                key: square(),
                value: square(),
                output: square(),
                dropout: drop(),
                n_heads: config.num_attention_heads,
            },
            pwff: FeedForward {
                linear_inner: LinearConfig::new(h, f).init(device),
                linear_outer: LinearConfig::new(f, h).init(device),
            },
            norm_1: norm(),
            norm_2: norm(),
            dropout: drop(),
        }
    }

    /// States `x` `[batch, length, hidden]` through the layer; `padding` `[batch, length]` is
    /// true where there is no token.
    pub fn forward(&self, x: Tensor<3>, padding: &Tensor<2, Bool>) -> Tensor<3> {
        let attended = dropout(&self.dropout, self.mha.forward(x.clone(), padding));
        let x = self.norm_1.forward(x + attended);
        let fed = dropout(&self.dropout, self.pwff.forward(x.clone()));
        self.norm_2.forward(x + fed)
    }
}

impl SelfAttention {
    /// `[batch, length, hidden]` to `[batch, length, hidden]`.
    pub fn forward(&self, x: Tensor<3>, padding: &Tensor<2, Bool>) -> Tensor<3> {
        let [b, l, h] = x.dims();
        let n = self.n_heads;
        let d = h / n;
        let heads = |t: Tensor<3>| t.reshape([b, l, n, d]).swap_dims(1, 2);
        let q = heads(project(&self.query, x.clone())).mul_scalar(1.0 / (d as f64).sqrt());
        let k = heads(project(&self.key, x.clone()));
        let v = heads(project(&self.value, x));
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mask_fill(padding.clone().reshape([b, 1, 1, l]), MASKED_SCORE);
        let weights = dropout(&self.dropout, softmax(scores, 3));
        let context = weights.matmul(v).swap_dims(1, 2).reshape([b, l, h]);
        project(&self.output, context)
    }
}

impl FeedForward {
    /// `[batch, length, hidden]` to `[batch, length, hidden]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        project(&self.linear_outer, gelu(project(&self.linear_inner, x)))
    }
}
