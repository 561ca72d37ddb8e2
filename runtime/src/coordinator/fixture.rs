//! What the state-machine tests start from: a state directory and certificate kit in a
//! temporary folder, the coordinator's state made from it as a start makes it, and helpers
//! that drive it the way a round, an operator or a restart would.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fedsilo_policies::Policy;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, watch};

use super::messages::{ControlRequest, ScalingOutcome};
use super::outcome::on_round;
use super::phase::Phase;
use super::recovery::recover;
use super::scaling;
use super::settings::{CoordinatorArgs, CoordinatorSettings, RunResult};
use super::state::CoordinatorState;
use crate::certs::{self, NodeSpec};
use crate::cluster::PeerDirectory;
use crate::compression::Compression;
use crate::data::Schema;
use crate::decision::Kind;
use crate::events::EventFormat;
use crate::identity::signature::CaCheck;
use crate::identity::Role;
use crate::kernels::Aggregation;
use crate::model::{Digest, ModelSpec};
use crate::protocol::{EvalMetrics, Scaling};
use crate::registry::{Status, VersionMeta};
use crate::round::RoundOutcome;
use crate::store::ModelStore;
use crate::tls::NodeCredentials;

/// An actor that never answers: the transitions under test never call the other actors.
pub(super) struct Nobody<M>(PhantomData<fn() -> M>);

impl<M: ractor::Message> Actor for Nobody<M> {
    type Msg = M;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<M>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

pub(super) async fn nobody<M: ractor::Message>() -> ActorRef<M> {
    Actor::spawn(None, Nobody::<M>(PhantomData), ())
        .await
        .unwrap()
        .0
}

/// A state directory and the coordinator's certificate kit.
pub(super) struct Fixture {
    _dir: tempfile::TempDir,
    pub(super) state_dir: PathBuf,
    kit: PathBuf,
    pub(super) done: Option<mpsc::UnboundedReceiver<RunResult>>,
    /// The coordinator serves (`federation.serve`), with this first run's size.
    pub(super) serve: Option<u64>,
}

pub(super) fn spec() -> ModelSpec {
    ModelSpec {
        inputs: schema().encoded_width(),
        hidden: vec![2],
    }
}

pub(super) fn schema() -> Schema {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/churn/schema.toml");
    Schema::load(&path).unwrap()
}

pub(super) fn metrics(auc: f64) -> BTreeMap<String, EvalMetrics> {
    BTreeMap::from([(
        "northeast".to_string(),
        EvalMetrics {
            examples: 100,
            loss: 0.4,
            accuracy: Some(0.8),
            r2: None,
            mae: None,
            auc: Some(auc),
            personalized: None,
            business: None,
        },
    )])
}

impl Fixture {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let nodes = [NodeSpec::parse(Role::Coordinator, "coordinator:us").unwrap()];
        certs::init(&certs, "t", &nodes, 30, false).unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir_all(&state_dir).unwrap();
        Self {
            state_dir,
            kit: certs.join("coordinator"),
            _dir: dir,
            done: None,
            serve: None,
        }
    }

    /// A serving coordinator's fixture whose federation file asks for a first run of `rounds`.
    pub(super) fn serving(rounds: u64) -> Self {
        Self {
            serve: Some(rounds),
            ..Self::new()
        }
    }

    /// A coordinator's state as `fedsilo coordinator` makes it at start (journal opened and
    /// reconciled, registry reconciled), or the error the start stops with.
    pub(super) async fn start(&mut self) -> crate::Result<CoordinatorState> {
        let creds = NodeCredentials::load_kit(&self.kit)?;
        let dir =
            crate::state_dir::open(&self.state_dir, &creds, EventFormat::Json, vec![], |_| None)?;
        let (done, done_rx) = mpsc::unbounded_channel();
        self.done = Some(done_rx);
        let mut settings = settings();
        if let Some(rounds) = self.serve {
            settings.serve = true;
            settings.rounds = rounds;
        }
        recover(CoordinatorArgs {
            settings,
            directory: Arc::new(PeerDirectory::default()),
            bulk: Default::default(),
            data: (&schema()).into(),
            policy: nobody().await,
            aggregator: nobody().await,
            validator: nobody().await,
            events: dir.events,
            store: dir.store,
            journal: Arc::new(dir.journal),
            history: dir.history,
            registry: dir.registry,
            ca: CaCheck::new(creds.roots()),
            credentials: creds,
            done,
            status: watch::channel(Default::default()).0,
        })
    }

