//! The coordinator's admin HTTP API: status, silos, rounds, versions and the audit tail for
//! dashboards; approve or reject a candidate for an approval workflow; start a round, pause and
//! resume for operators. HTTPS only; callers authenticate with an operator certificate or a
//! scoped bearer token. See `openapi.json` (served at `GET /openapi.json`).

pub mod auth;
pub mod client;
pub mod routes;
pub mod server;
pub mod tokens;

pub use client::AdminClient;
pub use routes::{AdminApi, OPENAPI};
pub use server::AdminListener;
pub use tokens::Scope;
