//! # fedsilo-policies
//!
//! The rules a federation runs by, as data. A [`Policy`] is loaded from TOML
//! ([`Policy::from_toml_str`] / [`Policy::load`]), validated once at load, and then evaluated by
//! pure functions ([`participation::select_cohort`], [`participation::quorum_verdict`]) that take
//! the policy and a context and return a [`Verdict`] carrying its reasons. Nothing here touches
//! the network or a clock: the caller passes in what it observed, so every rule is unit- and
//! property-testable.
//!
//! The policy model is intentionally small for now: minimum silos per round, quorum to commit,
//! and round timing (deadline and grace). Later rules (residency, admission, privacy budget)
//! join as further sections of the same document.

mod error;
pub mod participation;
mod policy;
mod verdict;

pub use error::PolicyError;
pub use policy::{ParticipationRules, Policy, RoundTiming};
pub use verdict::Verdict;
