//! # Metrics in the Prometheus text format
//!
//! [`FederationMetrics`] is what the coordinator exposes, fed from the events it emits (so
//! every figure is one the event log also records); [`SiloMetrics`] is what a silo node
//! exposes. [`serve`] answers `GET /metrics` on a loopback address; the coordinator's admin API
//! answers it too, authenticated, for scrapers on other hosts.

mod federation;
mod server;
mod silo;

pub use federation::FederationMetrics;
pub use server::{check_listen, serve, Exposition, MetricsError};
pub use silo::SiloMetrics;
