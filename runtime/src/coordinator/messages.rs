//! What the Coordinator is sent: its own timers and the answers of the tasks it spawns
//! (heartbeats, schema checks, scaling, rounds, the comparison), and the control requests of
//! operators and platform actors, with the reasons one can be refused.

use ractor::RpcReplyPort;

use crate::events::ComparisonRow;
use crate::protocol::Scaling;
use crate::round::RoundOutcome;

/// Messages of the Coordinator actor.
#[derive(Debug)]
pub enum CoordinatorMessage {
    /// Periodic: refresh membership, check health, send pings, start work when idle.
    Tick,
    /// A heartbeat came back, or did not.
    PingResult {
        /// The silo.
        silo: String,
        /// Its session at the time of the ping.
        node_id: u64,
        /// Whether it answered in time.
        ok: bool,
        /// The ping's sequence number.
        seq: u64,
        /// The version deployed at the silo, as its answer said.
        deployed: Option<crate::protocol::ModelRef>,
    },
    /// A deployment's delivery to a silo ended.
    Delivered {
        /// The silo.
        silo: String,
        /// Its session at the time.
        node_id: u64,
        /// The order delivered.
        deployment: u64,
        /// How it ended.
        result: super::deployments::Delivery,
    },
    /// Feature-scaling agreement finished.
    ScalingDone(ScalingOutcome),
    /// A round finished.
    RoundDone(Box<RoundOutcome>),
    /// The local-only comparison finished.
    ComparisonDone(Vec<ComparisonRow>),
    /// A joining silo answered the schema check.
    SchemaChecked {
        /// The silo.
        silo: String,
        /// Its session at the time of the check.
        node_id: u64,
        /// `Ok(Some((software version, training rows)))`: same schema; `Ok(None)`: no answer
        /// (ask again); `Err`: block, with why.
        result: Result<Option<(String, u64)>, super::membership::Blocked>,
    },
    /// An operator or a platform actor steers the federation (see [`crate::control`]); the
    /// reply says what was done, or why it cannot be done now.
    Control(ControlRequest, RpcReplyPort<Result<String, ControlError>>),
}

impl ractor::Message for CoordinatorMessage {}

/// Result of the scaling agreement.
#[derive(Debug)]
pub struct ScalingOutcome {
    /// The scaling, if enough silos contributed.
    pub scaling: Option<Scaling>,
    /// Contributors.
    pub silos: Vec<String>,
    /// Rows behind the statistics.
    pub rows: u64,
    /// Silos to block, with reasons.
    pub blocked: Vec<(String, String)>,
}

/// What is asked of the coordinator. `by` names who asked (an operator certificate, an API
/// token, an actor) and goes into the audit journal.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlRequest {
    /// Start no new round until resumed (a round in flight finishes). Survives a restart.
    Pause {
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// Start rounds again.
    Resume {
        /// Who.
        by: String,
    },
    /// While paused: start one round now (the federation stays paused afterwards).
    StartRound {
        /// Who.
        by: String,
    },
    /// Approve or reject the candidate awaiting approval, or roll back to an earlier
    /// committed version (not while a round is in flight).
    Decide {
        /// What.
        kind: crate::decision::Kind,
        /// The candidate the caller reviewed, or the version to make current again.
        version: u64,
        /// Why (recorded).
        reason: String,
        /// Who.
        by: String,
        /// Their certificate (DER, hex), when they authenticated with one.
        certificate: String,
    },
    /// Submit or cancel a training run.
    Run(RunRequest),
    /// Deploy a committed version to silos ([`crate::deploy`]).
    Deploy {
        /// The version.
        version: u64,
        /// Where to.
        target: crate::deploy::Target,
        /// Who.
        by: String,
        /// Why (recorded).
        reason: String,
    },
}

/// Submitting and cancelling training runs (a serving coordinator, [`crate::runs`]).
#[derive(Debug, Clone, PartialEq)]
pub enum RunRequest {
    /// Queue a run. The answer starts `run <id> ` (queued, or found by its idempotency key).
    Submit {
        /// Its rounds and own settings.
        plan: crate::runs::RunPlan,
        /// Who.
        by: String,
    },
    /// Cancel a queued run, or end the running one at the next round boundary.
    Cancel {
        /// The run.
        run: u64,
        /// Who.
        by: String,
        /// Why (recorded).
        reason: String,
    },
}

/// Why a request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The federation's state does not allow it now (nothing awaits approval, a round is in
    /// flight, ...). The message says what the state is.
    #[error("{0}")]
    Conflict(String),
    /// What the request names does not exist (a run id nobody submitted).
    #[error("{0}")]
    NotFound(String),
    /// The coordinator could not carry it out (its journal or registry failed); it stops, and
    /// a restart reconciles its state with the journal.
    #[error("{0}")]
    Failed(String),
    /// The coordinator did not answer (it stopped, or is stuck).
    #[error("the coordinator is not answering: {0}")]
    Unavailable(String),
}
