//! # fedsilo — cross-silo federated fine-tuning
//!
//! A coordinator sends the model to the data: each silo trains locally and returns only a model
//! update; the coordinator combines the updates, evaluates the candidate at the silos and
//! commits it as a new version. Nodes form a ractor cluster over mutual TLS, each node's
//! identity read from its certificate.
//!
//! Map of the crate:
//! - [`certs`], [`identity`], [`tls`] — the consortium CA, who a node is, TLS configurations;
//! - [`cluster`] — ractor_cluster nodes whose sessions are bound to certificate identities;
//! - [`protocol`] — the versioned coordinator ↔ silo messages and chunked transfers;
//! - [`model`] — flat parameters with a named layout, safetensors checkpoints;
//! - [`data`] — the declared schema of the federation's data;
//! - [`kernels`] — aggregation kernels;
//! - [`coordinator`] — the federation's state machine, one concern per file;
//! - [`actors`] — Aggregator, Validator, Policy, regional aggregator;
//! - [`round`] — one federated round, end to end; [`events`] — what a run reports;
//!   [`comparison`] — local-only vs federated vs pooled at the end of a run;
//! - [`runs`] — training runs as jobs: the queue and each run's state machine; [`retraining`] —
//!   runs submitted on a schedule;
//! - [`federation`] — the coordinator's configuration file.

extern crate blas_src;
extern crate openblas_src;

pub mod actors;
pub mod admin;
pub mod audit;
pub mod blas_threads;
pub mod bulk;
pub mod certs;
pub mod cluster;
pub mod comparison;
pub mod compatibility;
pub mod compression;
pub mod connection_budget;
pub mod control;
pub mod coordinator;
pub mod data;
pub mod decision;
pub mod deploy;
pub mod error;
pub mod events;
pub mod federation;
pub mod http_client;
pub mod identity;
pub mod kernels;
pub mod launch;
pub mod line_file;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod policy_archive;
pub mod privacy;
pub mod protocol;
pub mod registry;
pub mod report;
pub mod republish;
pub mod retraining;
pub mod round;
pub mod runs;
pub mod secagg;
pub mod state_dir;
pub mod status;
pub mod store;
pub mod tls;
pub mod webhooks;

pub use error::{Error, Result};
