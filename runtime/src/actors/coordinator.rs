//! The Coordinator actor: the federation's state machine and the only actor that advances the
//! model version.
//!
//! It learns silos from the `fedsilo.trainer` process group, keeping only those whose session
//! is bound to a certificate of role `silo`; it pings each one every heartbeat interval (a
//! frozen peer is otherwise never noticed) and marks silent ones unhealthy. When idle it asks
//! the Policy actor for a cohort; the first time, the cohort agrees on feature scaling (sums
//! only), afterwards each cohort runs a round ([`crate::round::run_round`], off the mailbox).
//! A validated candidate is committed here: checkpoint written and synced, round logged, then
//! the version advances. At the end it can ask every silo for a local-only baseline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo_policies::admission::QuarantineBook;
use fedsilo_policies::participation::Candidate;
use fedsilo_policies::Policy;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{mpsc, watch};

use super::aggregator::AggregatorMessage;
use super::ask;
use super::policy::{PolicyMessage, Reload};
use super::validator::ValidatorMessage;
use crate::audit::entry::now_ms;
use crate::audit::signature::CaCheck;
use crate::audit::{History, Journal, Record};
use crate::cluster::{PeerDirectory, AGGREGATOR_GROUP, TRAINER_GROUP};
use crate::compression::Compression;
use crate::control::{ControlError, ControlRequest};
use crate::data::Schema;
use crate::decision::{self, Decision, Kind as DecisionKind};
use crate::events::{ComparisonRow, Event, EventLog, RoundSummary};
use crate::identity::Role;
use crate::kernels::server_optimizer::OptimizerState;
use crate::kernels::Aggregation;
use crate::model::checkpoint::Checkpoint;
use crate::model::lora::{adapters_from_hex, adapters_to_hex, Adapters, LoraPlan, ADAPTERS_KEY};
use crate::model::{initial_params, Digest, ModelSpec};
use crate::privacy::budget::PrivacyBook;
use crate::privacy::mechanism::{check_aggregation, silo_share};
use crate::protocol::transfer::put_model;
use crate::protocol::{
    call, EvalMetrics, LoraTrain, ModelRef, Personalize, Request, Response, Scaling, TrainPlan,
    TrainerMessage,
};
use crate::registry::{Registry, Status, VersionMeta};
use crate::round::{
    run_round, Attendance, BaseModel, RegionalHandle, RoundContext, RoundOutcome, SiloHandle,
};
use crate::status::{AwaitingCandidate, FederationStatus, Pause, RunState, SiloStatus};
use crate::store::ModelStore;
use crate::Error;

/// The adapters of version `version` (its checkpoint's `params` and `meta`): fresh ones for
/// version 0, else the ones its metadata holds, which must reproduce the checkpoint when merged
/// into the frozen base. Empty without LoRA. An error says the LoRA plan or the base changed.
fn adapters_in(
    state: &CoordinatorState,
    version: u64,
    params: &[f32],
    meta: &std::collections::HashMap<String, String>,
) -> crate::Result<Vec<f32>> {
    let Some(layout) = &state.lora else {
        return Ok(Vec::new());
    };
    if version == 0 {
        return Ok(layout.init(state.args.settings.seed));
    }
    let bad = |message: String| crate::Error::Checkpoint {
        origin: format!("version {version}"),
        message,
    };
    let hex = meta
        .get(ADAPTERS_KEY)
        .ok_or_else(|| bad("holds no LoRA adapters: it was not made under [plan.lora]".into()))?;
    let values =
        adapters_from_hex(hex).ok_or_else(|| bad("its LoRA adapters are not hex".into()))?;
    if values.len() != layout.len || values.iter().any(|v| !v.is_finite()) {
        return Err(bad(format!(
            "holds {} adapter values, [plan.lora] now asks for {}: the LoRA plan changed",
            values.len(),
            layout.len
        )));
    }
    if Digest::of_f32(&layout.merge(&state.initial, &values)) != Digest::of_f32(params) {
        return Err(bad(
            "its adapters merged into the frozen base do not give the checkpoint: the base or [plan.lora] changed"
                .into(),
        ));
    }
    Ok(values)
}

/// A pretrained initial model, checked against the architecture.
#[derive(Debug, Clone)]
pub struct PretrainedModel {
    /// Its parameters, in the layout's order.
    pub params: Vec<f32>,
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
    /// Architecture.
    pub spec: ModelSpec,
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
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Silence limit.
    pub heartbeat_timeout: Duration,
    /// Give up when no round could start for this long.
    pub wait_for_silos: Duration,
    /// Ask for local-only baselines at the end.
    pub compare_local: bool,
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
    /// The schema (digest check at scaling agreement).
    pub schema: Schema,
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
    /// Receives the result when the run ends.
    pub done: mpsc::UnboundedSender<RunResult>,
    /// Where the coordinator publishes its status after every step.
    pub status: watch::Sender<FederationStatus>,
}

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
        result: Result<Option<(String, u64)>, String>,
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

/// Where a silo stands with the schema check every joining silo must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemaCheck {
    /// Not asked yet (or the last attempt failed in transit): ask on the next tick.
    Pending,
    /// Asked, no answer yet.
    Asking,
    /// Same schema digest as the federation.
    Passed,
}

struct SiloEntry {
    handle: SiloHandle,
    region: String,
    role: String,
    software_version: String,
    /// Training rows it reported at its schema check: the most examples an update may claim.
    reported_rows: Option<u64>,
    last_ok: Instant,
    healthy: bool,
    ping_inflight: bool,
    schema: SchemaCheck,
    blocked: Option<String>,
}

/// The Coordinator's state.
pub struct CoordinatorState {
    args: CoordinatorArgs,
    silos: BTreeMap<String, SiloEntry>,
    model: BaseModel,
    initial: Arc<Vec<f32>>,
    /// Its digest (under LoRA, the frozen base's reference).
    initial_digest: Digest,
    /// LoRA: the adapters' layout, and the current version's adapters (on the frozen
    /// `initial`). Empty without LoRA.
    lora: Option<Adapters>,
    adapters: Vec<f32>,
    scaling: Option<Scaling>,
    next_round: u64,
    committed: u64,
    busy: bool,
    /// The round dispatched and not yet done, if any.
    in_flight: Option<u64>,
    /// Its task, to stop it when the coordinator stops.
    round_task: Option<tokio::task::AbortHandle>,
    /// The number the next candidate gets (rejected candidates use numbers too).
    next_version: u64,
    /// The current version's held-out figures, for the validation gate.
    baseline: BTreeMap<String, EvalMetrics>,
    /// A candidate that passed the gate and waits for an operator.
    awaiting: Option<Awaiting>,
    /// SHA-256 of every committed checkpoint, as journaled (for rollbacks).
    committed_sha: BTreeMap<u64, String>,
    /// Hashes of the operators' decisions already applied (each applies at most once).
    applied: BTreeSet<String>,
    idle_since: Instant,
    last_waiting: Vec<String>,
    finished: bool,
    compared: bool,
    last_eval: BTreeMap<String, EvalMetrics>,
    ping_seq: u64,
    unhealthy: watch::Sender<BTreeSet<String>>,
    optimizer: Option<OptimizerState>,
    quarantine: QuarantineBook,
    round_policy: Policy,
    /// Regional aggregators linked to this coordinator, by name.
    aggregators: BTreeMap<String, RegionalHandle>,
    /// Last failed round per silo name (kept across reconnects, for the cool-down rule).
    failures: BTreeMap<String, u64>,
    /// No new feature-scaling attempt before this instant (back-off after a failed one).
    scaling_retry_at: Option<Instant>,
    /// Silo-level DP spend per silo, on disk before each round is dispatched.
    privacy: PrivacyBook,
    /// Silos already reported as left out for their privacy budget.
    over_budget: BTreeSet<String>,
    /// The privacy budget leaves too few silos for another round.
    exhausted: bool,
    /// Paused by an operator: no new round starts (journaled; a restart stays paused).
    paused: Option<Pause>,
    /// While paused, one round was asked for.
    step: bool,
    /// How the run ended, once it has.
    error: Option<String>,
}

/// The Coordinator actor.
#[derive(Debug)]
pub struct CoordinatorActor;

