//! `fedsilo coordinator`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use fedsilo::actors::aggregator::AggregatorActor;
use fedsilo::actors::coordinator::{
    CoordinatorActor, CoordinatorArgs as ActorArgs, CoordinatorSettings, PretrainedModel,
};
use fedsilo::actors::policy::{PolicyActor, PolicySource};
use fedsilo::actors::validator::ValidatorActor;
use fedsilo::admin::tokens::TokenFile;
use fedsilo::admin::AdminApi;
use fedsilo::audit::signature::CaCheck;
use fedsilo::audit::{History, Journal};
use fedsilo::cluster::{
    ClusterConfig, ClusterNode, AGGREGATOR_GROUP, COORDINATOR_GROUP, POLICY_GROUP, VALIDATOR_GROUP,
};
use fedsilo::control::FederationControl;
use fedsilo::data::Schema;
use fedsilo::events::{Event, EventFormat, EventLog};
use fedsilo::federation::FederationConfig;
use fedsilo::identity::Role;
use fedsilo::model::{Digest, ModelSpec};
use fedsilo::registry::Registry;
use fedsilo::status::FederationStatus;
use fedsilo::store::ModelStore;
use fedsilo::tls::NodeCredentials;
use fedsilo::webhooks;
use fedsilo_policies::Policy;
use ractor::Actor;

/// Run the coordinator of a federation.
///
/// Reads the federation file (see the README for every key), listens for silos over mutual
/// TLS, agrees feature scaling with them, runs the configured number of rounds and exits.
/// Every event goes to <state_dir>/events.jsonl; committed models to <state_dir>/models/.
/// Restarted on the same state directory, it resumes from the last committed version.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// The federation file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Override `network.listen` (use port 0 to pick a free port; the Listening event says which).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override `network.kit`, the coordinator's certificate kit directory.
    #[arg(long)]
    kit: Option<PathBuf>,
    /// Override `federation.state_dir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Override `federation.rounds`.
    #[arg(long)]
    rounds: Option<u64>,
    /// Override `federation.policy`, the policy file (watched for changes while running).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Override `network.metrics_listen`: serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Override `admin.listen`: serve the admin API at https://ADDR/v1/… (operator
    /// certificates; bearer tokens too when `admin.tokens` is set).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Override `plan.compression`: none, int8, int4 or top-k:F (F in (0, 1], e.g. top-k:0.1).
    #[arg(long)]
    compression: Option<String>,
    /// Override `model.initial`: start from this pretrained model (safetensors, e.g. from
    /// `fedsilo-pretrain`) instead of a random one.
    #[arg(long)]
    initial: Option<PathBuf>,
    /// Fault injection for tests: route this silo's update to an aggregator the policy does not
    /// allow (the aggregator must refuse it).
    #[arg(long, hide = true)]
    fault_misroute: Option<String>,
    /// How to show events on stdout.
    #[arg(long, value_enum, default_value_t = EventFormat::Table)]
    events: EventFormat,
}

/// Reads `model.initial`: the tensors of `spec`'s layout, F32, finite; errors name the file
/// and the tensor.
fn pretrained(path: &std::path::Path, spec: &ModelSpec) -> anyhow::Result<PretrainedModel> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path)
        .with_context(|| format!("model.initial: reading the pretrained model {origin}"))?;
    let set = fedsilo::model::tensor_file::TensorSet::from_bytes(&bytes, &origin)
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

