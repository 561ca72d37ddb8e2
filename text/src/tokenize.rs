//! Texts to token-id batches with the model's own `tokenizer.json` (the Hugging Face
//! `tokenizers` crate, offline). Batches are padded to their longest text (not to a fixed
//! length, which `tokenizer.json` files often preset) and truncated to `max_length` tokens.
//! A tokenizer is paired with its encoder's configuration when loaded: ids beyond the
//! vocabulary or a length beyond the position embeddings would index outside the weights.

use std::path::Path;

use burn::prelude::*;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::config::EncoderConfig;
use crate::encoder::Tokens;
use crate::TextError;

/// A tokenizer with its length limit.
pub struct TextTokenizer {
    inner: Tokenizer,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` for an encoder of `config`; texts are cut to `max_length` tokens
    /// (special tokens included).
    pub fn load(path: &Path, max_length: usize, config: &EncoderConfig) -> Result<Self, TextError> {
        let bad = |reason: String| TextError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        if max_length < 2 {
            return Err(TextError::Setting {
                key: "max_length",
                value: max_length.to_string(),
                allowed: "at least 2 tokens (the two special tokens)",
            });
        }
        if max_length > config.max_position_embeddings {
            return Err(TextError::Setting {
                key: "max_length",
                value: max_length.to_string(),
                allowed: "at most the encoder's max_position_embeddings",
            });
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| bad(e.to_string()))?;
        let vocabulary = inner.get_vocab_size(true);
        if vocabulary > config.vocab_size {
            return Err(bad(format!(
                "{vocabulary} tokens, the encoder embeds {}: not this model's tokenizer",
                config.vocab_size
            )));
        }
        // The file's own padding token, if it names one (BERT's is [PAD], id 0).
        let (pad_id, pad_token) = match inner.get_padding() {
            Some(p) => (p.pad_id, p.pad_token.clone()),
            None => match inner.token_to_id("[PAD]") {
                Some(id) => (id, "[PAD]".to_string()),
                None => return Err(bad("no padding token ([PAD])".into())),
            },
        };
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..Default::default()
        }));
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| bad(e.to_string()))?;
        Ok(TextTokenizer {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// The ids of `texts`, as one batch on `device`.
    pub fn encode(&self, texts: &[&str], device: &Device) -> Result<Tokens, TextError> {
        if texts.is_empty() {
            return Err(TextError::Data("no text to encode".into()));
        }
        let encodings =
            self.inner
                .encode_batch(texts.to_vec(), true)
                .map_err(|e| TextError::Tokenizer {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
        let (b, l) = (encodings.len(), encodings[0].get_ids().len());
        let flat = |f: fn(&tokenizers::Encoding) -> &[u32]| -> Vec<i64> {
            encodings
                .iter()
                .flat_map(|e| f(e).iter().map(|&x| x as i64))
                .collect()
        };
        let tensor = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [b, l]), device);
        Ok(Tokens {
            ids: tensor(flat(tokenizers::Encoding::get_ids)),
            types: tensor(flat(tokenizers::Encoding::get_type_ids)),
            mask: tensor(flat(tokenizers::Encoding::get_attention_mask)),
        })
    }
}
