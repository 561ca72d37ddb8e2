//! Starting a coordinator node: everything `fedsilo coordinator` runs (cluster listener,
//! Policy, Aggregator, Validator and Coordinator actors, metrics, admin API, webhooks, the run
//! report), as a library call, so that a platform team's program can add its own actors to
//! the node and its own kernels (see `examples/custom_topology`).
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use fedsilo::launch::{run, Extension, RunningFederation};
//! let cfg = fedsilo::federation::FederationConfig::load("federation.toml".as_ref())?;
//! let watch: Extension = Box::new(|fed: RunningFederation| {
//!     let mut events = fed.events.subscribe();
//!     tokio::spawn(async move {
//!         while let Ok(e) = events.recv().await {
//!             println!("{e:?}");
//!         }
//!     });
//! });
//! let result = run(cfg, "federation.toml", fedsilo::events::EventFormat::Table, vec![watch]).await?;
//! # Ok(()) }
//! ```

mod prepare;
mod refusals;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ractor::{Actor, ActorRef};

use crate::actors::aggregator::{AggregatorActor, AggregatorMessage};
use crate::actors::policy::{PolicyActor, PolicyMessage, PolicySource};
use crate::actors::validator::{ValidatorActor, ValidatorMessage};
use crate::admin::{AdminApi, AdminListener};
use crate::cluster::{
    ClusterConfig, ClusterNode, PeerDirectory, AGGREGATOR_GROUP, COORDINATOR_GROUP, POLICY_GROUP,
    VALIDATOR_GROUP,
};
use crate::control::FederationControl;
use crate::coordinator::{
    CoordinatorActor, CoordinatorArgs, CoordinatorMessage, CoordinatorSettings, RunResult,
};
use crate::events::{Event, EventFormat, EventLog};
use crate::federation::FederationConfig;
use crate::identity::signature::CaCheck;
use crate::metrics::{Exposition, FederationMetrics};
use crate::state_dir::StateDir;
use crate::status::FederationStatus;
use crate::webhooks;
use prepare::{prepare, Prepared};
use refusals::announce_link_refusals;

/// What an extension gets once the coordinator runs.
#[derive(Debug, Clone)]
pub struct RunningFederation {
    /// Status and control requests (pause, resume, start a round, approve, reject).
    pub control: FederationControl,
    /// The event stream ([`EventLog::subscribe`]).
    pub events: Arc<EventLog>,
    /// The Coordinator actor itself (to link or monitor it).
    pub coordinator: ActorRef<CoordinatorMessage>,
    /// The node's verified peers.
    pub directory: Arc<PeerDirectory>,
}

/// Code that joins the node when the coordinator has started (it spawns its actors or tasks
/// and returns).
pub type Extension = Box<dyn FnOnce(RunningFederation) + Send>;

/// Runs a coordinator node for `cfg` (validated; `origin` names it in errors) until the
/// federation finishes or the process is interrupted (SIGINT or SIGTERM: `None`).
/// Extensions run once the coordinator has started.
pub async fn run(
    cfg: FederationConfig,
    origin: &str,
    events_format: EventFormat,
    extensions: Vec<Extension>,
) -> anyhow::Result<Option<RunResult>> {
    start(cfg, origin, events_format, None, extensions).await
}

/// [`run`], with fault injection for tests: `misroute`'s update goes to an aggregator the
/// policy does not allow (which must refuse it). Only with the `fault-injection` feature.
#[cfg(feature = "fault-injection")]
pub async fn run_misrouting(
    cfg: FederationConfig,
    origin: &str,
    events_format: EventFormat,
    misroute: Option<String>,
    extensions: Vec<Extension>,
) -> anyhow::Result<Option<RunResult>> {
    start(cfg, origin, events_format, misroute, extensions).await
}

