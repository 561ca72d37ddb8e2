//! The classifier: the encoder's token states averaged over the real tokens (mean pooling, as
//! sentence-transformers trains MiniLM), then one linear layer to the task's logits — two for
//! a binary task, one per class otherwise.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use crate::encoder::{Encoder, Tokens};

/// The mean of the token states `h` `[batch, length, hidden]` over the tokens (`mask` 1).
fn pool(h: Tensor<3>, mask: &Tensor<2, Int>) -> Tensor<2> {
    let m = mask.clone().float().unsqueeze_dim::<3>(2);
    let summed = (h * m.clone()).sum_dim(1);
    let counts = m.sum_dim(1).clamp_min(1e-9);
    (summed / counts).squeeze_dim::<2>(1)
}

/// Encoder and head.
#[derive(Module, Debug)]
pub struct TextClassifier {
    /// The pretrained encoder (frozen but for its LoRA adapters).
    pub encoder: Encoder,
    /// `[hidden, classes]`.
    pub head: Linear,
}

impl TextClassifier {
    /// A classifier over `encoder` with a fresh head for `classes` classes.
    pub fn new(encoder: Encoder, hidden: usize, classes: usize, device: &Device) -> Self {
        TextClassifier {
            encoder,
            head: LinearConfig::new(hidden, classes).init(device),
        }
    }

    /// Mean-pooled sentence embeddings `[batch, hidden]`.
    pub fn embed(&self, t: &Tokens) -> Tensor<2> {
        pool(self.encoder.forward(t), &t.mask)
    }

    /// Logits `[batch, classes]` from the states after layer `from` (see
    /// [`crate::prefix`]): layers `from..` run, then pooling and the head.
    pub fn forward_from(&self, states: Tensor<3>, mask: &Tensor<2, Int>, from: usize) -> Tensor<2> {
        self.head.forward(self.embed_from(states, mask, from))
    }

    /// Mean-pooled sentence embeddings `[batch, hidden]` from the states after layer `from`.
    pub fn embed_from(&self, states: Tensor<3>, mask: &Tensor<2, Int>, from: usize) -> Tensor<2> {
        let h = self
            .encoder
            .layers(states, mask, from, self.encoder.depth());
        pool(h, mask)
    }

    /// Logits `[batch, classes]`.
    pub fn forward(&self, t: &Tokens) -> Tensor<2> {
        self.head.forward(self.embed(t))
    }
}
