//! # fedsilo-testkit — what tests and experiments use, kept out of the shipped crates
//!
//! - [`sandbox`] — a whole federation of real processes on loopback, from the built binaries,
//!   with its events read as they come;
//! - [`robustness`] — the robustness experiment (Byzantine silos × kernels) on top of it;
//! - [`webhook_receiver`] — an HTTP endpoint that records webhook notices and checks their
//!   signatures.
//!
//! It is a dev-dependency of `silo-node` (its integration tests and examples) and is never
//! linked into a production binary.

pub mod robustness;
pub mod sandbox;
pub mod webhook_receiver;