    /// The kinds of the journal's records, in order (the signer entries left out).
    pub(super) fn journal(&self) -> Vec<String> {
        std::fs::read_to_string(self.state_dir.join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["record"]["kind"].as_str().unwrap().to_string()
            })
            .filter(|k| k != "signer")
            .collect()
    }

    pub(super) fn current(&self) -> Option<u64> {
        ModelStore::open(&self.state_dir)
            .unwrap()
            .current_version()
            .unwrap()
    }

    /// Rounds in `rounds.jsonl`.
    pub(super) fn rounds_logged(&self) -> Vec<u64> {
        std::fs::read_to_string(self.state_dir.join("rounds.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["round"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    /// Events of `kind` in `events.jsonl`.
    pub(super) fn events(&self, kind: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state_dir.join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["event"] == kind)
            .collect()
    }
}

pub(super) fn settings() -> CoordinatorSettings {
    CoordinatorSettings {
        name: "test".into(),
        rounds: 10,
        spec: spec().into(),
        epochs: 1,
        batch_size: 8,
        learning_rate: 0.1,
        prox_mu: 0.0,
        initial: None,
        model_files: None,
        compression: Compression::None,
        personalize_epochs: 0,
        lora: None,
        seed: 7,
        chunk: 1 << 16,
        spill_above: 32 << 20,
        heartbeat_interval: Duration::from_millis(500),
        heartbeat_timeout: Duration::from_secs(3),
        wait_for_silos: Duration::from_secs(60),
        compare_local: false,
        pooled_reference: None,
        serve: false,
        schedule: None,
        roster: vec![],
        aggregation: Aggregation::default(),
        region: "us".into(),
        node: "coordinator".into(),
        misroute: None,
    }
}

pub(super) fn scaling_outcome() -> ScalingOutcome {
    let width = schema().numeric_count();
    ScalingOutcome {
        scaling: Some(Scaling {
            mean: vec![0.0; width],
            std: vec![1.0; width],
        }),
        silos: vec!["northeast".into(), "west".into()],
        rows: 200,
        blocked: vec![],
    }
}

/// Version `v`'s entry in the registry the coordinator holds open.
pub(super) fn meta(s: &CoordinatorState, v: u64) -> Option<VersionMeta> {
    s.ledger.registry.get(v).unwrap()
}

/// Scaling agreed: version 0 committed, the federation ready.
pub(super) async fn ready(f: &mut Fixture) -> CoordinatorState {
    let mut s = f.start().await.unwrap();
    scaling::on_done(&mut s, scaling_outcome());
    assert!(matches!(s.phase, Phase::Ready));
    s
}

/// A round in flight, as dispatch leaves it.
pub(super) fn dispatched(s: &mut CoordinatorState) -> u64 {
    let round = s.run.next_round;
    s.phase = Phase::Round { round, task: None };
    round
}

/// Round `round`'s candidate (the next version), moved `delta` from the current model.
pub(super) fn candidate(
    s: &CoordinatorState,
    round: u64,
    delta: f32,
    failed_gate: Option<&str>,
) -> RoundOutcome {
    let params: Vec<f32> = s.versions.model.params.iter().map(|p| p + delta).collect();
    let meta = VersionMeta {
        version: s.versions.next_version,
        parent: s.versions.model.version,
        round,
        status: Status::Committed,
        digest: Digest::of_f32(&params).hex(),
        file_sha256: String::new(),
        participants: vec![("northeast".into(), 100), ("west".into(), 100)],
        aggregation: "fedavg".into(),
        policy_digest: "p".into(),
        privacy: None,
        validation: metrics(0.8),
        reason: String::new(),
        created_ms: 0,
        decided_by: "gate".into(),
        run: s.run.id(),
    };
    RoundOutcome::Candidate {
        params,
        summary: Box::new(super::ledger::summary_of(&meta)),
        optimizer: None,
        failed_gate: failed_gate.map(str::to_string),
    }
}

pub(super) fn approval_policy() -> Policy {
    Policy::from_toml_str(
        "[participation]\nmin_silos = 2\nquorum = 2\n\n[validation]\nrequire_approval = true\n",
        "test",
    )
    .unwrap()
}

pub(super) fn decide(kind: Kind, version: u64) -> ControlRequest {
    ControlRequest::Decide {
        kind,
        version,
        reason: "reviewed".into(),
        by: "alice".into(),
        certificate: String::new(),
    }
}

pub(super) fn pause() -> ControlRequest {
    ControlRequest::Pause {
        by: "alice".into(),
        reason: "audit".into(),
    }
}

/// A candidate v1 of round 1 awaiting approval.
pub(super) async fn awaiting(f: &mut Fixture) -> CoordinatorState {
    let mut s = ready(f).await;
    s.run.round_policy = approval_policy();
    let round = dispatched(&mut s);
    let outcome = candidate(&s, round, 0.5, None);
    on_round(&mut s, outcome).unwrap();
    assert_eq!(s.phase.awaiting().map(|a| a.meta.version), Some(1));
    s
}

/// v1 committed in round 1.
pub(super) async fn committed(f: &mut Fixture) -> CoordinatorState {
    let mut s = ready(f).await;
    let round = dispatched(&mut s);
    let outcome = candidate(&s, round, 0.5, None);
    on_round(&mut s, outcome).unwrap();
    s
}