impl Actor for CoordinatorActor {
    type Msg = CoordinatorMessage;
    type State = CoordinatorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: CoordinatorArgs,
    ) -> Result<CoordinatorState, ActorProcessingErr> {
        let spec = args.settings.spec.clone();
        let privacy = PrivacyBook::open(&args.store.dir().join("privacy.jsonl"))?;
        let initial = Arc::new(match &args.settings.initial {
            Some(p) => p.params.clone(),
            None => initial_params(&spec, args.settings.seed),
        });
        let mut state = CoordinatorState {
            model: BaseModel {
                version: 0,
                digest: Digest::of_f32(&initial),
                params: initial.clone(),
            },
            lora: match &args.settings.lora {
                Some(plan) => Some(Adapters::new(&spec, plan)?),
                None => None,
            },
            adapters: Vec::new(),
            initial_digest: Digest::of_f32(&initial),
            initial,
            scaling: None,
            next_round: 1,
            committed: 0,
            busy: false,
            in_flight: None,
            round_task: None,
            next_version: 1,
            baseline: BTreeMap::new(),
            awaiting: None,
            committed_sha: BTreeMap::new(),
            applied: BTreeSet::new(),
            idle_since: Instant::now(),
            last_waiting: Vec::new(),
            finished: false,
            compared: false,
            last_eval: BTreeMap::new(),
            ping_seq: 0,
            unhealthy: watch::Sender::new(BTreeSet::new()),
            optimizer: None,
            quarantine: QuarantineBook::default(),
            round_policy: Policy::default(),
            failures: BTreeMap::new(),
            aggregators: BTreeMap::new(),
            scaling_retry_at: None,
            privacy,
            over_budget: BTreeSet::new(),
            exhausted: false,
            paused: None,
            step: false,
            error: None,
            silos: BTreeMap::new(),
            args,
        };
        state.adapters = adapters_in(&state, 0, &[], &std::collections::HashMap::new())?;
        state.committed_sha = state
            .args
            .history
            .versions
            .iter()
            .filter(|(_, j)| j.status == Status::Committed)
            .map(|(v, j)| (*v, j.file_sha256.clone()))
            .collect();
        // Every committed version is loaded only as the journal committed it (its SHA-256).
        if let Some(version) = state.args.store.current_version()? {
            let ckpt = load_committed(&state, version)?;
            if ckpt.spec != spec {
                return Err(format!(
                    "state directory {} holds a model `{}` but the configuration asks for `{}`; use another state_dir",
                    state.args.store.dir().display(),
                    ckpt.spec.describe(),
                    spec.describe()
                )
                .into());
            }
            let round: u64 = ckpt
                .metadata
                .get("fedsilo.round")
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            if state.lora.is_some() && state.committed_sha.contains_key(&0) {
                // Under LoRA the frozen base is the federation's version 0 where one was
                // committed, whatever the configuration now says. Otherwise it is the configured
                // base, and the adapters below must reproduce the checkpoint from it.
                let v0 = load_committed(&state, 0)?;
                state.initial_digest = Digest::of_f32(&v0.params);
                state.initial = Arc::new(v0.params);
            }
            state.adapters = adapters_in(&state, version, &ckpt.params, &ckpt.metadata)?;
            state.model = BaseModel {
                version,
                digest: Digest::of_f32(&ckpt.params),
                params: Arc::new(ckpt.params),
            };
            state.scaling = Some(ckpt.scaling);
            state.next_round = round + 1;
            state.optimizer = state.args.store.optimizer(version)?;
            state.args.events.emit(Event::Resumed {
                version,
                next_round: state.next_round,
            });
        }
        republish_committed(&state)?;
        // Numbers, the waiting candidate and checkpoint hashes come from the journal (the
        // registry was reconciled with it before the coordinator started).
        let history = state.args.history.clone();
        let versions = state.args.registry.list()?;
        state.next_version = versions
            .iter()
            .map(|m| m.version + 1)
            .chain(history.max_version.map(|v| v + 1))
            .max()
            .unwrap_or(1)
            .max(state.model.version + 1);
        state.baseline = versions
            .iter()
            .find(|m| m.version == state.model.version)
            .map(|m| m.validation.clone())
            .unwrap_or_default();
        state.applied = history.applied.clone();
        if let Some((by, reason)) = history.paused {
            // Say so: nothing else would show why no round starts.
            state.args.events.emit(Event::FederationPaused {
                by: by.clone(),
                reason: format!("{reason} (paused before the coordinator restarted; resume through the admin API)"),
            });
            state.paused = Some(Pause { by, reason });
        }
        // A candidate still awaiting approval keeps waiting, if its file is the one journaled.
        if let Some(v) = history.awaiting {
            let j = history.versions.get(&v);
            let path = state.args.store.candidate_path(v);
            let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
            if j.map(|j| j.file_sha256.as_str()) != Some(Digest::of_bytes(&bytes).hex().as_str()) {
                return Err(format!(
                    "{}: the candidate awaiting approval differs from the one the audit journal recorded; it cannot be approved (reject it, or restore the file)",
                    path.display()
                )
                .into());
            }
            let ckpt = Checkpoint::from_bytes(&bytes, &path.display().to_string())?;
            let meta = versions
                .iter()
                .find(|m| m.version == v)
                .cloned()
                .ok_or_else(|| format!("version {v} awaits approval but is not in the registry"))?;
            state.awaiting = Some(Awaiting {
                meta,
                ckpt,
                optimizer: state.args.store.candidate_optimizer(v)?,
                summary: None,
            });
        }
        // A round charged in the privacy book but never journaled (a crash between the two)
        // keeps its number too.
        if let Some(r) = state.privacy.last_round() {
            state.next_round = state.next_round.max(r + 1);
        }
        // A round the previous coordinator started and never finished is abandoned, and its
        // number is not used again.
        if let Some(round) = state.args.history.open_round {
            abandon(
                &state,
                round,
                "the coordinator stopped during the round; abandoned when it restarted",
            )?;
        }
        if let Some(last) = state.args.history.last_round {
            state.next_round = state.next_round.max(last + 1);
        }
        if let Some(o) = &state.args.settings.aggregation.server_optimizer {
            let len = state.model.params.len();
            if state.optimizer.as_ref().is_none_or(|st| st.m.len() != len) {
                state.optimizer = Some(o.initial_state(len));
            }
        } else {
            state.optimizer = None;
        }
        ractor::pg::monitor(TRAINER_GROUP.to_string(), myself.get_cell());
        myself.send_interval(state.args.settings.heartbeat_interval, || {
            CoordinatorMessage::Tick
        });
        publish(&state);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        if state.finished {
            if let CoordinatorMessage::Control(_, reply) = msg {
                let _ = reply.send(Err(ControlError::Conflict("the run is over".into())));
            }
            return Ok(());
        }
        // Heartbeat answers come N times a period; the next tick publishes what they changed.
        let heartbeat = matches!(msg, CoordinatorMessage::PingResult { .. });
        step(myself, msg, state).await;
        if !heartbeat {
            publish(state);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        // Stopped in an orderly way (operator interrupt) during a round: it will never end, so
        // say so now rather than leave it to the next start.
        if let Some(round) = state.in_flight.take() {
            if let Some(t) = state.round_task.take() {
                t.abort();
            }
            abandon(state, round, "the coordinator was stopped during the round")?;
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(_) = evt {
            if !state.finished {
                refresh_membership(state);
                maybe_start_work(state, &myself).await;
                publish(state);
            }
        }
        Ok(())
    }
}

/// Handles one message of a running federation.
async fn step(
    myself: ActorRef<CoordinatorMessage>,
    msg: CoordinatorMessage,
    state: &mut CoordinatorState,
) {
    match msg {
        CoordinatorMessage::Tick => {
            refresh_membership(state);
            refresh_aggregators(state);
            check_health(state, &myself);
            if !state.busy {
                if let Err(e) = apply_decisions(state) {
                    finish(
                        state,
                        &myself,
                        Some(format!("cannot apply a decision: {e}")),
                    );
                    return;
                }
            }
            maybe_start_work(state, &myself).await;
        }
        CoordinatorMessage::PingResult { silo, node_id, ok } => {
            if let Some(e) = state.silos.get_mut(&silo) {
                if e.handle.node_id == node_id {
                    e.ping_inflight = false;
                    if ok {
                        e.last_ok = Instant::now();
                        if !e.healthy {
                            e.healthy = true;
                            state.unhealthy.send_modify(|u| {
                                u.remove(&silo);
                            });
                            state.args.events.emit(Event::SiloHealthy { silo });
                        }
                    }
                }
            }
        }
        CoordinatorMessage::ScalingDone(outcome) => {
            state.busy = false;
            on_scaling(state, outcome);
            if state.scaling.is_none()
                && state.idle_since.elapsed() > state.args.settings.wait_for_silos
            {
                let why = format!(
                    "feature scaling could not be agreed within {:.0} s",
                    state.args.settings.wait_for_silos.as_secs_f64()
                );
                finish(state, &myself, Some(why));
                return;
            }
            maybe_start_work(state, &myself).await;
        }
        CoordinatorMessage::RoundDone(outcome) => {
            state.busy = false;
            state.in_flight = None;
            state.round_task = None;
            state.next_round += 1;
            state.idle_since = Instant::now();
            if let Err(e) = on_round(state, *outcome) {
                finish(state, &myself, Some(format!("cannot commit: {e}")));
                return;
            }
            maybe_start_work(state, &myself).await;
        }
        CoordinatorMessage::SchemaChecked {
            silo,
            node_id,
            result,
        } => {
            if let Some(e) = state.silos.get_mut(&silo) {
                if e.handle.node_id == node_id {
                    match result {
                        Ok(Some((version, rows))) => {
                            e.schema = SchemaCheck::Passed;
                            e.software_version = version;
                            e.reported_rows = Some(rows);
                        }
                        Ok(None) => e.schema = SchemaCheck::Pending,
                        Err(reason) => {
                            e.schema = SchemaCheck::Pending;
                            e.blocked = Some(reason.clone());
                            state.args.events.emit(Event::SiloBlocked { silo, reason });
                        }
                    }
                }
            }
            maybe_start_work(state, &myself).await;
        }
        CoordinatorMessage::ComparisonDone(rows) => {
            state.busy = false;
            state.compared = true;
            state.args.events.emit(Event::Comparison { rows });
            finish(state, &myself, None);
        }
        CoordinatorMessage::Control(request, reply) => {
            let answer = control(state, request);
            let failed = match &answer {
                Err(ControlError::Failed(e)) => Some(e.clone()),
                _ => None,
            };
            let _ = reply.send(answer);
            match failed {
                // The journal may say more than the state: stop, a restart reconciles.
                Some(e) => finish(state, &myself, Some(e)),
                None => maybe_start_work(state, &myself).await,
            }
        }
    }
}

/// Carries out a control request; `Ok`: what was done; `Err`: why it cannot be done now
/// (`Conflict`), or that the journal or registry failed (`Failed`: the coordinator stops).
fn control(state: &mut CoordinatorState, request: ControlRequest) -> Result<String, ControlError> {
    use ControlError::Conflict;
    let journal_error = |e: crate::audit::AuditError| {
        ControlError::Failed(format!("cannot record it in the audit journal: {e}"))
    };
    match request {
        ControlRequest::Pause { by, reason } => {
            if let Some(p) = &state.paused {
                return Err(Conflict(format!(
                    "already paused by {}: {}",
                    p.by, p.reason
                )));
            }
            state
                .args
                .journal
                .record_synced(Record::Paused {
                    by: by.clone(),
                    reason: reason.clone(),
                })
                .map_err(journal_error)?;
            state.args.events.emit(Event::FederationPaused {
                by: by.clone(),
                reason: reason.clone(),
            });
            let answer = match state.in_flight {
                Some(r) => format!("paused; round {r} in flight finishes, no new round starts"),
                None => "paused; no new round starts until resumed".to_string(),
            };
            state.paused = Some(Pause { by, reason });
            Ok(answer)
        }
        ControlRequest::Resume { by } => {
            if state.paused.is_none() {
                return Err(Conflict("not paused".into()));
            }
            state
                .args
                .journal
                .record_synced(Record::Resumed { by: by.clone() })
                .map_err(journal_error)?;
            state.args.events.emit(Event::FederationResumed { by });
            state.paused = None;
            state.step = false;
            state.idle_since = Instant::now();
            Ok("resumed; rounds start again".into())
        }
        ControlRequest::StartRound { by } => {
            let round = state.next_round;
            if state.paused.is_none() {
                return Err(Conflict("the federation is running: rounds start on their own (pause it to start rounds by hand)".into()));
            }
            if let Some(r) = state.in_flight {
                return Err(Conflict(format!("round {r} is in flight")));
            }
            if let Some(a) = &state.awaiting {
                return Err(Conflict(format!(
                    "candidate v{} awaits approval: approve or reject it first",
                    a.meta.version
                )));
            }
            if round > state.args.settings.rounds {
                return Err(Conflict(format!(
                    "all {} rounds of this run are done",
                    state.args.settings.rounds
                )));
            }
            if state.step {
                return Err(Conflict(format!("round {round} was already requested")));
            }
            state.step = true;
            state.idle_since = Instant::now();
            state.args.events.emit(Event::RoundRequested { by, round });
            Ok(format!(
                "round {round} starts as soon as enough silos are eligible"
            ))
        }
        ControlRequest::Decide {
            kind,
            version,
            reason,
            by,
            certificate,
        } => {
            if let (DecisionKind::Rollback, Some(r)) = (kind, state.in_flight) {
                return Err(Conflict(format!(
                    "round {r} is in flight and trains from v{}: roll back when it ends (pause first)",
                    state.model.version
                )));
            }
            let from = state.model.version;
            let d = Decision {
                kind,
                version,
                reason,
                operator: by,
                certificate,
                time_ms: now_ms(),
                expect_sha256: None,
                expect_current: None,
            };
            check_decision(state, &d).map_err(Conflict)?;
            let hash = serde_json::to_vec(&d)
                .map(|b| Digest::of_bytes(&b).hex())
                .map_err(|e| ControlError::Failed(format!("cannot encode the decision: {e}")))?;
            state
                .args
                .journal
                .record_synced(Record::DecisionApplied {
                    hash: hash.clone(),
                    decision: d.kind.as_str().to_string(),
                    version,
                    by: d.operator.clone(),
                })
                .map_err(journal_error)?;
            state.applied.insert(hash);
            apply_decision(state, &d).map_err(|e| {
                ControlError::Failed(format!("the decision was journaled but not applied: {e}"))
            })?;
            Ok(match kind {
                DecisionKind::Approve => format!("v{version} approved; it is current"),
                DecisionKind::Reject => format!(
                    "v{version} rejected; v{} stays current",
                    state.model.version
                ),
                DecisionKind::Rollback => {
                    format!("rolled back from v{from} to v{version}; the next round trains from it")
                }
            })
        }
    }
}

/// Publishes the coordinator's status for the admin API and custom actors.
fn publish(state: &CoordinatorState) {
    let quarantine_round = state.next_round;
    let silos = state
        .silos
        .iter()
        .map(|(name, e)| SiloStatus {
            name: name.clone(),
            region: e.region.clone(),
            healthy: e.healthy,
            last_heartbeat_secs: e.last_ok.elapsed().as_secs_f64(),
            schema_verified: e.schema == SchemaCheck::Passed,
            software_version: e.software_version.clone(),
            blocked: e.blocked.clone(),
            quarantined_until: state.quarantine.quarantined_until(name, quarantine_round),
        })
        .collect();
    let run_state = if state.finished {
        RunState::Finished
    } else if state.in_flight.is_some() {
        RunState::RoundInFlight
    } else if state.awaiting.is_some() {
        RunState::AwaitingApproval
    } else if state.paused.is_some() {
        RunState::Paused
    } else if state.scaling.is_none() {
        RunState::Starting
    } else {
        RunState::Ready
    };
    let s = &state.args.settings;
    let status = FederationStatus {
        federation: s.name.clone(),
        coordinator: s.node.clone(),
        state: run_state,
        paused: state.paused.clone(),
        round_in_flight: state.in_flight,
        next_round: state.next_round,
        rounds: s.rounds,
        current_version: state.model.version,
        committed_this_run: state.committed,
        awaiting_approval: state.awaiting.as_ref().map(|a| AwaitingCandidate {
            version: a.meta.version,
            round: a.meta.round,
            file_sha256: a.meta.file_sha256.clone(),
        }),
        waiting_for: state.last_waiting.clone(),
        silos,
        error: state.error.clone(),
    };
    state.args.status.send_replace(status);
}

fn refresh_aggregators(state: &mut CoordinatorState) {
    let dir = state.args.directory.clone();
    let mut now = BTreeMap::new();
    for cell in ractor::pg::get_members(&AGGREGATOR_GROUP.to_string()) {
        let id = cell.get_id();
        if id.is_local() {
            continue;
        }
        let Some(identity) = dir.identity_of(id.node()) else {
            continue;
        };
        if identity.role != Role::Aggregator {
            tracing::warn!(peer = %identity, "a non-aggregator node registered an aggregator; ignored");
            continue;
        }
        now.insert(
            identity.name.clone(),
            RegionalHandle {
                name: identity.name,
                region: identity.region,
                actor: cell.into(),
            },
        );
    }
    for (name, h) in &now {
        if !state.aggregators.contains_key(name) {
            state.args.events.emit(Event::AggregatorJoined {
                aggregator: name.clone(),
                region: h.region.clone(),
            });
        }
    }
    for name in state.aggregators.keys() {
        if !now.contains_key(name) {
            state.args.events.emit(Event::AggregatorLeft {
                aggregator: name.clone(),
            });
        }
    }
    state.aggregators = now;
}

/// Where `silo` (of `region`) would have its update aggregated under `policy`: `Ok(Some)` a
/// regional aggregator, `Ok(None)` this coordinator, `Err` nowhere allowed.
fn route_for(
    state: &CoordinatorState,
    policy: &Policy,
    silo: &str,
    region: &str,
) -> Result<Option<RegionalHandle>, String> {
    if policy.residency.is_none() {
        return Ok(None);
    }
    let aggs: Vec<(String, String)> = state
        .aggregators
        .values()
        .map(|a| (a.name.clone(), a.region.clone()))
        .collect();
    if state.args.settings.misroute.as_deref() == Some(silo) {
        if let Some(wrong) = state
            .aggregators
            .values()
            .find(|a| !fedsilo_policies::residency::may_process(policy, region, &a.region).allow)
        {
            tracing::warn!(silo, aggregator = wrong.name, "fault injection: misrouting");
            return Ok(Some(wrong.clone()));
        }
    }
    if let Ok(name) = fedsilo_policies::residency::route(policy, region, &aggs) {
        return Ok(state.aggregators.get(name).cloned());
    }
    if fedsilo_policies::residency::may_process(policy, region, &state.args.settings.region).allow {
        return Ok(None);
    }
    Err(format!(
        "residency: no aggregator allowed to process `{region}` updates is linked"
    ))
}

fn refresh_membership(state: &mut CoordinatorState) {
    let dir = state.args.directory.clone();
    let mut present: BTreeMap<String, SiloHandle> = BTreeMap::new();
    for cell in ractor::pg::get_members(&TRAINER_GROUP.to_string()) {
        let id = cell.get_id();
        if id.is_local() {
            continue;
        }
        let node_id = id.node();
        let Some(identity) = dir.identity_of(node_id) else {
            continue;
        };
        if identity.role != Role::Silo {
            tracing::warn!(peer = %identity, "a non-silo node registered a trainer; ignored");
            continue;
        }
        let handle = SiloHandle {
            name: identity.name.clone(),
            node_id,
            actor: ActorRef::<TrainerMessage>::from(cell),
        };
        match present.get(&identity.name) {
            // Two sessions with one certificate: keep the one we already knew.
            Some(existing)
                if state
                    .silos
                    .get(&identity.name)
                    .is_some_and(|e| e.handle.node_id == existing.node_id) => {}
            _ => {
                present.insert(identity.name.clone(), handle);
            }
        }
        let _ = identity.region;
    }
    let gone: Vec<String> = state
        .silos
        .iter()
        .filter(|(name, e)| {
            present
                .get(*name)
                .is_none_or(|h| h.node_id != e.handle.node_id)
        })
        .map(|(n, _)| n.clone())
        .collect();
    for name in gone {
        state.silos.remove(&name);
        state.unhealthy.send_modify(|u| {
            u.remove(&name);
        });
        state.args.events.emit(Event::SiloLeft { silo: name });
    }
    for (name, handle) in present {
        if state.silos.contains_key(&name) {
            continue;
        }
        let (identity_region, identity_role) = dir
            .identity_of(handle.node_id)
            .map(|i| (i.region, i.role.as_str().to_string()))
            .unwrap_or_default();
        let region = identity_region.clone();
        state.args.events.emit(Event::SiloJoined {
            silo: name.clone(),
            region,
        });
        state.silos.insert(
            name,
            SiloEntry {
                handle,
                last_ok: Instant::now(),
                healthy: true,
                ping_inflight: false,
                region: identity_region.clone(),
                role: identity_role.clone(),
                software_version: "0.0.0".into(),
                reported_rows: None,
                schema: SchemaCheck::Pending,
                blocked: None,
            },
        );
    }
}

fn check_health(state: &mut CoordinatorState, myself: &ActorRef<CoordinatorMessage>) {
    let timeout = state.args.settings.heartbeat_timeout;
    let digest = state.args.schema.digest();
    for (name, e) in state.silos.iter_mut() {
        if e.schema == SchemaCheck::Pending && e.blocked.is_none() {
            e.schema = SchemaCheck::Asking;
            let (actor, node_id, silo, me) = (
                e.handle.actor.clone(),
                e.handle.node_id,
                name.clone(),
                myself.clone(),
            );
            tokio::spawn(async move {
                let result = match call(&actor, &Request::FeatureStats, timeout * 4, &silo).await {
                    Ok(Response::FeatureStats(st)) if st.schema_digest == digest => {
                        match st.unusable {
                            Some(why) => Err(format!("refused at the schema check: {why}")),
                            None => Ok(Some((st.software_version, st.rows))),
                        }
                    }
                    Ok(Response::FeatureStats(st)) => {
                        Err(schema_mismatch(&st.schema_digest, &digest))
                    }
                    Ok(other) => Err(format!("answered the schema check with {}", other.kind())),
                    Err(e) => {
                        tracing::warn!(silo, "schema check failed, will ask again: {e}");
                        Ok(None)
                    }
                };
                let _ = me.cast(CoordinatorMessage::SchemaChecked {
                    silo,
                    node_id,
                    result,
                });
            });
        }
        let silent = e.last_ok.elapsed();
        if e.healthy && silent > timeout {
            e.healthy = false;
            state.unhealthy.send_modify(|u| {
                u.insert(name.clone());
            });
            state.args.events.emit(Event::SiloUnhealthy {
                silo: name.clone(),
                silent_secs: silent.as_secs_f64(),
            });
        }
        if !e.ping_inflight {
            e.ping_inflight = true;
            state.ping_seq += 1;
            let (seq, actor, node_id, silo, me) = (
                state.ping_seq,
                e.handle.actor.clone(),
                e.handle.node_id,
                name.clone(),
                myself.clone(),
            );
            tokio::spawn(async move {
                let ok = matches!(call(&actor, &Request::Ping { seq }, timeout, &silo).await, Ok(Response::Pong { seq: s }) if s == seq);
                let _ = me.cast(CoordinatorMessage::PingResult { silo, node_id, ok });
            });
        }
    }
}

async fn maybe_start_work(state: &mut CoordinatorState, myself: &ActorRef<CoordinatorMessage>) {
    if state.busy || state.finished {
        return;
    }
    if let Some(a) = &state.awaiting {
        // Paused until an operator approves or rejects the candidate.
        let why = vec![format!(
            "candidate v{} awaits an operator's approval (fedsilo models approve|reject {})",
            a.meta.version, a.meta.version
        )];
        if state.last_waiting != why {
            state.args.events.emit(Event::AwaitingApproval {
                round: a.meta.round,
                version: a.meta.version,
            });
            state.last_waiting = why;
        }
        return;
    }
    if state.next_round > state.args.settings.rounds || state.exhausted {
        end_run(state, myself);
        return;
    }
    if state.paused.is_some() {
        // Paused (even with a round asked for): the no-round-could-start clock does not run.
        state.idle_since = Instant::now();
    }
    if let (Some(p), false) = (&state.paused, state.step) {
        let why = vec![format!("paused by {}: {}", p.by, p.reason)];
        if state.last_waiting != why {
            state.last_waiting = why;
        }
        return;
    }
    let round = state.next_round;
    // A changed policy file takes effect here, at the round boundary.
    match ask(&state.args.policy, "policy", PolicyMessage::Refresh).await {
        Ok(Reload::Changed(digest)) => {
            let _ = state.args.journal.record(Record::PolicyChanged {
                digest: digest.clone(),
            });
            state.args.events.emit(Event::PolicyChanged { digest })
        }
        Ok(Reload::Refused(error)) => {
            let _ = state.args.journal.record(Record::PolicyRefused {
                error: error.clone(),
            });
            state.args.events.emit(Event::PolicyRefused { error })
        }
        _ => {}
    }
    let current = match ask(&state.args.policy, "policy", PolicyMessage::Snapshot).await {
        Ok(p) => p,
        Err(e) => {
            finish(state, myself, Some(e.to_string()));
            return;
        }
    };
    let over_budget = match budget_check(state, &current, round) {
        Ok(over) => over,
        Err(why) => {
            finish(state, myself, Some(why));
            return;
        }
    };
    if state.exhausted {
        end_run(state, myself);
        return;
    }
    let holdout = current
        .validation
        .as_ref()
        .and_then(|v| v.central_holdout.clone());
    let candidates: Vec<Candidate> = state
        .silos
        .iter()
        .map(|(n, e)| Candidate {
            name: n.clone(),
            role: e.role.clone(),
            region: e.region.clone(),
            protocol_version: u32::from(crate::protocol::PROTOCOL_VERSION),
            software_version: e.software_version.clone(),
            heartbeat_age_secs: Some(e.last_ok.elapsed().as_secs_f64()),
            last_failure_round: state.failures.get(n).copied(),
            quarantined_until: state.quarantine.quarantined_until(n, state.next_round),
            blocked: e
                .blocked
                .clone()
                .or_else(|| {
                    (holdout.as_deref() == Some(n.as_str())).then(|| {
                        "central hold-out: scores candidates, never trains (validation.central_holdout)"
                            .to_string()
                    })
                })
                .or_else(|| over_budget.get(n).cloned())
                .or_else(|| {
                if let Err(why) = route_for(state, &current, n, &e.region) {
                    Some(why)
                } else if !e.healthy {
                    Some(format!(
                        "missed heartbeats: last answer {:.1} s ago (network.heartbeat_timeout_secs)",
                        e.last_ok.elapsed().as_secs_f64()
                    ))
                } else {
                    (e.schema != SchemaCheck::Passed).then(|| "schema not verified yet".to_string())
                }
            }),
        })
        .collect();
    let selection = match ask(&state.args.policy, "policy", |reply| {
        PolicyMessage::SelectCohort {
            round,
            candidates,
            reply,
        }
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            finish(state, myself, Some(e.to_string()));
            return;
        }
    };
    if !selection.verdict.allow {
        let waited = state.idle_since.elapsed();
        if waited > state.args.settings.wait_for_silos {
            let why = format!(
                "no round could start for {:.0} s: {}",
                waited.as_secs_f64(),
                selection.verdict.reasons.join("; ")
            );
            finish(state, myself, Some(why));
        } else if state.last_waiting != selection.verdict.reasons {
            state.last_waiting = selection.verdict.reasons.clone();
            state.args.events.emit(Event::WaitingForSilos {
                reasons: selection.verdict.reasons,
            });
        }
        return;
    }
    state.last_waiting.clear();
    let cohort: Vec<SiloHandle> = selection
        .cohort
        .iter()
        .filter_map(|n| state.silos.get(n).map(|e| e.handle.clone()))
        .collect();
    state.busy = true;
    let me = myself.clone();
    let Some(scaling) = state.scaling.clone() else {
        if state.scaling_retry_at.is_some_and(|t| Instant::now() < t) {
            state.busy = false;
            return;
        }
        let (schema_digest, numeric, timeout) = (
            state.args.schema.digest(),
            state.args.schema.numeric_count(),
            state.args.settings.heartbeat_timeout * 6,
        );
        let quorum = match ask(&state.args.policy, "policy", PolicyMessage::Snapshot).await {
            Ok(p) => p.participation.quorum,
            Err(_) => cohort.len(),
        };
        let task = tokio::spawn(agree_scaling(
            cohort,
            schema_digest,
            numeric,
            quorum,
            timeout,
        ));
        tokio::spawn(async move {
            // Whatever happens to the task (even a panic), the coordinator hears back.
            let outcome = task.await.unwrap_or_else(|e| {
                tracing::error!("feature-scaling task failed: {e}");
                ScalingOutcome {
                    scaling: None,
                    silos: vec![],
                    rows: 0,
                    blocked: vec![],
                }
            });
            let _ = me.cast(CoordinatorMessage::ScalingDone(outcome));
        });
        return;
    };
    // The round runs on the policy its cohort was chosen by.
    let policy = current;
    state.round_policy = policy.clone();
    let mut routes: BTreeMap<String, RegionalHandle> = BTreeMap::new();
    let mut unroutable = Vec::new();
    for h in &cohort {
        let region = state
            .silos
            .get(&h.name)
            .map(|e| e.region.clone())
            .unwrap_or_default();
        match route_for(state, &policy, &h.name, &region) {
            Ok(Some(agg)) => {
                routes.insert(h.name.clone(), agg);
            }
            Ok(None) => {}
            // Never fall back to aggregating here: an update with nowhere allowed to go stays home.
            Err(why) => unroutable.push((h.name.clone(), why)),
        }
    }
    let mut cohort = cohort;
    cohort.retain(|h| !unroutable.iter().any(|(n, _)| *n == h.name));
    let mut excluded = selection.excluded;
    excluded.extend(unroutable);
    let (privacy_spend, noise) = match &policy.privacy {
        Some(dp) => {
            let names: Vec<String> = cohort.iter().map(|h| h.name.clone()).collect();
            let plan = state.privacy.plan(dp, &names, policy.participation.quorum);
            // Selection already left out silos over budget; this only re-checks.
            cohort.retain(|h| plan.admitted.contains(&h.name));
            excluded.extend(plan.refused);
            match state
                .privacy
                .charge(dp, round, plan.noise_multiplier, &plan.admitted)
            {
                Ok(spend) => {
                    let _ = state.args.journal.record(Record::PrivacyCharged {
                        round,
                        silos: plan.admitted.clone(),
                        noise_multiplier: spend.noise_multiplier,
                        epsilon: spend.epsilon,
                        delta: spend.delta,
                    });
                    (Some(spend), silo_share(dp, cohort.len()))
                }
                Err(e) => {
                    state.busy = false;
                    let why = format!(
                        "cannot record round {round}'s privacy spend, so it is not dispatched: {e}"
                    );
                    finish(state, myself, Some(why));
                    return;
                }
            }
        }
        None => (None, None),
    };
    let s = &state.args.settings;
    // LoRA: the round moves the adapters; the frozen base goes to a silo once.
    let (base, lora) = match (&s.lora, state.lora.is_some()) {
        (Some(plan), true) => {
            let frozen = ModelRef {
                version: 0,
                digest: state.initial_digest,
            };
            let adapters = BaseModel {
                version: state.model.version,
                digest: Digest::of_f32(&state.adapters),
                params: Arc::new(state.adapters.clone()),
            };
            let train = LoraTrain {
                plan: plan.clone(),
                frozen,
            };
            (adapters, Some((train, state.initial.clone())))
        }
        _ => (state.model.clone(), None),
    };
    let reported_rows = state
        .silos
        .iter()
        .filter_map(|(n, e)| e.reported_rows.map(|r| (n.clone(), r)))
        .collect();
    let ctx = RoundContext {
        round,
        reported_rows,
        base,
        lora: lora.clone(),
        spec: s.spec.clone(),
        plan: TrainPlan {
            epochs: s.epochs,
            batch_size: s.batch_size,
            learning_rate: s.learning_rate,
            seed: s.seed.wrapping_mul(1_000_003).wrapping_add(round),
            noise,
            prox_mu: s.prox_mu,
            compression: s.compression,
            lora: lora.map(|(l, _)| l),
        },
        personalize: (s.personalize_epochs > 0).then(|| Personalize {
            epochs: s.personalize_epochs,
            batch_size: s.batch_size,
            learning_rate: s.learning_rate,
            seed: s.seed.wrapping_mul(1_000_003).wrapping_add(round),
        }),
        scaling,
        cohort,
        excluded,
        policy,
        policy_actor: state.args.policy.clone(),
        aggregator: state.args.aggregator.clone(),
        validator: state.args.validator.clone(),
        directory: state.args.directory.clone(),
        chunk: s.chunk,
        events: state.args.events.clone(),
        unhealthy: state.unhealthy.subscribe(),
        aggregation: s.aggregation.clone(),
        optimizer: state.optimizer.clone(),
        routes,
        privacy_spend,
        journal: state.args.journal.clone(),
        version: state.next_version,
        baseline: state.baseline.clone(),
        holdout: holdout
            .as_ref()
            .and_then(|h| state.silos.get(h))
            .filter(|e| e.healthy && e.blocked.is_none())
            .map(|e| e.handle.clone()),
    };
    // On disk before any silo is asked to train (and before an orderly stop could record the
    // round as abandoned).
    let names: Vec<String> = ctx.cohort.iter().map(|h| h.name.clone()).collect();
    if let Err(e) = state.args.journal.record_synced(Record::RoundStarted {
        round,
        base_version: ctx.base.version,
        base_digest: ctx.base.digest.hex(),
        cohort: names.clone(),
        excluded: ctx.excluded.clone(),
    }) {
        state.busy = false;
        let why = format!(
            "cannot record round {round} in the audit journal, so it is not dispatched: {e}"
        );
        finish(state, myself, Some(why));
        return;
    }
    state.args.events.emit(Event::RoundStarted {
        round,
        base_version: ctx.base.version,
        cohort: names,
        excluded: ctx.excluded.clone(),
        privacy: ctx.privacy_spend.clone(),
    });
    state.in_flight = Some(round);
    state.step = false;
    let task = tokio::spawn(run_round(ctx));
    state.round_task = Some(task.abort_handle());
    tokio::spawn(async move {
        // Whatever happens to the round task (even a panic), the coordinator hears back.
        let outcome = task.await.unwrap_or_else(|e| RoundOutcome::Abandoned {
            round,
            reason: task_failure(e),
            attendance: Attendance::default(),
        });
        let _ = me.cast(CoordinatorMessage::RoundDone(Box::new(outcome)));
    });
}

/// Under the policy's silo-level DP: the silos one more round would take over their budget,
/// with the figures (each reported once). When too few silos are left for a round, the
/// refusal is recorded and the run ends (`state.exhausted`). `Err`: the policy's privacy
/// cannot be honoured with this aggregation.
fn budget_check(
    state: &mut CoordinatorState,
    policy: &Policy,
    round: u64,
) -> Result<BTreeMap<String, String>, String> {
    let Some(dp) = &policy.privacy else {
        return Ok(BTreeMap::new());
    };
    check_aggregation(dp, &state.args.settings.aggregation)?;
    // Every silo this coordinator knows: connected now, or charged before (it may be
    // reconnecting). Budgets only shrink, so when too few of these have budget left, no round
    // can ever start again.
    let connected: Vec<String> = state.silos.keys().cloned().collect();
    let mut known: BTreeSet<String> = state.privacy.silos().cloned().collect();
    known.extend(connected.iter().cloned());
    let known: Vec<String> = known.into_iter().collect();
    let p = &policy.participation;
    // Planned for the largest cohort a round could dispatch: the worst case for distributed noise.
    let largest = known.len().min(p.max_silos.unwrap_or(usize::MAX));
    let plan = state.privacy.plan_for(dp, &known, largest, p.quorum);
    let over: BTreeMap<String, String> = plan
        .refused
        .into_iter()
        .filter(|(s, _)| connected.contains(s))
        .collect();
    for (silo, reason) in &over {
        if state.over_budget.insert(silo.clone()) {
            state.args.events.emit(Event::BudgetExcluded {
                round,
                silo: silo.clone(),
                reason: reason.clone(),
            });
        }
    }
    let spent = known.len() - plan.admitted.len();
    if spent > 0 && plan.admitted.len() < p.min_silos {
        let out: Vec<&String> = known
            .iter()
            .filter(|s| !plan.admitted.contains(s))
            .collect();
        let reason = format!(
            "{spent} of {} silos have spent their privacy budget ({}); a round needs participation.min_silos = {}",
            known.len(),
            out.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            p.min_silos
        );
        if let Err(e) = state.privacy.refuse(round, &reason) {
            tracing::error!("cannot record the budget refusal: {e}");
        }
        let _ = state.args.journal.record_synced(Record::BudgetExhausted {
            round,
            reason: reason.clone(),
        });
        state
            .args
            .events
            .emit(Event::BudgetExhausted { round, reason });
        state.exhausted = true;
    }
    Ok(over)
}

/// The run is over (last round done or budget exhausted): the local-only comparison if asked
/// for, then finish.
fn end_run(state: &mut CoordinatorState, myself: &ActorRef<CoordinatorMessage>) {
    if state.args.settings.compare_local && !state.compared && state.committed > 0 {
        start_comparison(state, myself);
    } else {
        finish(state, myself, None);
    }
}

async fn agree_scaling(
    cohort: Vec<SiloHandle>,
    schema_digest: Digest,
    numeric: usize,
    quorum: usize,
    timeout: Duration,
) -> ScalingOutcome {
    let mut jobs = tokio::task::JoinSet::new();
    for s in cohort {
        jobs.spawn(async move {
            let r = call(&s.actor, &Request::FeatureStats, timeout, &s.name).await;
            (s.name, r)
        });
    }
    let (mut count, mut sum, mut sum_sq) = (
        vec![0u64; numeric],
        vec![0f64; numeric],
        vec![0f64; numeric],
    );
    let (mut silos, mut rows, mut blocked) = (Vec::new(), 0u64, Vec::new());
    // Summed in silo order, not arrival order: the agreed scaling, and so every model after
    // it, is the same whoever answered first.
    let mut answers = BTreeMap::new();
    while let Some(j) = jobs.join_next().await {
        if let Ok((name, r)) = j {
            answers.insert(name, r);
        }
    }
    for (name, r) in answers {
        match r {
            Ok(Response::FeatureStats(st)) => {
                if st.schema_digest != schema_digest {
                    blocked.push((name, schema_mismatch(&st.schema_digest, &schema_digest)));
                    continue;
                }
                if let Some(why) = st.unusable {
                    blocked.push((name, format!("refused at the schema check: {why}")));
                    continue;
                }
                if st.count.len() != numeric
                    || st.sum.len() != numeric
                    || st.sum_sq.len() != numeric
                {
                    blocked.push((name, format!("sent statistics for {} features, the schema has {numeric} numeric features", st.count.len())));
                    continue;
                }
                if !(st.sum.iter().chain(&st.sum_sq).all(|v| v.is_finite())) {
                    blocked.push((name, "sent non-finite feature statistics".into()));
                    continue;
                }
                for i in 0..numeric {
                    count[i] = count[i].saturating_add(st.count[i]);
                    sum[i] += st.sum[i];
                    sum_sq[i] += st.sum_sq[i];
                }
                rows = rows.saturating_add(st.rows);
                silos.push(name);
            }
            Ok(other) => tracing::warn!(
                silo = name,
                "feature statistics: unexpected {}",
                other.kind()
            ),
            Err(e) => tracing::warn!(silo = name, "feature statistics failed: {e}"),
        }
    }
    silos.sort();
    let scaling = (silos.len() >= quorum && !silos.is_empty())
        .then(|| combine_stats(&count, &sum, &sum_sq))
        .filter(|s| {
            let ok = s.mean.iter().chain(&s.std).all(|v| v.is_finite());
            if !ok {
                tracing::warn!(
                    "pooled feature statistics are not finite (overflowing sums?); not used"
                );
            }
            ok
        });
    ScalingOutcome {
        scaling,
        silos,
        rows,
        blocked,
    }
}

/// Mean and standard deviation from pooled counts, sums and sums of squares. A feature with no
/// values or no spread gets mean 0 / std 1 (it then passes through unscaled).
pub fn combine_stats(count: &[u64], sum: &[f64], sum_sq: &[f64]) -> Scaling {
    let mut mean = Vec::with_capacity(count.len());
    let mut std = Vec::with_capacity(count.len());
    for i in 0..count.len() {
        if count[i] == 0 {
            mean.push(0.0);
            std.push(1.0);
            continue;
        }
        let n = count[i] as f64;
        let m = sum[i] / n;
        let var = (sum_sq[i] / n - m * m).max(0.0);
        let s = var.sqrt();
        mean.push(m as f32);
        std.push(if s > 1e-9 { s as f32 } else { 1.0 });
    }
    Scaling { mean, std }
}

fn schema_mismatch(theirs: &Digest, ours: &Digest) -> String {
    format!(
        "its schema (digest {}) differs from the federation's ({}): check that it runs with the same schema.toml",
        theirs.short(),
        ours.short()
    )
}

fn on_scaling(state: &mut CoordinatorState, outcome: ScalingOutcome) {
    for (silo, reason) in outcome.blocked {
        if let Some(e) = state.silos.get_mut(&silo) {
            e.blocked = Some(reason.clone());
        }
        state.args.events.emit(Event::SiloBlocked { silo, reason });
    }
    let Some(scaling) = outcome.scaling else {
        tracing::warn!(contributors = ?outcome.silos, "too few silos sent feature statistics; will retry");
        state.scaling_retry_at = Some(
            Instant::now()
                + (state.args.settings.heartbeat_interval * 4).max(Duration::from_secs(1)),
        );
        return;
    };
    let ckpt = checkpoint(state, &state.model.params, &scaling, 0);
    let meta = VersionMeta {
        version: state.model.version,
        parent: state.model.version,
        round: 0,
        status: Status::Committed,
        digest: state.model.digest.hex(),
        file_sha256: String::new(),
        participants: outcome.silos.iter().map(|s| (s.clone(), 0)).collect(),
        aggregation: "initial model".into(),
        policy_digest: String::new(),
        privacy: None,
        validation: BTreeMap::new(),
        reason: match &state.args.settings.initial {
            Some(p) => format!("initial model: pretrained, from {}", p.origin),
            None => format!("initial model (seed {})", state.args.settings.seed),
        },
        created_ms: now_ms(),
        decided_by: "coordinator".into(),
    };
    let optimizer = state.optimizer.clone();
    if let Err(e) = commit(state, &ckpt, optimizer.as_ref(), meta) {
        tracing::error!("cannot commit the initial checkpoint: {e}");
        return;
    }
    state.scaling = Some(scaling);
    state.args.events.emit(Event::ScalingAgreed {
        silos: outcome.silos,
        rows: outcome.rows,
    });
}

/// Commits a version: checkpoint staged and synced, the commit recorded in the audit journal
/// and synced, then published as current. `at` is (round, version, parent).
fn commit(
    state: &mut CoordinatorState,
    ckpt: &Checkpoint,
    optimizer: Option<&OptimizerState>,
    mut meta: VersionMeta,
) -> crate::Result<()> {
    meta.file_sha256 = state.args.store.stage(meta.version, ckpt, optimizer)?;
    state.args.journal.record_synced(Record::Committed {
        round: meta.round,
        version: meta.version,
        parent: meta.parent,
        digest: meta.digest.clone(),
        file_sha256: meta.file_sha256.clone(),
        participants: meta.participants.clone(),
    })?;
    state
        .committed_sha
        .insert(meta.version, meta.file_sha256.clone());
    state.args.store.publish(meta.version)?;
    state.args.registry.put(&meta)
}

/// Keeps a candidate that failed the gate: its checkpoint under `models/candidates/`, a
/// `rejected` journal entry (synced) and its metadata with status rejected.
fn keep_rejected(
    state: &CoordinatorState,
    ckpt: &Checkpoint,
    mut meta: VersionMeta,
    reason: &str,
) -> crate::Result<()> {
    meta.file_sha256 = state.args.store.stage(meta.version, ckpt, None)?;
    state.args.store.keep_candidate(meta.version)?;
    state.args.journal.record_synced(Record::Rejected {
        round: meta.round,
        version: Some(meta.version),
        file_sha256: Some(meta.file_sha256.clone()),
        current: state.model.version,
        reason: reason.to_string(),
    })?;
    meta.status = Status::Rejected;
    meta.reason = reason.to_string();
    state.args.registry.put(&meta)
}

/// A candidate that passed the gate and waits for an operator's decision.
struct Awaiting {
    meta: VersionMeta,
    ckpt: Checkpoint,
    optimizer: Option<OptimizerState>,
    /// The round's summary (lost if the coordinator restarted meanwhile).
    summary: Option<Box<RoundSummary>>,
}

/// Keeps a candidate that passed the gate until an operator decides: its checkpoint under
/// `models/candidates/`, an `awaiting_approval` journal entry (synced), its metadata.
fn keep_awaiting(
    state: &mut CoordinatorState,
    ckpt: Checkpoint,
    mut meta: VersionMeta,
    optimizer: Option<OptimizerState>,
    summary: Box<RoundSummary>,
) -> crate::Result<()> {
    meta.file_sha256 = state
        .args
        .store
        .stage(meta.version, &ckpt, optimizer.as_ref())?;
    state.args.store.keep_candidate(meta.version)?;
    state.args.journal.record_synced(Record::AwaitingApproval {
        round: meta.round,
        version: meta.version,
        file_sha256: meta.file_sha256.clone(),
    })?;
    meta.status = Status::AwaitingApproval;
    meta.reason = "passed the validation gate; awaiting an operator's approval".into();
    state.args.registry.put(&meta)?;
    state.awaiting = Some(Awaiting {
        meta,
        ckpt,
        optimizer,
        summary: Some(summary),
    });
    Ok(())
}

/// Applies the operators' decisions waiting in the inbox (between rounds only). A decision
/// that cannot apply is refused before it has any effect — recorded, moved aside — and the
/// federation goes on. Once a decision is journaled as applied, a failure to carry it out is
/// an error that stops the coordinator, so that a restart reconciles the state with the
/// journal.
fn apply_decisions(state: &mut CoordinatorState) -> crate::Result<()> {
    for path in decision::pending(state.args.store.dir()) {
        let file = path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().to_string());
        let checked = decision::read_verified(&path, &state.args.ca).and_then(|(d, hash)| {
            if state.applied.contains(&hash) {
                return Err(
                    "this decision was already applied (the audit journal has it): a replayed file"
                        .into(),
                );
            }
            check_decision(state, &d).map(|_| (d, hash))
        });
        match checked {
            Ok((d, hash)) => {
                state.args.journal.record_synced(Record::DecisionApplied {
                    hash: hash.clone(),
                    decision: d.kind.as_str().to_string(),
                    version: d.version,
                    by: d.operator.clone(),
                })?;
                state.applied.insert(hash);
                decision::settle(&path, true);
                apply_decision(state, &d)?;
            }
            Err(reason) => {
                state.args.journal.record_synced(Record::DecisionRefused {
                    file: file.clone(),
                    reason: reason.clone(),
                })?;
                state
                    .args
                    .events
                    .emit(Event::DecisionRefused { file, reason });
                decision::settle(&path, false);
            }
        }
    }
    Ok(())
}