/// Runs the coordinator until the federation finishes.
pub async fn run(a: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = FederationConfig::load(&a.config)?;
    let origin = a.config.display().to_string();
    if let Some(l) = a.listen {
        cfg.network.listen = l;
    }
    if let Some(k) = a.kit {
        cfg.network.kit = k;
    }
    if let Some(s) = a.state_dir {
        cfg.federation.state_dir = s;
    }
    if let Some(r) = a.rounds {
        cfg.federation.rounds = r;
    }
    if let Some(p) = a.policy {
        cfg.federation.policy = p;
    }
    if let Some(c) = a.compression {
        cfg.plan.compression = Some(c);
    }
    if let Some(m) = a.metrics_listen {
        cfg.network.metrics_listen = Some(m);
    }
    if let Some(i) = a.initial {
        cfg.model.initial = Some(i);
    }
    if let Some(listen) = a.admin_listen {
        match cfg.admin.as_mut() {
            Some(admin) => admin.listen = listen,
            None => {
                cfg.admin = Some(fedsilo::federation::AdminSection {
                    listen,
                    tokens: None,
                })
            }
        }
    }
    cfg.validate(&origin)?;
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
    let initial = match &cfg.model.initial {
        None => None,
        Some(path) => Some(pretrained(path, &spec)?),
    };
    if let Some(plan) = &cfg.plan.lora {
        fedsilo::model::lora::Adapters::new(&spec, plan)
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
    if cfg.plan.lora.is_some() && policy.residency.is_some() {
        bail!(
            "{} and {origin} disagree: [plan.lora] with [residency] is not supported yet: regional aggregators combine full updates",
            cfg.federation.policy.display()
        );
    }
    if let Some(dp) = &policy.privacy {
        fedsilo::privacy::mechanism::check_aggregation(dp, &cfg.aggregation).map_err(|e| {
            anyhow::anyhow!(
                "{} and {} disagree: {e}",
                cfg.federation.policy.display(),
                origin
            )
        })?;
    }
    let compression = cfg
        .plan
        .compression()
        .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    if let (Some(_), true) = (
        &policy.secure_aggregation,
        compression != fedsilo::compression::Compression::None,
    ) {
        let c = compression.describe();
        bail!(
            "{} and {origin} disagree: plan.compression = {c:?} cannot apply under [secure_aggregation]: masked updates travel as ring values, and a compressed update cannot be masked (remove one of them)",
            cfg.federation.policy.display()
        );
    }
    if let Some(sa) = &policy.secure_aggregation {
        fedsilo::secagg::requirements::check_aggregation(
            sa,
            &cfg.aggregation,
            policy.participation.max_silos,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{} and {} disagree: {e}",
                cfg.federation.policy.display(),
                origin
            )
        })?;
    }
    let store = ModelStore::open(&cfg.federation.state_dir)?;
    let events = Arc::new(EventLog::open(&cfg.federation.state_dir, a.events)?);
    // The journal first: it is checked end to end, and a commit it recorded that a crash left
    // half-done is finished, before anything else happens.
    let (journal, entries) = Journal::open(
        &cfg.federation.state_dir.join("audit.jsonl"),
        &creds,
        store.current_version()?.unwrap_or(0),
    )?;
    let history = History::of(&entries);
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

    let admin_credentials = creds.clone();
    let node = ClusterNode::start(ClusterConfig {
        credentials: creds,
        listen: Some(cfg.network.listen),
        handshake_timeout: cfg.handshake_timeout(&origin)?,
    })
    .await?;
    let addr = node.local_addr().map(|a| a.to_string()).unwrap_or_default();
    events.emit(Event::Listening {
        addr,
        node: node.identity().name.clone(),
    });
    if let Some(m) = cfg.network.metrics_listen {
        let what =
            fedsilo::metrics::Exposition::Coordinator(events.metrics(), node.directory().clone());
        let bound = fedsilo::metrics::serve(m, what)
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
                aggregation: Some(cfg.aggregation.clone()),
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
        &cfg.webhooks,
        &origin,
        &events,
        &cfg.federation.name,
        &cfg.federation.state_dir,
    )?;
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
        wait_for_silos: Duration::from_secs_f64(cfg.federation.wait_for_silos_secs),
        compare_local: cfg.federation.compare_local,
        aggregation: cfg.aggregation.clone(),
        region: node.identity().region.clone(),
        misroute: a.fault_misroute.clone(),
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
    if let Some(admin) = &cfg.admin {
        let api = AdminApi {
            control: FederationControl::new(coordinator.clone(), status_rx),
            registry,
            state_dir: cfg.federation.state_dir.clone(),
            tokens,
        };
        let bound = fedsilo::admin::serve(admin.listen, &admin_credentials, api)
            .await
            .with_context(|| format!("admin.listen {}", admin.listen))?;
        eprintln!(
            "fedsilo: admin API at https://{bound}/v1/status (server name {}; OpenAPI at /openapi.json)",
            admin_credentials.identity().name
        );
    }

    let result = tokio::select! {
        r = done_rx.recv() => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("fedsilo: interrupted; committed versions are safe in {}", cfg.federation.state_dir.display());
            None
        }
    };
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
    match fedsilo::report::write(&cfg.federation.state_dir, &report, &title) {
        Ok(()) => eprintln!("fedsilo: run report at {}", report.display()),
        Err(e) => eprintln!("fedsilo: warning: no run report: {e}"),
    }
    Ok(match result {
        Some(r) if r.error.is_none() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}
