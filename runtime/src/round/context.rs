//! Everything a round needs, handed to it by the coordinator when it dispatches the round: the
//! base model, the plan, the cohort, the policy, the actors it works with and where updates go.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fedsilo_policies::Policy;
use ractor::ActorRef;
use tokio::sync::watch;

use crate::actors::aggregator::AggregatorMessage;
use crate::actors::policy::PolicyMessage;
use crate::actors::validator::ValidatorMessage;
use crate::audit::Journal;
use crate::cluster::PeerDirectory;
use crate::events::EventLog;
use crate::kernels::server_optimizer::OptimizerState;
use crate::kernels::Aggregation;
use crate::model::{Architecture, Digest};
use crate::privacy::budget::RoundSpend;
use crate::protocol::regional::RegionalHandle;
use crate::protocol::{EvalMetrics, LoraTrain, Personalize, Scaling, SiloHandle, TrainPlan};

/// The committed model the round starts from.
#[derive(Debug, Clone)]
pub struct BaseModel {
    /// Version.
    pub version: u64,
    /// Parameters.
    pub params: Arc<Vec<f32>>,
    /// Their digest.
    pub digest: Digest,
}

/// Everything a round needs.
#[derive(Debug, Clone)]
pub struct RoundContext {
    /// The training run the round belongs to (a serving coordinator).
    pub run: Option<u64>,
    /// Round number.
    pub round: u64,
    /// Training rows each silo reported at its schema check: an update may claim no more
    /// examples (its weight) than that.
    pub reported_rows: BTreeMap<String, u64>,
    /// Base model.
    pub base: BaseModel,
    /// Architecture.
    pub spec: Architecture,
    /// Local training plan.
    pub plan: TrainPlan,
    /// Personalisation the silos apply when they score the candidate.
    pub personalize: Option<Personalize>,
    /// LoRA: `base` holds the adapters; this is the frozen base under them (sent to a silo
    /// only if it does not hold it).
    pub lora: Option<(LoraTrain, Arc<Vec<f32>>)>,
    /// Agreed scaling.
    pub scaling: Scaling,
    /// The cohort.
    pub cohort: Vec<SiloHandle>,
    /// Silos left out by selection, with reasons (for the summary).
    pub excluded: Vec<(String, String)>,
    /// Policy in force (timings); verdicts come from the actor.
    pub policy: Policy,
    /// The Policy actor.
    pub policy_actor: ActorRef<PolicyMessage>,
    /// The Aggregator actor.
    pub aggregator: ActorRef<AggregatorMessage>,
    /// The Validator actor.
    pub validator: ActorRef<ValidatorMessage>,
    /// Peer directory (departures, byte counters).
    pub directory: Arc<PeerDirectory>,
    /// The silos' bulk links.
    pub bulk: Arc<crate::bulk::BulkLinks>,
    /// Where updates are spilled (`<state_dir>/spill`) when the round's updates together
    /// would take more than `spill_above` bytes.
    pub spill_dir: std::path::PathBuf,
    /// See `spill_dir`.
    pub spill_above: usize,
    /// Transfer chunk, values.
    pub chunk: usize,
    /// Event sink.
    pub events: Arc<EventLog>,
    /// How updates are combined (kernel, clipping, server optimiser).
    pub aggregation: Aggregation,
    /// The server optimiser's state before this round (when one is configured).
    pub optimizer: Option<OptimizerState>,
    /// The share of the run's rounds before this one, in [0, 1] (the server learning-rate
    /// schedule).
    pub progress: f32,
    /// Residency: the regional aggregator each routed silo's update goes to (empty: the
    /// coordinator aggregates every update itself).
    pub routes: BTreeMap<String, RegionalHandle>,
    /// The silo-level DP spend charged for this round before dispatch (when the policy has
    /// `[privacy]`), recorded with the version.
    pub privacy_spend: Option<RoundSpend>,
    /// The audit journal.
    pub journal: Arc<Journal>,
    /// The version number the candidate will have.
    pub version: u64,
    /// The central hold-out node, if the policy names one and it is connected: it scores the
    /// candidate with the cohort.
    pub holdout: Option<SiloHandle>,
    /// The current version's held-out figures, which the validation gate compares with.
    pub baseline: BTreeMap<String, EvalMetrics>,
    /// Names of silos the coordinator's heartbeats currently find silent. A cohort member that
    /// turns up here is dropped from the round at once (a frozen peer never closes its session).
    pub unhealthy: watch::Receiver<BTreeSet<String>>,
}
