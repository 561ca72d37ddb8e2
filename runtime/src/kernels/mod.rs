//! # Aggregation kernels
//!
//! Pure functions over flat `f32` buffers — no network, no actors; the aggregator actor hosts
//! them and `fedsilo aggregate` runs them offline. Every kernel works on slices of the updates
//! as they are (no copy of the inputs), tiles over coordinates and uses every core.
//!
//! | kernel | file | weights | memory beyond inputs |
//! |---|---|---|---|
//! | weighted mean (FedAvg) | [`weighted_mean`] | example counts | output (streaming: O(model)) |
//! | trimmed mean, median | [`order_statistics`] (sorting networks: [`sorting_network`]) | — | output + one tile per core |
//! | Krum, Multi-Krum | [`krum`] (Gram matrix by BLAS `sgemm`) | Multi-Krum: counts | n² + one tile per core |
//! | Bulyan | [`bulyan`] | — | n² + output + one tile per core |
//!
//! Also [`clip`] (L2 norm clipping) and [`server_optimizer`] (FedAdam, FedYogi, FedAdagrad).
//! The configuration-level choice is [`Kernel`] / [`Aggregation`]; inputs are validated
//! (lengths, finiteness, weights, enough updates) by [`Kernel::combine`] before any kernel runs.

pub mod bulyan;
pub mod clip;
pub mod custom;
mod error;
mod kernel;
pub mod krum;
pub mod order_statistics;
pub mod server_optimizer;
pub mod sorting_network;
mod tiles;
pub mod weighted_mean;

#[cfg(test)]
mod reference;

pub use error::{validate, KernelError, SettingsError};
pub use kernel::{Aggregation, Combined, Kernel};
pub use weighted_mean::{weighted_mean, WeightedMean};
