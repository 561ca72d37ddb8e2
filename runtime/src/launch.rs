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
//! let result = run(cfg, "federation.toml", fedsilo::events::EventFormat::Table, None, vec![watch]).await?;
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fedsilo_policies::Policy;
use ractor::{Actor, ActorRef};

use crate::actors::aggregator::AggregatorActor;
use crate::actors::policy::{PolicyActor, PolicySource};
use crate::actors::validator::ValidatorActor;
use crate::admin::tokens::TokenFile;
use crate::admin::{AdminApi, AdminListener};
use crate::audit::{History, Journal};
use crate::cluster::{
    ClusterConfig, ClusterNode, PeerDirectory, AGGREGATOR_GROUP, COORDINATOR_GROUP, POLICY_GROUP,
    VALIDATOR_GROUP,
};
use crate::compatibility::{self, Configured};
use crate::control::FederationControl;
use crate::coordinator::{
    CoordinatorActor, CoordinatorArgs as ActorArgs, CoordinatorMessage, CoordinatorSettings,
    PretrainedModel, RunResult,
};
use crate::data::Schema;
use crate::events::{Event, EventFormat, EventLog};
use crate::federation::FederationConfig;
use crate::identity::signature::CaCheck;
use crate::identity::Role;
use crate::model::{Digest, ModelSpec};
use crate::registry::Registry;
use crate::status::FederationStatus;
use crate::store::ModelStore;
use crate::tls::NodeCredentials;
use crate::webhooks;

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

/// Reads `model.initial`: the tensors of `spec`'s layout, F32, finite; errors name the file
/// and the tensor.
fn pretrained(path: &Path, spec: &ModelSpec) -> anyhow::Result<PretrainedModel> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path)
        .with_context(|| format!("model.initial: reading the pretrained model {origin}"))?;
    let set = crate::model::tensor_file::TensorSet::from_bytes(&bytes, &origin)
        .with_context(|| format!("model.initial: reading the pretrained model {origin}"))?;
    let params = set.to_layout(&spec.layout(), &origin).with_context(|| {
        format!(
            "model.initial: {origin} is not a `{}` (hidden = {:?} in the federation file)",
            spec.describe(),
            spec.hidden
        )
    })?;
    Ok(PretrainedModel {
        params,
        origin: format!("{origin} (sha256 {})", Digest::of_bytes(&bytes).hex()),
    })
}

