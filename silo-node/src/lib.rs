//! # silo-node — the process a silo runs
//!
//! It holds the silo's data and never sends it: it loads a CSV under the federation's declared
//! schema ([`data`]) or a model's manifest, connects to the coordinator over mutual TLS
//! ([`node`]), and hosts the silo's [`trainer::TrainerActor`], which trains every model through
//! one interface ([`model_trainers`]: the built-in MLP of [`train`], the text classifier, the
//! silo's own program) from the checkpoint it is sent and returns only the update, its example
//! count and metrics.

extern crate blas_src;
extern crate openblas_src;

#[cfg(feature = "fault-injection")]
pub mod attack;
pub mod bulk_link;
pub mod data;
pub mod external;
pub mod faults;
pub mod model_trainers;
pub mod node;
pub mod score;
pub mod status;
pub mod train;
pub mod trainer;
