//! The silo's data: rows read from CSV under the declared schema, split into training and
//! held-out parts, and encoded into feature matrices with the federation's scaling.

mod dataset;
mod encode;

pub use dataset::{unlabelled, Dataset, Split};
pub use encode::{encode, local_stats, scaling_from};