/// Whether decision `d` can apply now (no effect).
fn check_decision(state: &CoordinatorState, d: &Decision) -> Result<(), String> {
    let awaiting = state.awaiting.as_ref().map(|a| &a.meta);
    match d.kind {
        DecisionKind::Approve | DecisionKind::Reject => {
            let Some(m) = awaiting.filter(|m| m.version == d.version) else {
                return Err(format!(
                    "version {} is not awaiting approval ({})",
                    d.version,
                    awaiting.map_or("no candidate is".into(), |m| format!("v{} is", m.version))
                ));
            };
            if d.expect_sha256
                .as_ref()
                .is_some_and(|s| *s != m.file_sha256)
            {
                return Err(format!(
                    "the decision was made on another v{} than the one awaiting (its SHA-256 differs)",
                    d.version
                ));
            }
            Ok(())
        }
        DecisionKind::Rollback => {
            if d.expect_current.is_some_and(|c| c != state.model.version) {
                return Err(format!(
                    "made when v{} was current; v{} is current now",
                    d.expect_current.unwrap_or_default(),
                    state.model.version
                ));
            }
            if d.version == state.model.version {
                return Err(format!("version {} is already current", d.version));
            }
            let Some(sha) = state.committed_sha.get(&d.version) else {
                return Err(format!(
                    "version {} was never committed; only a committed version can be made current again",
                    d.version
                ));
            };
            let path = state.args.store.model_path(d.version);
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if Digest::of_bytes(&bytes).hex() != *sha {
                return Err(format!(
                    "{}: its SHA-256 differs from the one the audit journal committed: the file was modified",
                    path.display()
                ));
            }
            Ok(())
        }
    }
}