/// Runs a coordinator node for `cfg` (validated; `origin` names it in errors) until the
/// federation finishes or the process is interrupted (SIGINT or SIGTERM: `None`).
/// `misroute` is fault injection for tests. Extensions run once the coordinator has started.
pub async fn run(
    cfg: FederationConfig,
    origin: &str,
    events_format: EventFormat,
    misroute: Option<String>,
    extensions: Vec<Extension>,
) -> anyhow::Result<Option<RunResult>> {
    let origin = origin.to_string();
    cfg.validate(&origin)?;
    // Webhook secrets and CA files are read now: a mistake stops the start, naming the hook.
    let hooks = webhooks::prepare(&cfg.webhooks, &origin)?;
    let tokens = match cfg.admin.as_ref().and_then(|a| a.tokens.as_ref()) {
        Some(path) => Some(TokenFile::open(path).context("admin.tokens")?),
        None => None,
    };
    // The model first: a schema or pretrained file that does not fit is an error before any
    // certificate is read or port opened.
    let schema = Schema::load(&cfg.model.schema)?;
    let spec = ModelSpec {
        inputs: schema.encoded_width(),
        hidden: cfg.model.hidden.clone(),
    };
    spec.validate()
        .map_err(|e| anyhow::anyhow!("{origin}: [model]: {e}"))?;
    let initial = match &cfg.model.initial {
        None => None,
        Some(path) => Some(pretrained(path, &spec)?),
    };
    if let Some(plan) = &cfg.plan.lora {
        crate::model::lora::Adapters::new(&spec, plan)
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        if cfg.aggregation.server_optimizer.is_some() {
            bail!("{origin}: [plan.lora] with [aggregation.server_optimizer] is not supported: the optimiser's state is kept for full models");
        }
    }
    let creds = NodeCredentials::load_kit(&cfg.network.kit)
        .context("loading the coordinator's certificate kit")?;
    if creds.identity().role != Role::Coordinator {
        bail!(
            "{}: certificate of role {}, the coordinator needs role coordinator",
            cfg.network.kit.display(),
            creds.identity().role
        );
    }
    let policy = Policy::load(&cfg.federation.policy)?;
    for w in policy.warnings() {
        tracing::warn!("{}: {w}", cfg.federation.policy.display());
        eprintln!("fedsilo: warning: {}: {w}", cfg.federation.policy.display());
    }
    let compression = cfg
        .plan
        .compression()
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    // The same rules hold at every policy reload (the Policy actor checks them).
    let configured = Configured {
        aggregation: cfg.aggregation.clone(),
        lora: cfg.plan.lora.is_some(),
        compression,
    };
    compatibility::check(&configured, &policy).map_err(|e| {
        anyhow::anyhow!(
            "{} and {origin} disagree: {e}",
            cfg.federation.policy.display()
        )
    })?;
    let store = ModelStore::open(&cfg.federation.state_dir)?;
    let metrics = Arc::new(crate::metrics::FederationMetrics::default());
    let events = Arc::new(EventLog::open(
        &cfg.federation.state_dir,
        events_format,
        vec![metrics.clone()],
    )?);
    // The journal first: it is checked end to end, and a commit it recorded that a crash left
    // half-done is finished, before anything else happens.
    let (journal, entries) = Journal::open(
        &cfg.federation.state_dir.join("audit.jsonl"),
        &creds,
        store.current_version()?.unwrap_or(0),
    )?;
    let history = History::of(&entries);
    if let (Some((by, reason)), None, true) = (&history.paused, &cfg.admin, extensions.is_empty()) {
        bail!(
            "the federation was paused by {by} ({reason}) and nothing here could resume it: serve the admin API ([admin] listen, or --admin-listen) and POST /v1/resume"
        );
    }
    let last = history
        .last_commit
        .as_ref()
        .map(|(v, sha)| (*v, sha.as_str()));
    for did in store.reconcile(last)? {
        tracing::warn!("{did}");
        eprintln!("fedsilo: recovery: {did}");
    }
    let registry = Arc::new(Registry::open(&cfg.federation.state_dir)?);
    let ca = CaCheck::new(creds.roots());
    for did in registry.reconcile(&entries, &history)? {
        tracing::warn!("{did}");
        eprintln!("fedsilo: recovery: {did}");
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
    let admin_credentials = creds.clone();
    let node = ClusterNode::start(ClusterConfig {
        credentials: creds,
        listen: Some(cfg.network.listen),
        limits: crate::cluster::LinkLimits::with_handshake_timeout(cfg.handshake_timeout(&origin)?),
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
        let what =
            crate::metrics::Exposition::Coordinator(metrics.clone(), node.directory().clone());
        let bound = crate::metrics::serve(m, what)
            .await
            .with_context(|| format!("network.metrics_listen {m}: cannot serve metrics there"))?;
        eprintln!("fedsilo: metrics at http://{bound}/metrics");
    }

    let (policy_ref, _) = Actor::spawn(
        None,
        PolicyActor,
        (
            policy,
            PolicySource {
                path: Some(cfg.federation.policy.clone()),
                configured: Some(configured),
            },
        ),
    )
    .await
    .context("starting the policy actor")?;
    let (aggregator, _) = Actor::spawn(None, AggregatorActor, ())
        .await
        .context("starting the aggregator")?;
    let (validator, _) = Actor::spawn(None, ValidatorActor, ())
        .await
        .context("starting the validator")?;
    ractor::pg::join(POLICY_GROUP.to_string(), vec![policy_ref.get_cell()]);
    ractor::pg::join(AGGREGATOR_GROUP.to_string(), vec![aggregator.get_cell()]);
    ractor::pg::join(VALIDATOR_GROUP.to_string(), vec![validator.get_cell()]);

    let webhooks = webhooks::start(
        hooks,
        &events,
        &cfg.federation.name,
        &cfg.federation.state_dir,
    );
    let settings = CoordinatorSettings {
        name: cfg.federation.name.clone(),
        node: node.identity().name.clone(),
        rounds: cfg.federation.rounds,
        spec,
        epochs: cfg.plan.epochs,
        batch_size: cfg.plan.batch_size,
        learning_rate: cfg.plan.learning_rate,
        prox_mu: cfg.plan.prox_mu,
        personalize_epochs: cfg.plan.personalize_epochs,
        lora: cfg.plan.lora.clone(),
        initial,
        compression,
        seed: cfg.model.seed,
        chunk: cfg.network.chunk_values,
        heartbeat_interval: cfg.heartbeat_interval(&origin)?,
        heartbeat_timeout: cfg.heartbeat_timeout(&origin)?,
        wait_for_silos: fedsilo_policies::duration::to_duration(cfg.federation.wait_for_silos_secs),
        compare_local: cfg.federation.compare_local,
        aggregation: cfg.aggregation.clone(),
        region: node.identity().region.clone(),
        misroute,
    };
    events.emit(Event::Configured {
        model: settings.spec.describe(),
        aggregation: settings.aggregation.describe(),
        rounds: settings.rounds,
    });
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let (status_tx, status_rx) = tokio::sync::watch::channel(FederationStatus::default());
    let (coordinator, coordinator_done) = Actor::spawn(
        None,
        CoordinatorActor,
        ActorArgs {
            settings,
            directory: node.directory().clone(),
            schema,
            policy: policy_ref.clone(),
            aggregator: aggregator.clone(),
            validator: validator.clone(),
            events: events.clone(),
            store,
            journal: Arc::new(journal),
            history,
            registry: registry.clone(),
            ca,
            done: done_tx,
            status: status_tx,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting the coordinator: {e}"))?;
    ractor::pg::join(COORDINATOR_GROUP.to_string(), vec![coordinator.get_cell()]);
    let control = FederationControl::new(coordinator.clone(), status_rx);
    let mut admin_task = None;
    if let Some(listener) = admin_listener {
        let api = AdminApi {
            control: control.clone(),
            registry,
            state_dir: cfg.federation.state_dir.clone(),
            tokens,
            refusals: Default::default(),
            metrics: Some(metrics.clone()),
            exposition: Some(crate::metrics::Exposition::Coordinator(
                metrics.clone(),
                node.directory().clone(),
            )),
        };
        let bound = listener.local_addr()?;
        admin_task = Some(listener.serve(&admin_credentials, api)?);
        eprintln!(
            "fedsilo: admin API at https://{bound}/v1/status (server name {}; OpenAPI at /openapi.json)",
            admin_credentials.identity().name
        );
    }

    for extension in extensions {
        extension(RunningFederation {
            control: control.clone(),
            events: events.clone(),
            coordinator: coordinator.clone(),
            directory: node.directory().clone(),
        });
    }

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let result = tokio::select! {
        r = done_rx.recv() => r,
        _ = tokio::signal::ctrl_c() => None,
        _ = terminate.recv() => None,
    };
    if result.is_none() {
        eprintln!(
            "fedsilo: interrupted; committed versions are safe in {}",
            cfg.federation.state_dir.display()
        );
    }
    if let Some(t) = admin_task {
        t.abort();
    }
    coordinator.stop(None);
    // Let it finish what it is doing (an orderly stop records a round in flight as abandoned).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), coordinator_done).await;
    for a in [
        policy_ref.get_cell(),
        aggregator.get_cell(),
        validator.get_cell(),
    ] {
        a.stop(None);
    }
    drop(node);
    // Queued notices get a few seconds to go out; what is left is recorded for a replay.
    webhooks.shutdown(Duration::from_secs(5)).await;
    let report = cfg.federation.state_dir.join("report.html");
    let title = format!("fedsilo run report — {}", cfg.federation.name);
    match crate::report::write(&cfg.federation.state_dir, &report, &title) {
        Ok(()) => eprintln!("fedsilo: run report at {}", report.display()),
        Err(e) => eprintln!("fedsilo: warning: no run report: {e}"),
    }
    Ok(result)
}

/// Turns the directory's refusals of consortium certificates, and its replacements of dead
/// links, into federation events: what an operator must see (a member's certificate used to
/// claim another's name, a copied kit). At most one refusal event per identity per 10 s, so a
/// reconnect loop cannot flood `events.jsonl`; every refusal is logged and counted anyway.
async fn announce_link_refusals(
    directory: Arc<crate::cluster::PeerDirectory>,
    events: Arc<EventLog>,
) {
    use crate::cluster::PeerEvent;
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = directory.subscribe();
    let mut last: std::collections::HashMap<String, std::time::Instant> = Default::default();
    loop {
        match rx.recv().await {
            Ok(PeerEvent::Refused {
                peer_addr,
                identity: Some(identity),
                reason,
            }) => {
                let now = std::time::Instant::now();
                let recent = last
                    .get(&identity.name)
                    .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(10));
                if !recent {
                    last.insert(identity.name.clone(), now);
                    events.emit(Event::LinkRefused {
                        peer: peer_addr,
                        certificate: identity.to_string(),
                        reason,
                    });
                }
            }
            Ok(PeerEvent::Replaced {
                identity,
                silent_for,
                ..
            }) => events.emit(Event::LinkReplaced {
                node: identity.name,
                silent_secs: silent_for.as_secs_f64(),
            }),
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}
