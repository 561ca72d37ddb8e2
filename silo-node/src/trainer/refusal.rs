//! Why a silo refuses a request or has no answer for it. The coordinator hears the message
//! (as a `Response::Error`) and records it against the silo; the silo logs it. Every
//! variant names what was asked and what this silo holds, so the two logs can be read side by
//! side.

use fedsilo::model::{Digest, ModelError};
use fedsilo::privacy::budget::BookError;
use fedsilo::secagg::participant::ParticipateError;

use crate::model_trainers::TrainError;

/// A refusal, or a failure to do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A model that was never sent (or fell out of the cache).
    #[error("model v{version} ({}) was not received; send it with PutModel first", digest.short())]
    NotReceived {
        /// Its version.
        version: u64,
        /// Its digest.
        digest: Digest,
    },
    /// A model whose size is not its spec's.
    #[error("{0} size does not fit its spec")]
    Size(&'static str),
    /// The spec or the LoRA plan is not usable.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Adapters of another size than the plan's.
    #[error("{got} adapter values, the plan's adapters have {want}")]
    Adapters {
        /// Values received.
        got: usize,
        /// Values the plan needs.
        want: usize,
    },
    /// The model's input width is not this silo's schema's.
    #[error("model expects {model} inputs, this silo's schema encodes {schema} (schemas differ?)")]
    Inputs {
        /// The model's width.
        model: usize,
        /// This silo's.
        schema: usize,
    },
    /// Scaling for another number of numeric features.
    #[error("scaling has {got} values, the schema has {want} numeric features")]
    ScalingLength {
        /// Values sent.
        got: usize,
        /// Numeric features here.
        want: usize,
    },
    /// Scaling with a non-finite mean or a non-positive deviation.
    #[error("scaling has a non-finite mean or a non-positive standard deviation")]
    ScalingValues,
    /// A described model asked for before its files have all arrived.
    #[error("this silo is still receiving (or loading) its model's files from the coordinator")]
    FilesPending,
    /// More passes over the data than a silo makes for one request.
    #[error("{what} of {passes} passes over the training rows: this silo makes at most {max} for one request")]
    TooMuchWork {
        /// What was asked.
        what: &'static str,
        /// Passes it would take.
        passes: u64,
        /// The most allowed.
        max: u64,
    },
    /// Training asked while a round trains.
    #[error("busy training round {0}")]
    Busy(u64),
    /// Training asked of a central hold-out.
    #[error(
        "this node is a central hold-out (--evaluate-only): it scores candidates and never trains"
    )]
    EvaluateOnly,
    /// LoRA asked of a silo that trains otherwise.
    #[error("LoRA rounds train with the built-in trainer: this silo runs an external trainer or its own DP-SGD")]
    LoraNeedsBuiltIn,
    /// The silo's own DP-SGD budget would be exceeded.
    #[error("privacy budget: DP-SGD for round {round} ({steps} steps at q = {q:.4}, z = {z}) would take this silo's ε from {spent:.3} to {after:.3}, above its --dp-epsilon-budget {budget} at δ = {delta:e}")]
    Budget {
        /// The round.
        round: u64,
        /// Its steps.
        steps: u64,
        /// Sampling rate.
        q: f64,
        /// Noise multiplier.
        z: f64,
        /// ε spent so far.
        spent: f64,
        /// ε after the round.
        after: f64,
        /// The budget.
        budget: f64,
        /// δ.
        delta: f64,
    },
    /// The DP-SGD spend cannot be recorded.
    #[error("cannot record the DP-SGD spend, so this silo does not train: {0}")]
    Book(#[from] BookError),
    /// No secure-aggregation keys for that round.
    #[error("no secure-aggregation keys for round {0} here")]
    NoKeys(u64),
    /// No credentials to sign keys with.
    #[error("this silo has no credentials to sign secure-aggregation keys")]
    NoCredentials,
    /// No consortium root to check peers' keys with.
    #[error("this silo has no consortium root to check keys against")]
    NoRoot,
    /// Keys asked for a past round.
    #[error("keys for round {round} asked after round {last}: a round is keyed once, and rounds only move forward")]
    KeyedTwice {
        /// Asked.
        round: u64,
        /// Keyed last.
        last: u64,
    },
    /// No update for that round.
    #[error("no update for round {0} here")]
    NoUpdate(u64),
    /// A range beyond the update.
    #[error("asked for values {start}..{end} of {what} of {len}")]
    Range {
        /// First value asked.
        start: u64,
        /// End asked.
        end: u64,
        /// "an update", "a masked update".
        what: &'static str,
        /// Values there are.
        len: u64,
    },
    /// A secure-aggregation step refused.
    #[error(transparent)]
    Participate(#[from] ParticipateError),
    /// A model of another kind than this silo trains (the MLP asked of a text silo, another
    /// manifest, ...).
    #[error("asked to use {asked}, but this silo was started for {holds}: check its --schema or --manifest")]
    WrongModel {
        /// What was asked.
        asked: String,
        /// What this silo holds.
        holds: String,
    },
    /// The model's trainer refused or failed (an external program's failure included).
    #[error(transparent)]
    Trainer(#[from] TrainError),
    /// Not a secure-aggregation request (an internal routing error).
    #[error("not a secure-aggregation request: {0}")]
    NotSecureAggregation(&'static str),
}