/// Why a spawned task ended without a result, with a panic's own message (a panic is a bug:
/// the round is abandoned with it, and the log says so).
pub fn task_failure(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return format!("the round task was cancelled: {e}");
    }
    let payload = e.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    tracing::error!("the round task panicked: {message}");
    format!("the round task panicked (a fedsilo bug; please report it): {message}")
}

/// After a crash: every round the journal committed that `rounds.jsonl` or `events.jsonl` lacks
/// is re-derived from the registry and published to the log that lacks it, once, in version
/// order ([`crate::republish`]).
fn republish_committed(state: &CoordinatorState) -> crate::Result<()> {
    let committed: Vec<u64> = state
        .args
        .history
        .versions
        .iter()
        .filter(|(_, j)| j.status == Status::Committed && j.round >= 1)
        .map(|(v, _)| *v)
        .collect();
    let missing = crate::republish::missing_from_logs(state.args.store.dir(), &committed)?;
    for v in missing.any() {
        let Some(meta) = state.args.registry.get(v)? else {
            continue;
        };
        let summary = summary_of(&meta);
        tracing::warn!(
            version = v,
            "round {} was committed before the coordinator stopped but not logged; publishing it now",
            meta.round
        );
        if missing.rounds_log.contains(&v) {
            state.args.store.append_round(&summary)?;
        }
        if missing.events_log.contains(&v) {
            state
                .args
                .events
                .emit(Event::RoundCommitted(Box::new(summary)));
        }
    }
    Ok(())
}

