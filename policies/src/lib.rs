//! # fedsilo-policies
//!
//! The rules a federation runs by, as data. A [`Policy`] is loaded from TOML
//! ([`Policy::from_toml_str`] / [`Policy::load`]), validated once at load, and then evaluated by
//! pure functions ([`participation::select_cohort`], [`participation::quorum_verdict`]) that take
//! the policy and a context and return a [`Verdict`] carrying its reasons. Nothing here touches
//! the network or a clock: the caller passes in what it observed, so every rule is unit- and
//! property-testable.
//!
//! The document has eight parts: `regions` (the consortium's regions), `[participation]` (who
//! may take part in a round, how many, how much each may weigh), `[rounds]` (deadline, grace),
//! `[admission]` (what an arriving update must look like; quarantine of repeat offenders),
//! `[residency]` (where each region's updates may be processed), `[privacy]`
//! (silo-level differential privacy and the budget it may spend), `[validation]` (the gate
//! a candidate must pass to become current) and `[deployment]` (whether a new version is
//! deployed to the silos at once). See
//! `policies/examples/*.toml` for annotated samples.

pub mod admission;
pub mod business;
pub mod deployment;
pub mod duration;
mod error;
pub mod explain;
mod locate;
pub mod participation;
mod policy;
mod policy_rules;
pub mod privacy;
pub mod residency;
pub mod secure_aggregation;
pub mod validation;
mod verdict;

pub use error::PolicyError;
pub use policy::{
    parse_version, AdmissionRules, Anomaly, ParticipationRules, Policy, Quarantine, Residency,
    RoundTiming, DEFAULT_MAX_NORM_RATIO,
};
pub use verdict::Verdict;
