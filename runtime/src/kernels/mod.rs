//! # Aggregation kernels
//!
//! Pure functions and accumulators over flat `f32` buffers; no network, no actors. The
//! aggregator actor hosts them.
//!
//! - [`WeightedMean`] — FedAvg, streaming: each update is folded in as it arrives, so memory is
//!   O(model) whatever the number of silos.

mod weighted_mean;

pub use weighted_mean::WeightedMean;