/// Committed version `v`'s checkpoint, checked against the SHA-256 the journal committed.
fn load_committed(state: &CoordinatorState, v: u64) -> crate::Result<Checkpoint> {
    let Some(sha) = state.committed_sha.get(&v) else {
        return Err(Error::Checkpoint {
            origin: state.args.store.model_path(v).display().to_string(),
            message: format!(
                "version {v} is named as committed (CURRENT or a rollback) but the audit journal never committed it"
            ),
        });
    };
    state.args.store.load_committed(v, sha)
}

/// Carries out a decision [`check_decision`] allowed and the journal recorded.
fn apply_decision(state: &mut CoordinatorState, d: &Decision) -> crate::Result<()> {
    match d.kind {
        DecisionKind::Approve => {
            let Some(a) = state.awaiting.take() else {
                return Ok(());
            };
            state.args.journal.record(Record::Approved {
                version: d.version,
                by: d.operator.clone(),
                reason: d.reason.clone(),
            })?;
            let mut meta = a.meta.clone();
            meta.status = Status::Committed;
            meta.decided_by = d.operator.clone();
            meta.reason = format!("approved by {}: {}", d.operator, d.reason);
            commit(state, &a.ckpt, a.optimizer.as_ref(), meta.clone())?;
            if a.optimizer.is_some() {
                state.optimizer = a.optimizer;
            }
            // What its round did (rebuilt from the registry if the coordinator restarted since).
            let summary = a.summary.unwrap_or_else(|| Box::new(summary_of(&meta)));
            state.args.store.append_round(&summary)?;
            state.adapters = adapters_in(state, meta.version, &a.ckpt.params, &a.ckpt.metadata)?;
            state.model = BaseModel {
                version: meta.version,
                digest: Digest::of_f32(&a.ckpt.params),
                params: Arc::new(a.ckpt.params),
            };
            state.committed += 1;
            state.last_eval = meta.validation.clone();
            state.baseline = meta.validation;
            state.last_waiting.clear();
            state.args.events.emit(Event::Approved {
                version: d.version,
                by: d.operator.clone(),
            });
            // Its round's outcome, now that it is one.
            state.args.events.emit(Event::RoundCommitted(summary));
        }
        DecisionKind::Reject => {
            let Some(a) = state.awaiting.take() else {
                return Ok(());
            };
            let reason = format!("rejected by {}: {}", d.operator, d.reason);
            let round = a.meta.round;
            let current = state.model.version;
            withdraw(state, a, d, &reason, current)?;
            state.args.events.emit(Event::RoundRejected {
                round,
                version: Some(d.version),
                current: state.model.version,
                reason,
            });
        }
        DecisionKind::Rollback => {
            let ckpt = load_committed(state, d.version)?;
            // A candidate awaiting approval was built on the version being left: withdrawn.
            if let Some(a) = state.awaiting.take() {
                let reason = format!(
                    "withdrawn: {} rolled back to v{} ({})",
                    d.operator, d.version, d.reason
                );
                withdraw(state, a, d, &reason, d.version)?;
            }
            let from = state.model.version;
            let target = state.args.registry.get(d.version)?;
            state.args.journal.record_synced(Record::RolledBack {
                from,
                to: d.version,
                file_sha256: state
                    .committed_sha
                    .get(&d.version)
                    .cloned()
                    .unwrap_or_default(),
                by: d.operator.clone(),
                reason: d.reason.clone(),
            })?;
            state.args.store.publish(d.version)?;
            state.optimizer = match &state.args.settings.aggregation.server_optimizer {
                Some(o) => Some(
                    state
                        .args
                        .store
                        .optimizer(d.version)?
                        .unwrap_or_else(|| o.initial_state(ckpt.params.len())),
                ),
                None => None,
            };
            state.adapters = adapters_in(state, d.version, &ckpt.params, &ckpt.metadata)?;
            state.model = BaseModel {
                version: d.version,
                digest: Digest::of_f32(&ckpt.params),
                params: Arc::new(ckpt.params),
            };
            let figures = target.map(|m| m.validation).unwrap_or_default();
            state.last_eval = figures.clone();
            state.baseline = figures;
            state.args.events.emit(Event::RolledBack {
                from,
                to: d.version,
                by: d.operator.clone(),
            });
        }
    }
    Ok(())
}

