//! # The audit journal
//!
//! Every decision the coordinator takes — a round started (cohort, exclusions and why), an
//! update admitted or refused, the aggregation and its inputs, the validation figures, a
//! commit, rejection or abandonment, a policy change, a privacy charge — is appended to
//! `<state_dir>/audit.jsonl`, hash-chained and signed with the coordinator's certificate key
//! ([`journal`]). `fedsilo audit verify` checks the chain, the signatures and the state
//! directory against it, and names the first thing wrong ([`verify`]).

pub mod entry;
pub mod history;
pub mod journal;
pub mod record;

pub mod verify;

pub use history::History;
pub use journal::{AuditError, Journal};
pub use record::Record;
