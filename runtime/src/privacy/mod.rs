//! # Differential privacy
//!
//! [`rdp`] — the Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism (Mironov
//! 2017; Mironov, Talwar, Zhang 2019), composed over steps and converted to (ε, δ) with the
//! tighter conversion of Canonne, Kamath, Steinke 2020 / Balle et al. 2020, over the same dense
//! grid of orders as Google's `dp_accounting`, whose values it reproduces.

pub mod rdp;