/// A round's summary as the registry keeps it: what a candidate that waited across a restart
/// still has (training loss, times and bytes were not kept: unknown, NaN or zero).
fn summary_of(meta: &VersionMeta) -> RoundSummary {
    let examples: f64 = meta.validation.values().map(|m| m.examples as f64).sum();
    RoundSummary {
        round: meta.round,
        version: meta.version,
        digest: meta.digest.clone(),
        participants: meta.participants.iter().map(|(s, _)| s.clone()).collect(),
        missing: vec![],
        mean_train_loss: f64::NAN,
        eval: meta.validation.clone(),
        eval_loss: meta
            .validation
            .values()
            .map(|m| m.loss * m.examples as f64)
            .sum::<f64>()
            / examples.max(1.0),
        wall_seconds: 0.0,
        slowest_train_seconds: 0.0,
        overhead_seconds: 0.0,
        bytes_from_silos: BTreeMap::new(),
        update_bytes: 0,
        aggregation: meta.aggregation.clone(),
        policy_digest: meta.policy_digest.clone(),
        refused: vec![],
        selected: None,
        clipped: vec![],
        examples: meta.participants.iter().cloned().collect(),
        update_norms: BTreeMap::new(),
        privacy: meta.privacy.clone(),
    }
}

/// Rejects the candidate awaiting approval on an operator's decision (journal, registry).
fn withdraw(
    state: &mut CoordinatorState,
    a: Awaiting,
    d: &Decision,
    reason: &str,
    current: u64,
) -> crate::Result<()> {
    state.args.journal.record_synced(Record::Rejected {
        round: a.meta.round,
        version: Some(a.meta.version),
        file_sha256: Some(a.meta.file_sha256.clone()),
        current,
        reason: reason.to_string(),
    })?;
    let mut meta = a.meta;
    meta.status = Status::Rejected;
    meta.decided_by = d.operator.clone();
    meta.reason = reason.to_string();
    state.args.registry.put(&meta)?;
    state.last_waiting.clear();
    Ok(())
}

