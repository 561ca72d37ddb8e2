//! The one error type of the `fedsilo` crate. Every variant that concerns outside input names
//! where it came from (file, peer, field) and what was wrong with it.

use std::path::PathBuf;

/// Errors of the fedsilo runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A certificate or key is unusable (bad PEM, missing fields, wrong role...).
    #[error("certificate {origin}: {message}")]
    Certificate {
        /// File or peer the certificate came from.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
    /// A configuration file or value is invalid.
    #[error("config {origin}: {message}")]
    Config {
        /// File (and key) where the problem is.
        origin: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A policy could not be loaded.
    #[error(transparent)]
    Policy(#[from] fedsilo_policies::PolicyError),
    /// The audit journal could not be read or extended.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The privacy book could not be read or extended.
    #[error(transparent)]
    PrivacyBook(#[from] crate::privacy::budget::BookError),
    /// A wire message could not be decoded or is not acceptable.
    #[error("protocol error from {peer}: {message}")]
    Protocol {
        /// The peer (node name or address) whose bytes these were.
        peer: String,
        /// What was wrong.
        message: String,
    },
    /// A model checkpoint is malformed or does not match the expected layout.
    #[error("checkpoint {origin}: {message}")]
    Checkpoint {
        /// File or message the checkpoint came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// Data (CSV, schema) could not be used.
    #[error("data {origin}: {message}")]
    Data {
        /// File, line and column where possible.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A cluster operation failed (connect, handshake, actor spawn...).
    #[error("cluster: {0}")]
    Cluster(String),
    /// The peer's certificate was refused for a reason retrying cannot change: issued by another
    /// CA, for another name, expired or not yet valid, revoked — or the peer refused ours.
    #[error("{peer}: the TLS handshake was refused: {reason}. Retrying would not help: check the kit's ca.pem, the peer's node name and both certificates' validity dates")]
    TlsRefused {
        /// Who and where.
        peer: String,
        /// rustls's reason.
        reason: String,
    },
    /// The peer's actor or session went away before it answered.
    #[error("{peer} went away before answering (its session closed)")]
    PeerGone {
        /// The node that was called.
        peer: String,
    },
    /// A remote call failed or timed out.
    #[error("call to {peer} failed: {message}")]
    Call {
        /// The node that was called.
        peer: String,
        /// What happened.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for an [`Error::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
