//! The errors of the text classifier: every one names the file, tensor or setting at fault.

use std::path::PathBuf;

/// What went wrong loading, configuring or training the text classifier.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A file of the model cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `config.json` is not a configuration this crate can run.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong or unsupported.
        reason: String,
    },
    /// The weights do not fit the configuration.
    #[error("{}: {reason}", path.display())]
    Weights {
        /// The file.
        path: PathBuf,
        /// Which tensors are missing, extra or of the wrong shape.
        reason: String,
    },
    /// The tokenizer cannot be loaded or used.
    #[error("tokenizer {}: {reason}", path.display())]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A setting is out of range.
    #[error("{key} = {value}: {allowed}")]
    Setting {
        /// The setting.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// Trainable values that do not fit the model.
    #[error("trainable tensor `{name}`: {reason}")]
    Exchange {
        /// The tensor.
        name: String,
        /// Why.
        reason: String,
    },
    /// Training diverged: the loss is no longer a number.
    #[error("training diverged at step {step}: the loss is {loss} (lower the learning rate)")]
    Diverged {
        /// The optimiser step, from 1.
        step: u64,
        /// The loss.
        loss: f32,
    },
    /// Training data that cannot be used.
    #[error("{0}")]
    Data(String),
}
