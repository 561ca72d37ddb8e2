//! What a coordinator is started with: the run's settings (from `federation.toml`), the
//! handles of the actors and files it works with, and what it reports when the run ends.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::{mpsc, watch};

use crate::actors::aggregator::AggregatorMessage;
use crate::actors::policy::PolicyMessage;
use crate::actors::validator::ValidatorMessage;
use crate::audit::{History, Journal};
use crate::cluster::PeerDirectory;
use crate::compression::Compression;
use crate::data::DataContract;
use crate::events::EventLog;
use crate::identity::signature::CaCheck;
use crate::kernels::Aggregation;
use crate::model::lora::LoraPlan;
use crate::model::Architecture;
use crate::registry::Registry;
use crate::status::FederationStatus;
use crate::store::ModelStore;

/// A pretrained initial model, checked against the architecture.
#[derive(Debug, Clone)]
pub struct PretrainedModel {
    /// Its parameters, in the layout's order (shared with version 0: one copy in memory).
    pub params: std::sync::Arc<Vec<f32>>,
    /// Where it came from (file and SHA-256), for the record.
    pub origin: String,
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// The federation's name (`federation.name`).
    pub name: String,
    /// Run rounds up to this round number.
    pub rounds: u64,
    /// Architecture: the built-in MLP, or a model described by its manifest (which needs
    /// `initial`: only trainers know how to initialise it).
    pub spec: Architecture,
    /// Local epochs per round.
    pub epochs: u32,
    /// Mini-batch size.
    pub batch_size: u32,
    /// Learning rate.
    pub learning_rate: f32,
    /// FedProx μ (0: plain local SGD).
    pub prox_mu: f32,
    /// A pretrained model to start from instead of a seeded random one.
    pub initial: Option<PretrainedModel>,
    /// A described model's pinned files, sent to silos that lack them.
    pub model_files: Option<Arc<crate::model::files::ModelFiles>>,
    /// How silos compress their updates.
    pub compression: Compression,
    /// Personalisation epochs (0: off).
    pub personalize_epochs: u32,
    /// LoRA: train and send only adapters on the frozen initial model.
    pub lora: Option<LoraPlan>,
    /// Seed for the initial model and training.
    pub seed: u64,
    /// Transfer chunk size, values.
    pub chunk: usize,
    /// A round whose updates together would exceed this many bytes spills them to disk.
    pub spill_above: usize,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Silence limit.
    pub heartbeat_timeout: Duration,
    /// Give up when no round could start for this long.
    pub wait_for_silos: Duration,
    /// Ask for local-only baselines at the end.
    pub compare_local: bool,
    /// With `compare_local`: a model trained on the pooled training rows, scored by every
    /// silo beside local-only and federated (the non-private reference).
    pub pooled_reference: Option<PretrainedModel>,
    /// Keep serving between runs, taking runs as jobs ([`crate::runs`]); `rounds` is the
    /// first run's size. Otherwise one run up to round `rounds`, then the coordinator stops.
    pub serve: bool,
    /// The members the federation expects (`[[members]]`).
    pub roster: Vec<crate::federation::MemberSpec>,
    /// Runs submitted on a schedule (`[schedule]`, with `serve`).
    pub schedule: Option<crate::retraining::RetrainSchedule>,
    /// Kernel, clipping, server optimiser.
    pub aggregation: Aggregation,
    /// This coordinator's region (from its certificate): whether it may process an update
    /// itself under the residency rules.
    pub region: String,
    /// This coordinator's node name (from its certificate).
    pub node: String,
    /// Fault injection for tests: route this silo's update to an aggregator the policy does
    /// not allow, to show the aggregator refuses it.
    pub misroute: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Rounds committed in this run.
    pub rounds_committed: u64,
    /// Current version.
    pub version: u64,
    /// The error, if the run failed.
    pub error: Option<String>,
}

/// Start-up arguments.
pub struct CoordinatorArgs {
    /// Settings.
    pub settings: CoordinatorSettings,
    /// Verified peers.
    pub directory: Arc<PeerDirectory>,
    /// Their bulk links.
    pub bulk: Arc<crate::bulk::BulkLinks>,
    /// What every silo's data must agree on (the schema check, the scaling agreement).
    pub data: DataContract,
    /// Policy actor.
    pub policy: ActorRef<PolicyMessage>,
    /// Aggregator actor.
    pub aggregator: ActorRef<AggregatorMessage>,
    /// Validator actor.
    pub validator: ActorRef<ValidatorMessage>,
    /// Event sink.
    pub events: Arc<EventLog>,
    /// State directory.
    pub store: ModelStore,
    /// The audit journal (opened, verified and reconciled with the store by the caller).
    pub journal: Arc<Journal>,
    /// What the journal held when the coordinator started.
    pub history: History,
    /// Metadata of every version (the coordinator is its one writer).
    pub registry: Arc<Registry>,
    /// The consortium CA, to check operators' decisions against.
    pub ca: CaCheck,
    /// The coordinator's certificate and key: deployment notes are signed with it.
    pub credentials: crate::tls::NodeCredentials,
    /// Receives the result when the run ends.
    pub done: mpsc::UnboundedSender<RunResult>,
    /// Where the coordinator publishes its status after every step.
    pub status: watch::Sender<FederationStatus>,
}
