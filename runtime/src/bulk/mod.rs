//! # The bulk data plane: tensors on their own mutual-TLS links
//!
//! The actors' control plane (ractor_cluster, `crate::protocol`) carries small requests well,
//! but a model sent through it is cut into chunks, each encoded value by value, wrapped by
//! ractor_cluster, copied into fresh buffers at every layer and decoded value by value at the
//! other end. This plane moves the big things — bases, candidates, deployed versions, updates —
//! as raw little-endian `f32` frames over a link of their own, read straight into the model's
//! memory and hashed as they arrive; the actors still exchange the requests, reports and
//! digests, and decide.
//!
//! **Links.** A silo dials the coordinator's cluster address a second time, asking for the
//! ALPN protocol [`crate::tls::BULK_ALPN`] ([`dial`]). The listener checks it exactly as it
//! checks a cluster link — TLS 1.3, the certificate against the consortium CA and the
//! revocation list, handshake timeout, connection caps — and hands it over with the
//! certificate's identity ([`crate::cluster::handoff`]). The coordinator keeps one link per
//! identity ([`links`]): a new link of an identity replaces its old one, and no certificate can
//! put a link under another's name. The silo dials (as it dials the cluster link), so a silo
//! behind a firewall needs no open port.
//!
//! **Conversation.** The coordinator asks, the silo answers ([`frame`] has the messages), one
//! transfer at a time per link: `PutModel` then the values (the silo checks the digest and
//! keeps the model), or `FetchUpdate` (the silo sends the values; the coordinator hashes them
//! as they arrive and checks them against the digest in the silo's report). A link that fails
//! or is abandoned mid-transfer is closed and dialled again; the transfer's caller gets an
//! error, as it would from a failed control-plane transfer.
//!
//! **What stays on the control plane.** Compressed and securely aggregated updates (their
//! encodings are chunked by design), a described model's pinned files, and everything when a
//! silo has no bulk link (yet): [`route`] falls back to the chunked transfers of
//! [`crate::protocol::transfer`], so a federation works the same with or without this plane.
//!
//! Bytes on these links are counted per identity and added to the cluster link's counts in
//! each round's summary.

pub mod answer;
pub mod dial;
pub mod frame;
pub mod links;
pub mod route;

#[cfg(test)]
mod tests;

pub use links::{BulkLink, BulkLinks};

use std::time::Duration;

/// What went wrong on a bulk link.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// The link failed (closed, reset, …).
    #[error("bulk link: {0}")]
    Io(#[source] std::io::Error),
    /// A frame did not arrive within its time limit.
    #[error("bulk link: {what} did not arrive within {limit:?}")]
    Slow {
        /// What was due.
        what: &'static str,
        /// The limit.
        limit: Duration,
    },
    /// The peer sent something that is not the protocol.
    #[error("bulk link: malformed: {0}")]
    Malformed(String),
    /// The peer answered with a message that does not answer the request.
    #[error("bulk link: expected {wanted}, got {got}")]
    Unexpected {
        /// The answer due.
        wanted: &'static str,
        /// What came.
        got: &'static str,
    },
    /// The peer refused the request.
    #[error("{0}")]
    Refused(String),
    /// The request belongs on the control plane (the peer said so).
    #[error("not for the bulk link: {0}")]
    AskControl(String),
    /// The link was closed (by a failed transfer, a replacement or the peer).
    #[error("bulk link closed")]
    Closed,
    /// The link is busy with another transfer.
    #[error("bulk link busy")]
    Busy,
    /// Where the values were going (a spill file) failed.
    #[error("storing the values: {0}")]
    Sink(#[source] std::io::Error),
    /// The values that arrived are not the ones announced.
    #[error("the values do not match the digest {0}")]
    Digest(String),
}
