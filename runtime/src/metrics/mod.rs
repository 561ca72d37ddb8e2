//! # Metrics in the Prometheus text format
//!
//! [`FederationMetrics`] is what the coordinator exposes, fed from the events it emits (so
//! every figure is one the event log also records); [`SiloMetrics`] is what a silo node
//! exposes. [`serve`] answers `GET /metrics` on an address of the operator's choosing.

mod federation;
mod server;
mod silo;

pub use federation::FederationMetrics;
pub use server::{serve, Exposition};
pub use silo::SiloMetrics;