/// Records a round that will never end as abandoned (journal, synced; event).
fn abandon(state: &CoordinatorState, round: u64, reason: &str) -> crate::Result<()> {
    state.args.journal.record_synced(Record::Abandoned {
        round,
        reason: reason.to_string(),
    })?;
    state.args.events.emit(Event::RoundAbandoned {
        round,
        reason: reason.to_string(),
    });
    Ok(())
}

fn checkpoint(
    state: &CoordinatorState,
    params: &[f32],
    scaling: &Scaling,
    round: u64,
) -> Checkpoint {
    Checkpoint {
        spec: state.args.settings.spec.clone(),
        params: params.to_vec(),
        scaling: scaling.clone(),
        metadata: [
            ("fedsilo.round".to_string(), round.to_string()),
            (
                "fedsilo.parent".to_string(),
                state.model.version.to_string(),
            ),
        ]
        .into_iter()
        .collect(),
    }
}

fn on_round(state: &mut CoordinatorState, outcome: RoundOutcome) -> crate::Result<()> {
    let (round, attendance) = match outcome {
        RoundOutcome::Candidate {
            params,
            summary,
            optimizer,
            failed_gate,
        } => {
            let scaling = state.scaling.clone().unwrap_or(Scaling {
                mean: vec![],
                std: vec![],
            });
            let mut summary = summary;
            // LoRA: the round made adapters; the version is the base with them merged in, and
            // keeps them (to train from, to resume).
            let (params, adapters) = match &state.lora {
                Some(layout) => {
                    let merged = layout.merge(&state.initial, &params);
                    summary.digest = Digest::of_f32(&merged).hex();
                    (merged, Some(params))
                }
                None => (params, None),
            };
            let mut ckpt = checkpoint(state, &params, &scaling, summary.round);
            if let Some(a) = &adapters {
                ckpt.metadata
                    .insert(ADAPTERS_KEY.into(), adapters_to_hex(a));
            }
            ckpt.metadata
                .insert("fedsilo.version".into(), summary.version.to_string());
            ckpt.metadata
                .insert("fedsilo.aggregation".into(), summary.aggregation.clone());
            ckpt.metadata.insert(
                "fedsilo.policy_digest".into(),
                summary.policy_digest.clone(),
            );
            if let Some(p) = &summary.privacy {
                for (k, v) in [
                    ("mode", p.mode.clone()),
                    ("noise_multiplier", p.noise_multiplier.to_string()),
                    ("round_epsilon", p.round_epsilon.to_string()),
                    ("epsilon", p.epsilon.to_string()),
                    ("delta", p.delta.to_string()),
                ] {
                    ckpt.metadata.insert(format!("fedsilo.privacy.{k}"), v);
                }
            }
            let meta = VersionMeta {
                version: summary.version,
                parent: state.model.version,
                round: summary.round,
                status: Status::Committed,
                digest: summary.digest.clone(),
                file_sha256: String::new(),
                participants: summary
                    .participants
                    .iter()
                    .map(|p| (p.clone(), summary.examples.get(p).copied().unwrap_or(0)))
                    .collect(),
                aggregation: summary.aggregation.clone(),
                policy_digest: summary.policy_digest.clone(),
                privacy: summary.privacy.clone(),
                validation: summary.eval.clone(),
                reason: String::new(),
                created_ms: now_ms(),
                decided_by: "gate".into(),
            };
            state.next_version = state.next_version.max(summary.version + 1);
            let (round, attendance) = (
                summary.round,
                Attendance::of(&summary.missing, &summary.refused),
            );
            if let Some(reason) = failed_gate {
                // Kept as a rejected version; the current one stays and is announced again.
                keep_rejected(state, &ckpt, meta, &reason)?;
                state.args.events.emit(Event::RoundRejected {
                    round,
                    version: Some(summary.version),
                    current: state.model.version,
                    reason,
                });
                return after_round(state, round, attendance);
            }
            let approval = state
                .round_policy
                .validation
                .as_ref()
                .is_some_and(|v| v.require_approval);
            if approval {
                // Passed the gate; an operator decides. No round starts meanwhile.
                keep_awaiting(state, ckpt, meta, optimizer, summary)?;
                return after_round(state, round, attendance);
            }
            commit(state, &ckpt, optimizer.as_ref(), meta)?;
            if optimizer.is_some() {
                state.optimizer = optimizer;
            }
            state.args.store.append_round(&summary)?;
            if let Some(a) = adapters {
                state.adapters = a;
            }
            state.model = BaseModel {
                version: summary.version,
                digest: Digest::of_f32(&params),
                params: Arc::new(params),
            };
            state.committed += 1;
            state.last_eval = summary.eval.clone();
            state.baseline = summary.eval.clone();
            state.args.events.emit(Event::RoundCommitted(summary));
            (round, attendance)
        }
        RoundOutcome::Rejected {
            round,
            reason,
            attendance,
        } => {
            state.args.journal.record_synced(Record::Rejected {
                round,
                version: None,
                file_sha256: None,
                current: state.model.version,
                reason: reason.clone(),
            })?;
            state.args.events.emit(Event::RoundRejected {
                round,
                version: None,
                current: state.model.version,
                reason,
            });
            (round, attendance)
        }
        RoundOutcome::Abandoned {
            round,
            reason,
            attendance,
        } => {
            state.args.journal.record_synced(Record::Abandoned {
                round,
                reason: reason.clone(),
            })?;
            state
                .args
                .events
                .emit(Event::RoundAbandoned { round, reason });
            (round, attendance)
        }
    };
    after_round(state, round, attendance)
}

