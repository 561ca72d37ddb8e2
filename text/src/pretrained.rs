//! Loading a pretrained encoder from a model directory as Hugging Face writes it:
//! `config.json` and `model.safetensors` (names such as
//! `encoder.layer.3.attention.self.query.weight`, with or without a `bert.` prefix). The names
//! are mapped onto [`crate::encoder`]'s; PyTorch's `[out, in]` linear weights are transposed to
//! burn's `[in, out]` and LayerNorm's `weight`/`bias` become `gamma`/`beta` (burn's
//! `PyTorchToBurnAdapter`). A tensor the encoder needs and the file lacks, or one of the wrong
//! shape, is an error naming it; tensors the encoder does not use (the pooler, `position_ids`)
//! are ignored.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};

use crate::config::EncoderConfig;
use crate::encoder::Encoder;
use crate::TextError;

/// The files of a model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The directory.
    pub dir: PathBuf,
}

impl ModelDir {
    /// `dir`, which must hold `config.json`, `model.safetensors` and `tokenizer.json`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ModelDir { dir: dir.into() }
    }

    /// The model `scripts/ensure-model.sh` installs: `$FEDSILO_MODEL_DIR`, or
    /// `.cache/models/all-MiniLM-L6-v2` in the checkout at `root`.
    pub fn installed(root: &Path) -> Self {
        ModelDir::new(
            std::env::var_os("FEDSILO_MODEL_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(".cache/models/all-MiniLM-L6-v2")),
        )
    }

    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// `model.safetensors`.
    pub fn weights(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }

    /// `tokenizer.json`.
    pub fn tokenizer(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
}

/// The Hugging Face BERT names mapped onto the encoder's (applied in order to each name).
const RENAMES: [(&str, &str); 8] = [
    (r"^bert\.", ""),
    (r"^embeddings\.LayerNorm\.", "embeddings.layer_norm."),
    (
        r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.",
        "encoder.layers.${1}.mha.${2}.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.",
        "encoder.layers.${1}.mha.output.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.",
        "encoder.layers.${1}.norm_1.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.intermediate\.dense\.",
        "encoder.layers.${1}.pwff.linear_inner.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.output\.dense\.",
        "encoder.layers.${1}.pwff.linear_outer.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.",
        "encoder.layers.${1}.norm_2.",
    ),
];

/// Reads the configuration and the weights of `model` onto `device`.
pub fn load_encoder(
    model: &ModelDir,
    device: &Device,
) -> Result<(EncoderConfig, Encoder), TextError> {
    let config = EncoderConfig::load(&model.config())?;
    let encoder = load_weights(&config, &model.weights(), device)?;
    Ok((config, encoder))
}

/// An encoder of `config` with the weights of `path`.
pub fn load_weights(
    config: &EncoderConfig,
    path: &Path,
    device: &Device,
) -> Result<Encoder, TextError> {
    if !path.is_file() {
        return Err(TextError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let bad = |reason: String| TextError::Weights {
        path: path.to_path_buf(),
        reason,
    };
    // burn's own validation would fail with its summary; the checks below name the tensors.
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter)
        .validate(false)
        .allow_partial(true);
    for (from, to) in RENAMES {
        store = store.with_key_remapping(from, to);
    }
    let mut encoder = config.init(device);
    let applied = encoder
        .load_from(&mut store)
        .map_err(|e| bad(e.to_string()))?;
    if !applied.errors.is_empty() {
        let first: Vec<String> = applied
            .errors
            .iter()
            .take(3)
            .map(|e| format!("{e:?}"))
            .collect();
        return Err(bad(format!(
            "{} tensor(s) do not fit the configuration in config.json: {}",
            applied.errors.len(),
            first.join("; ")
        )));
    }
    if !applied.missing.is_empty() {
        let first: Vec<&str> = applied
            .missing
            .iter()
            .take(5)
            .map(|(p, _)| p.as_str())
            .collect();
        return Err(bad(format!(
            "{} tensor(s) the encoder needs are missing, e.g. {} (is this a BERT-family model?)",
            applied.missing.len(),
            first.join(", ")
        )));
    }
    Ok(encoder)
}
