//! A BERT encoder: word, position and segment embeddings with a LayerNorm, then the stack of
//! BERT layers ([`crate::layer`]). Field names follow burn's modules (`encoder.layers.3.mha.query`);
//! [`crate::pretrained`] maps the Hugging Face names onto them.

use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::prelude::*;

use crate::config::EncoderConfig;
use crate::dropout::dropout;
use crate::layer::Layer;

/// The embedding block.
#[derive(Module, Debug)]
pub struct Embeddings {
    /// Token embeddings `[vocab, hidden]`.
    pub word_embeddings: Embedding,
    /// Absolute position embeddings `[max_positions, hidden]`.
    pub position_embeddings: Embedding,
    /// Segment embeddings `[types, hidden]`.
    pub token_type_embeddings: Embedding,
    /// The LayerNorm after their sum.
    pub layer_norm: LayerNorm,
    /// Dropout while training.
    pub dropout: Dropout,
}

/// The layers, bottom first.
#[derive(Module, Debug)]
pub struct Layers {
    /// One per `num_hidden_layers`.
    pub layers: Vec<Layer>,
}

/// The encoder.
#[derive(Module, Debug)]
pub struct Encoder {
    /// Embeddings.
    pub embeddings: Embeddings,
    /// The transformer layers.
    pub encoder: Layers,
}

/// One batch of token ids, all `[batch, length]`, padded on the right.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Token ids.
    pub ids: Tensor<2, Int>,
    /// Segment ids (0 for single sentences).
    pub types: Tensor<2, Int>,
    /// 1 for a token, 0 for padding.
    pub mask: Tensor<2, Int>,
}

impl EncoderConfig {
    /// An encoder of this configuration with fresh (random) weights on `device`.
    pub fn init(&self, device: &Device) -> Encoder {
        let emb = |n: usize| EmbeddingConfig::new(n, self.hidden_size).init(device);
        Encoder {
            embeddings: Embeddings {
                word_embeddings: emb(self.vocab_size),
                position_embeddings: emb(self.max_position_embeddings),
                token_type_embeddings: emb(self.type_vocab_size),
                layer_norm: LayerNormConfig::new(self.hidden_size)
                    .with_epsilon(self.layer_norm_eps)
                    .init(device),
                dropout: DropoutConfig::new(self.hidden_dropout_prob).init(),
            },
            encoder: Layers {
                layers: (0..self.num_hidden_layers)
                    .map(|_| Layer::new(self, device))
                    .collect(),
            },
        }
    }
}

impl Encoder {
    /// Token states `[batch, length, hidden]`.
    pub fn forward(&self, t: &Tokens) -> Tensor<3> {
        self.layers(self.embed(t), &t.mask, 0, self.depth())
    }

    /// The embedding block's output `[batch, length, hidden]`.
    pub fn embed(&self, t: &Tokens) -> Tensor<3> {
        let [b, l] = t.ids.dims();
        let device = t.ids.device();
        let positions = Tensor::<1, Int>::arange(0..l as i64, &device)
            .reshape([1, l])
            .repeat_dim(0, b);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(t.ids.clone())
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(t.types.clone());
        dropout(&e.dropout, e.layer_norm.forward(x))
    }

    /// The states after layers `from..to` of states `x` (the embedding block's output when
    /// `from` is 0), padding excluded by `mask` (1 for a token).
    pub fn layers(&self, x: Tensor<3>, mask: &Tensor<2, Int>, from: usize, to: usize) -> Tensor<3> {
        let padding = mask.clone().equal_elem(0);
        self.encoder.layers[from..to]
            .iter()
            .fold(x, |x, layer| layer.forward(x, &padding))
    }

    /// The number of layers.
    pub fn depth(&self) -> usize {
        self.encoder.layers.len()
    }
}