/// Failures start a cool-down; refusals by admission rules count towards quarantine.
fn after_round(
    state: &mut CoordinatorState,
    round: u64,
    attendance: Attendance,
) -> crate::Result<()> {
    for silo in attendance.failed() {
        state.failures.insert(silo.to_string(), round);
    }
    for (silo, _) in &attendance.refused {
        if let Some(until_round) = state.quarantine.refused(&state.round_policy, silo, round) {
            state.args.journal.record(Record::SiloQuarantined {
                silo: silo.clone(),
                until_round,
            })?;
            state.args.events.emit(Event::SiloQuarantined {
                silo: silo.clone(),
                until_round,
            });
        }
    }
    Ok(())
}

fn start_comparison(state: &mut CoordinatorState, myself: &ActorRef<CoordinatorMessage>) {
    state.busy = true;
    let silos: Vec<SiloHandle> = state
        .silos
        .values()
        .filter(|e| e.blocked.is_none())
        .map(|e| e.handle.clone())
        .collect();
    let initial = state.initial.clone();
    let model = ModelRef {
        version: 0,
        digest: Digest::of_f32(&initial),
    };
    let s = &state.args.settings;
    let (spec, chunk, rounds) = (s.spec.clone(), s.chunk, s.rounds as u32);
    let plan = TrainPlan {
        epochs: s.epochs,
        batch_size: s.batch_size,
        learning_rate: s.learning_rate,
        seed: s.seed,
        noise: None,
        prox_mu: s.prox_mu,
        compression: Compression::None,
        lora: None,
    };
    let timeout = Duration::from_secs(600);
    let federated = state.last_eval.clone();
    let me = myself.clone();
    tokio::spawn(async move {
        let mut jobs = tokio::task::JoinSet::new();
        for silo in silos {
            let (initial, spec, plan) = (initial.clone(), spec.clone(), plan.clone());
            jobs.spawn(async move {
                let r = async {
                    put_model(&silo.actor, model, &initial, chunk, timeout, &silo.name).await?;
                    let req = Request::LocalBaseline {
                        initial: model,
                        spec,
                        plan,
                        rounds,
                    };
                    call(&silo.actor, &req, timeout, &silo.name).await
                }
                .await;
                (silo.name, r)
            });
        }
        let mut local: BTreeMap<String, Result<EvalMetrics, String>> = BTreeMap::new();
        while let Some(Ok((name, r))) = jobs.join_next().await {
            let m = match r {
                Ok(Response::Evaluated(m)) => Ok(m),
                Ok(other) => Err(format!("expected Evaluated, got {}", other.kind())),
                Err(e) => Err(e.to_string()),
            };
            local.insert(name, m);
        }
        let mut names: Vec<String> = local.keys().chain(federated.keys()).cloned().collect();
        names.sort();
        names.dedup();
        let rows = names
            .into_iter()
            .map(|silo| {
                let fed = federated.get(&silo).cloned();
                let (loc, note) = match local.get(&silo) {
                    Some(Ok(m)) => (Some(m.clone()), None),
                    Some(Err(e)) => (None, Some(format!("local baseline failed: {e}"))),
                    None => (None, Some("not connected at the end".to_string())),
                };
                let examples = fed
                    .as_ref()
                    .or(loc.as_ref())
                    .map(|m| m.examples)
                    .unwrap_or(0);
                ComparisonRow {
                    silo,
                    examples,
                    local: loc,
                    federated: fed,
                    note,
                }
            })
            .collect();
        let _ = me.cast(CoordinatorMessage::ComparisonDone(rows));
    });
}

fn finish(
    state: &mut CoordinatorState,
    myself: &ActorRef<CoordinatorMessage>,
    error: Option<String>,
) {
    if state.finished {
        return;
    }
    state.finished = true;
    state.error = error.clone();
    let result = RunResult {
        rounds_committed: state.committed,
        version: state.model.version,
        error: error.clone(),
    };
    state.args.events.emit(Event::Finished {
        rounds_committed: result.rounds_committed,
        version: result.version,
        error,
    });
    let _ = state.args.done.send(result);
    myself.stop(Some("federation finished".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_round_task_is_reported_with_its_message() {
        let e = tokio::spawn(async {
            let v: Vec<u8> = Vec::new();
            if v.is_empty() {
                panic!("deadline overflow at round 7");
            }
        })
        .await
        .unwrap_err();
        let why = task_failure(e);
        assert!(
            why.contains("panicked") && why.contains("deadline overflow at round 7"),
            "{why}"
        );
    }

    #[test]
    fn pooled_statistics_equal_the_statistics_of_the_pool() {
        // Two silos: [1, 2, 3] and [10, 20].
        let silo = |v: &[f64]| {
            (
                v.len() as u64,
                v.iter().sum::<f64>(),
                v.iter().map(|x| x * x).sum::<f64>(),
            )
        };
        let (a, b) = (silo(&[1.0, 2.0, 3.0]), silo(&[10.0, 20.0]));
        let s = combine_stats(&[a.0 + b.0], &[a.1 + b.1], &[a.2 + b.2]);
        let all = [1.0f64, 2.0, 3.0, 10.0, 20.0];
        let m = all.iter().sum::<f64>() / 5.0;
        let sd = (all.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 5.0).sqrt();
        assert!((s.mean[0] as f64 - m).abs() < 1e-5);
        assert!((s.std[0] as f64 - sd).abs() < 1e-4);
        let z = combine_stats(&[0, 3], &[0.0, 6.0], &[0.0, 12.0]);
        assert_eq!((z.mean[0], z.std[0]), (0.0, 1.0));
        assert_eq!(z.std[1], 1.0); // constant feature: no spread
    }
}
