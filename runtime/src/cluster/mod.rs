//! # The cluster: ractor_cluster nodes over mutual TLS, with identities bound to certificates
//!
//! ractor_cluster moves actor messages between processes but trusts whatever name a peer
//! declares. This module closes that gap, split by responsibility as ractor_cluster itself is:
//!
//! - [`listener`] — bytes: our own TCP accept loop. Each connection's TLS handshake runs in its
//!   own task under a timeout, so a silent peer delays nobody; a peer without a valid
//!   certificate from the consortium CA is refused and logged with its address.
//! - [`auth_frames`] — the node names peers declare in ractor_cluster's authentication frames,
//!   checked against their certificates before ractor acts on them, on accepted and dialled
//!   links alike (ractor elects between same-named sessions before anyone can check them).
//! - [`directory`] — who is talking: the [`PeerDirectory`] admits a connection only if its
//!   declared name is its certificate's and its identity has no other live link, and binds the
//!   ractor session to that identity.
//! - [`refusal_log`] — every refusal logged with address and identity, rate-limited.
//! - [`node`] — the [`ClusterNode`] a process runs: a `NodeServer` in `Isolated` mode (never
//!   dials peers of peers), our listener, and outgoing connections made the same way.
//! - [`counting_stream`] — the byte counters on every link, so what a silo sends is measured on
//!   the wire, not estimated.
//! - [`refusal_watch`] — a dialled link keeps the server's refusal of our certificate (TLS 1.3
//!   tells it only after the handshake), so that it is reported as final.
//! - [`handoff`] — a link that asks for the bulk data plane (by ALPN) is checked like the
//!   others and handed to the node's bulk acceptor instead of ractor_cluster.
//! - [`revocation`] — the consortium CA's revocation list, enforced at the handshake and on the
//!   links already open.
//!
//! If you need to know *who* sent something, ask the directory for the identity bound to the
//! sending actor's node id ([`PeerDirectory::identity_of`]); never trust a name inside a message.

pub mod auth_frames;
pub mod counting_stream;
pub mod directory;
pub mod handoff;
pub mod link;
pub mod listener;
pub mod node;
pub mod refusal_log;
pub mod refusal_watch;
pub mod revocation;

pub use directory::{PeerDirectory, PeerEvent};
pub use node::{cookie, ClusterConfig, ClusterNode, LinkLimits};

/// Process group of trainer actors (one per silo).
pub const TRAINER_GROUP: &str = "fedsilo.trainer";
/// Process group of the coordinator actor.
pub const COORDINATOR_GROUP: &str = "fedsilo.coordinator";
/// Process group of aggregator actors.
pub const AGGREGATOR_GROUP: &str = "fedsilo.aggregator";
/// Process group of validator actors.
pub const VALIDATOR_GROUP: &str = "fedsilo.validator";
/// Process group of policy actors.
pub const POLICY_GROUP: &str = "fedsilo.policy";
