//! # Differential privacy
//!
//! [`rdp`] — the Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism (Mironov
//! 2017; Mironov, Talwar, Zhang 2019), composed over steps and converted to (ε, δ) with the
//! tighter conversion of Canonne, Kamath, Steinke 2020 / Balle et al. 2020, over the same dense
//! grid of orders as Google's `dp_accounting`, whose values it reproduces.
//!
//! [`noise`] — Gaussian noise from a generator seeded by the operating system.
//!
//! [`budget`] — the coordinator's per-silo book of silo-level DP spend, written before each
//! round is dispatched, and the budget check that leaves out silos a round would overspend.

pub mod budget;
pub mod mechanism;
pub mod noise;
pub mod rdp;
