//! The one error type of this crate.

use std::path::PathBuf;

/// Why a policy could not be loaded. Every variant names where the problem is.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Io {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type. The message from
    /// the TOML parser names the line, column and key.
    #[error("policy {origin}: {message}")]
    Syntax {
        /// File name, or `<inline>` for a string.
        origin: String,
        /// The parser's message (line, key, what was expected).
        message: String,
    },
    /// The document parsed, but a value is outside what is allowed or contradicts another.
    #[error("policy {origin}: `{key}` = {value}: {allowed}")]
    Invalid {
        /// File name, or `<inline>` for a string.
        origin: String,
        /// Dotted key, e.g. `participation.quorum`.
        key: String,
        /// The offending value, as written.
        value: String,
        /// What would have been accepted.
        allowed: String,
    },
}
