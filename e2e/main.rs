//! # fedsilo's end-to-end tests
//!
//! Real `fedsilo` and `silo-node` processes, on loopback over mutual TLS, on the example data:
//! a federation is started per test ([`common::Federation::start`]), driven the way an operator
//! or an attacker would drive it, and judged by what it wrote (rounds, events, the audit
//! journal, checkpoints) and what its processes did. Unit tests stay beside the code; the
//! in-process mTLS tests are in `runtime/tests/`.
//!
//! Why one test binary in its own folder: these tests need the release binaries of both
//! crates and a harness (`fedsilo-testkit`) that production never links. Cargo builds a
//! package's binaries for its integration tests, so the target is declared by `silo-node`
//! (`[[test]] name = "e2e"`, path `../e2e/main.rs`), which puts `silo-node` and `fedsilo`
//! side by side; and one binary links once instead of fifteen times.
//!
//! Run one area with a filter: `cargo test --release -p silo-node --test e2e hardening::`.
//! `cargo test -p silo-node` does not rebuild the `fedsilo` binary: build the workspace first
//! (`cargo build --release --workspace --all-targets`).

mod common;

mod admin_api;
mod audit;
mod business;
mod comparison;
mod crash;
mod deployment;
mod examples;
mod federation;
mod fine_tuning;
mod fuzz;
mod governance;
mod hardening;
mod n8n_workflow;
mod operations;
mod privacy;
mod residency;
mod robustness;
mod runs;
mod secure_aggregation;
mod text_model;
mod transport;
mod validation;