async fn start(
    cfg: FederationConfig,
    origin: &str,
    events_format: EventFormat,
    misroute: Option<String>,
    extensions: Vec<Extension>,
) -> anyhow::Result<Option<RunResult>> {
    cfg.validate(origin)?;
    let prepared = prepare(&cfg, origin)?;
    let metrics = Arc::new(FederationMetrics::default());
    let resumable = cfg.admin.is_some() || !extensions.is_empty();
    let dir = crate::state_dir::open(
        &cfg.federation.state_dir,
        &prepared.creds,
        events_format,
        vec![metrics.clone()],
        |history| {
            match &history.paused {
            Some((by, reason)) if !resumable => Some(format!(
                "the federation was paused by {by} ({reason}) and nothing here could resume it: serve the admin API ([admin] listen, or --admin-listen) and POST /v1/resume"
            )),
            _ => None,
        }
        },
    )?;
    // The policy in force is kept, and journaled if it changed while the coordinator was down
    // (a failure to keep its text does not stop a federation: the digest still goes with
    // every version).
    if let Err(e) = crate::policy_archive::check_in(
        &cfg.federation.state_dir,
        &dir.journal,
        dir.history.policy.as_deref(),
        &prepared.policy,
    ) {
        tracing::warn!("recording the policy in force: {e}");
        eprintln!("fedsilo: warning: recording the policy in force: {e}");
    }
    // Bound before anything starts: a port in use stops nothing that has begun.
    let admin_listener = match &cfg.admin {
        Some(admin) => Some(
            AdminListener::bind(admin.listen)
                .await
                .with_context(|| format!("admin.listen {}", admin.listen))?,
        ),
        None => None,
    };
    let bulk = Arc::new(crate::bulk::BulkLinks::default());
    let node = start_node(&cfg, origin, &prepared, &dir.events, &metrics, &bulk).await?;
    let actors = Actors::spawn(&cfg, &prepared).await?;
    let settings = settings(&cfg, origin, &prepared, &node, misroute)?;
    let webhooks = webhooks::start(
        prepared.hooks,
        &dir.events,
        &cfg.federation.name,
        &cfg.federation.state_dir,
    );
    dir.events.emit(Event::Configured {
        model: settings.spec.describe(),
        aggregation: settings.aggregation.describe(),
        rounds: settings.rounds,
    });
    let (ca, registry, events) = (
        CaCheck::new(prepared.creds.roots()),
        dir.registry.clone(),
        dir.events.clone(),
    );
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let (status_tx, status_rx) = tokio::sync::watch::channel(FederationStatus::default());
    let StateDir {
        store,
        journal,
        history,
        ..
    } = dir;
    let (coordinator, coordinator_done) = Actor::spawn(
        None,
        CoordinatorActor,
        CoordinatorArgs {
            settings,
            directory: node.directory().clone(),
            bulk: bulk.clone(),
            data: prepared.data,
            policy: actors.policy.clone(),
            aggregator: actors.aggregator.clone(),
            validator: actors.validator.clone(),
            events: events.clone(),
            store,
            journal: Arc::new(journal),
            history,
            registry: registry.clone(),
            ca,
            credentials: prepared.creds.clone(),
            done: done_tx,
            status: status_tx,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting the coordinator: {e}"))?;
    ractor::pg::join(COORDINATOR_GROUP.to_string(), vec![coordinator.get_cell()]);
    let control = FederationControl::new(coordinator.clone(), status_rx);
    let admin_task = match admin_listener {
        Some(listener) => {
            let api = AdminApi {
                control: control.clone(),
                registry: registry.clone(),
                state_dir: cfg.federation.state_dir.clone(),
                tokens: prepared.tokens,
                refusals: Default::default(),
                metrics: Some(metrics.clone()),
                exposition: Some(Exposition::Coordinator(metrics, node.directory().clone())),
            };
            let bound = listener.local_addr()?;
            let task = listener.serve(&prepared.creds, api)?;
            eprintln!(
                "fedsilo: admin API at https://{bound}/v1/status (server name {}; OpenAPI at /openapi.json)",
                prepared.creds.identity().name
            );
            Some(task)
        }
        None => None,
    };
    for extension in extensions {
        extension(RunningFederation {
            control: control.clone(),
            events: events.clone(),
            coordinator: coordinator.clone(),
            directory: node.directory().clone(),
        });
    }
    let result = until_done(&mut done_rx, &cfg).await?;
    if let Some(t) = admin_task {
        t.abort();
    }
    coordinator.stop(None);
    // Let it finish what it is doing (an orderly stop records a round in flight as abandoned).
    let _ = tokio::time::timeout(Duration::from_secs(10), coordinator_done).await;
    actors.stop();
    drop(node);
    // Queued notices get a few seconds to go out; what is left is recorded for a replay.
    webhooks.shutdown(Duration::from_secs(5)).await;
    write_report(&cfg);
    write_governance(&cfg, &registry, CaCheck::new(prepared.creds.roots()));
    Ok(result)
}

/// The cluster node on `network.listen`, its refusals announced as events, and the metrics
/// endpoint if configured.
async fn start_node(
    cfg: &FederationConfig,
    origin: &str,
    prepared: &Prepared,
    events: &Arc<EventLog>,
    metrics: &Arc<FederationMetrics>,
    bulk: &Arc<crate::bulk::BulkLinks>,
) -> anyhow::Result<ClusterNode> {
    let node = ClusterNode::start(ClusterConfig {
        credentials: prepared.creds.clone(),
        listen: Some(cfg.network.listen),
        limits: crate::cluster::LinkLimits {
            connections: crate::connection_budget::ConnectionLimits {
                total: cfg.network.connections_total,
                per_peer: cfg.network.connections_per_address,
            },
            ..crate::cluster::LinkLimits::with_handshake_timeout(cfg.handshake_timeout(origin)?)
        },
        crl: cfg.network.crl.clone(),
        bulk: Some(bulk.clone()),
    })
    .await?;
    tokio::spawn(announce_link_refusals(
        node.directory().clone(),
        events.clone(),
    ));
    let addr = node.local_addr().map(|a| a.to_string()).unwrap_or_default();
    events.emit(Event::Listening {
        addr,
        node: node.identity().name.clone(),
    });
    if let Some(m) = cfg.network.metrics_listen {
        let what = Exposition::Coordinator(metrics.clone(), node.directory().clone());
        let bound = crate::metrics::serve(m, what)
            .await
            .with_context(|| format!("network.metrics_listen {m}: cannot serve metrics there"))?;
        eprintln!("fedsilo: metrics at http://{bound}/metrics");
    }
    Ok(node)
}

/// The Policy, Aggregator and Validator actors, each in its process group.
struct Actors {
    policy: ActorRef<PolicyMessage>,
    aggregator: ActorRef<AggregatorMessage>,
    validator: ActorRef<ValidatorMessage>,
}

impl Actors {
    async fn spawn(cfg: &FederationConfig, prepared: &Prepared) -> anyhow::Result<Self> {
        let source = PolicySource {
            path: Some(cfg.federation.policy.clone()),
            configured: Some(prepared.configured.clone()),
        };
        let (policy, _) = Actor::spawn(None, PolicyActor, (prepared.policy.clone(), source))
            .await
            .context("starting the policy actor")?;
        let (aggregator, _) = Actor::spawn(None, AggregatorActor, ())
            .await
            .context("starting the aggregator")?;
        let (validator, _) = Actor::spawn(None, ValidatorActor, ())
            .await
            .context("starting the validator")?;
        ractor::pg::join(POLICY_GROUP.to_string(), vec![policy.get_cell()]);
        ractor::pg::join(AGGREGATOR_GROUP.to_string(), vec![aggregator.get_cell()]);
        ractor::pg::join(VALIDATOR_GROUP.to_string(), vec![validator.get_cell()]);
        Ok(Self {
            policy,
            aggregator,
            validator,
        })
    }

    fn stop(&self) {
        for a in [
            self.policy.get_cell(),
            self.aggregator.get_cell(),
            self.validator.get_cell(),
        ] {
            a.stop(None);
        }
    }
}

/// The run's settings from the configuration and the node's identity.
fn settings(
    cfg: &FederationConfig,
    origin: &str,
    prepared: &Prepared,
    node: &ClusterNode,
    misroute: Option<String>,
) -> anyhow::Result<CoordinatorSettings> {
    Ok(CoordinatorSettings {
        name: cfg.federation.name.clone(),
        node: node.identity().name.clone(),
        rounds: cfg.federation.rounds,
        spec: prepared.spec.clone(),
        epochs: cfg.plan.epochs,
        batch_size: cfg.plan.batch_size,
        learning_rate: cfg.plan.learning_rate,
        prox_mu: cfg.plan.prox_mu,
        personalize_epochs: cfg.plan.personalize_epochs,
        lora: cfg.plan.lora.clone(),
        initial: prepared.initial.clone(),
        model_files: prepared.files.clone(),
        compression: prepared.configured.compression,
        seed: cfg.model.seed,
        chunk: cfg.network.chunk_values,
        spill_above: (cfg.network.spill_above_mb * 1024.0 * 1024.0) as usize,
        heartbeat_interval: cfg.heartbeat_interval(origin)?,
        heartbeat_timeout: cfg.heartbeat_timeout(origin)?,
        wait_for_silos: fedsilo_policies::duration::to_duration(cfg.federation.wait_for_silos_secs),
        compare_local: cfg.federation.compare_local,
        pooled_reference: prepared.pooled_reference.clone(),
        serve: cfg.federation.serve,
        roster: cfg.members.clone(),
        schedule: cfg
            .schedule
            .as_ref()
            .map(crate::retraining::RetrainSchedule::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?,
        aggregation: prepared.configured.aggregation.clone(),
        region: node.identity().region.clone(),
        misroute,
    })
}

/// The run's result when it ends, or `None` when the process is interrupted first.
async fn until_done(
    done: &mut tokio::sync::mpsc::UnboundedReceiver<RunResult>,
    cfg: &FederationConfig,
) -> anyhow::Result<Option<RunResult>> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let result = tokio::select! {
        r = done.recv() => r,
        _ = tokio::signal::ctrl_c() => None,
        _ = terminate.recv() => None,
    };
    if result.is_none() {
        eprintln!(
            "fedsilo: interrupted; committed versions are safe in {}",
            cfg.federation.state_dir.display()
        );
    }
    Ok(result)
}

/// The governance report beside the state (`governance.html` and `governance.json`).
fn write_governance(cfg: &FederationConfig, registry: &crate::registry::Registry, ca: CaCheck) {
    let dir = &cfg.federation.state_dir;
    let html = dir.join("governance.html");
    // Checkpoint files are not hashed again here: a stop must not wait on large models
    // (`fedsilo report --governance` checks them).
    let opts = crate::report::governance::ReadOptions {
        federation: cfg.federation.name.clone(),
        ca: Some(ca),
        roster: Some(cfg.members.clone()),
        versions: registry.list().ok(),
        check_files: false,
    };
    match crate::report::write_governance(dir, opts, &html, Some(&dir.join("governance.json"))) {
        Ok(r) if r.journal.problem.is_some() => eprintln!(
            "fedsilo: warning: governance report at {}: the audit journal does not verify",
            html.display()
        ),
        Ok(_) => eprintln!("fedsilo: governance report at {}", html.display()),
        Err(e) => eprintln!("fedsilo: warning: no governance report: {e}"),
    }
}

/// The run report beside the state.
fn write_report(cfg: &FederationConfig) {
    let report = cfg.federation.state_dir.join("report.html");
    let title = format!("fedsilo run report — {}", cfg.federation.name);
    match crate::report::write(&cfg.federation.state_dir, &report, &title) {
        Ok(()) => eprintln!("fedsilo: run report at {}", report.display()),
        Err(e) => eprintln!("fedsilo: warning: no run report: {e}"),
    }
}
