//! Running a silo: load credentials and data, start the cluster node and the trainer, and keep
//! a verified link to the coordinator (reconnecting with backoff when it drops).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fedsilo::cluster::link::keep_linked;
use fedsilo::cluster::{ClusterConfig, ClusterNode, TRAINER_GROUP};
use fedsilo::data::Schema;
use fedsilo::identity::Role;
use fedsilo::tls::NodeCredentials;
use ractor::Actor;

use crate::data::Dataset;
use crate::model_trainers::Holdout;
use crate::trainer::{LocalData, TrainerActor, TrainerArgs};
use fedsilo::model::manifest::Manifest;

/// What a silo node needs to run.
#[derive(Debug, Clone)]
pub struct SiloSettings {
    /// Certificate kit directory (`ca.pem`, `cert.pem`, `key.pem`).
    pub kit: PathBuf,
    /// Coordinator address, `host:port`.
    pub coordinator: String,
    /// The regional aggregator this silo's updates go to, `(host:port, node name)`, if the
    /// federation aggregates by region.
    pub aggregator: Option<(String, String)>,
    /// The coordinator's node name (checked against its certificate).
    pub coordinator_name: String,
    /// The silo's CSV file.
    pub data: PathBuf,
    /// What the silo trains: the federation's schema (the built-in MLP) or a model's manifest
    /// with the directory holding its pinned files.
    pub model: LocalModel,
    /// Held-out fraction.
    pub holdout: f64,
    /// Seed of the train/held-out split.
    pub split_seed: u64,
    /// Exit once the link to the coordinator closes (instead of reconnecting).
    pub once: bool,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Fault injection (tests only; empty without the `fault-injection` feature).
    pub faults: crate::faults::Faults,
    /// Record-level DP-SGD on the silo's own terms (its budget and ledger included).
    pub dp_sgd: Option<crate::trainer::SiloDpSgd>,
    /// Train with this external program instead of the built-in trainer.
    pub external: Option<crate::external::ExternalTrainer>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Keep deployed models here (`None`: deployments are refused).
    pub deploy_dir: Option<PathBuf>,
    /// Write the silo's status here on every change (`silo-node status` reads it).
    pub status_file: Option<PathBuf>,
}

/// What a silo trains, as its command line says.
#[derive(Debug, Clone)]
pub enum LocalModel {
    /// Tabular data under this schema file.
    Schema(PathBuf),
    /// The model this manifest describes, its files in `model_dir`.
    Manifest {
        /// The manifest file.
        manifest: PathBuf,
        /// The directory of its assets (checked by digest).
        model_dir: PathBuf,
        /// A file of held-out rows (instead of a fraction of the data file).
        holdout_data: Option<PathBuf>,
    },
}

/// Reads the silo's data (and for a described model, builds its trainer: the program of
/// `--trainer` if there is one, working in directories named after the silo `me`).
fn local_data(s: &SiloSettings, me: &str) -> anyhow::Result<LocalData> {
    match &s.model {
        LocalModel::Schema(path) => {
            let schema = Schema::load(path)?;
            let data = Dataset::load(&s.data, &schema, s.holdout, s.split_seed)?;
            tracing::info!(
                train = data.train.len(),
                holdout = data.holdout.len(),
                "data loaded"
            );
            Ok(LocalData::Tabular(Arc::new(data)))
        }
        LocalModel::Manifest {
            manifest,
            model_dir,
            holdout_data,
        } => {
            let m = Manifest::load(manifest)
                .with_context(|| format!("--manifest {}", manifest.display()))?;
            let holdout = match holdout_data {
                Some(h) => Holdout::File(h.clone()),
                None => Holdout::Fraction {
                    fraction: s.holdout,
                    seed: s.split_seed,
                },
            };
            let external = s.external.clone().map(|mut t| {
                t.owner = me.to_string();
                t
            });
            let context = || format!("--manifest {}", manifest.display());
            let needed = crate::model_trainers::needed_files(&m, external.is_some())
                .with_context(context)?;
            let absent = fedsilo::model::files::absent(&m, model_dir, &needed)
                .with_context(|| format!("--model-dir {}", model_dir.display()))?;
            if !absent.is_empty() {
                // The data is checked now: a CSV that cannot be used stops the start, rather
                // than after the files have travelled.
                let rows = crate::model_trainers::rows::Rows::read(&s.data, &holdout, &m)
                    .with_context(context)?;
                std::fs::create_dir_all(model_dir)
                    .with_context(|| format!("--model-dir {}", model_dir.display()))?;
                let names: Vec<&str> = absent.iter().map(|a| a.name.as_str()).collect();
                eprintln!(
                    "silo {me}: {} not in {}: the coordinator will send them, each checked against the manifest's SHA-256",
                    names.join(", "),
                    model_dir.display()
                );
                let unusable = rows.single_class(&m);
                return Ok(LocalData::Awaiting(Arc::new(
                    crate::trainer::AwaitingFiles::new(
                        m,
                        model_dir.clone(),
                        s.data.clone(),
                        holdout,
                        external,
                        rows.train.len(),
                        absent,
                    )
                    .with_unusable(unusable),
                )));
            }
            let trainer = crate::model_trainers::load(m, model_dir, &s.data, &holdout, external)
                .with_context(context)?;
            tracing::info!(train = trainer.train_rows(), "model and data loaded");
            Ok(LocalData::Described(Arc::from(trainer)))
        }
    }
}

/// Runs the silo until interrupted (or, with `once`, until the coordinator goes away).
pub async fn run(s: SiloSettings) -> anyhow::Result<()> {
    if let Some(m) = s.metrics_listen {
        fedsilo::metrics::check_listen(m).context("--metrics-listen")?;
    }
    let creds = NodeCredentials::load_kit(&s.kit).context("loading the silo's certificate kit")?;
    let me = creds.identity().clone();
    if me.role != Role::Silo {
        bail!(
            "{}: this certificate is for a {} node; silo-node needs a certificate of role silo",
            s.kit.display(),
            me.role
        );
    }
    let board = Arc::new(crate::status::StatusBoard::new(
        &me.name,
        s.status_file.clone(),
    ));
    let data = match local_data(&s, &me.name) {
        Ok(d) => d,
        Err(e) => {
            board.report(crate::status::Change::Stopped(format!("{e:#}")));
            return Err(e);
        }
    };
    let deploy = s.deploy_dir.as_ref().map(|d| {
        fedsilo::deploy::DeployStore::new(
            d,
            fedsilo::identity::signature::CaCheck::new(creds.roots()),
            &s.coordinator_name,
        )
    });
    let signing = creds.clone();
    let signing_for_bulk = creds.clone();
    let node = ClusterNode::start(ClusterConfig {
        credentials: creds,
        listen: None,
        limits: fedsilo::cluster::LinkLimits::default(),
        crl: None,
        bulk: None,
    })
    .await?;
    let metrics = std::sync::Arc::new(fedsilo::metrics::SiloMetrics::new());
    if let Some(m) = s.metrics_listen {
        let what = fedsilo::metrics::Exposition::Silo(metrics.clone(), node.directory().clone());
        let bound = fedsilo::metrics::serve(m, what)
            .await
            .with_context(|| format!("--metrics-listen {m}: cannot serve metrics there"))?;
        eprintln!("silo {}: metrics at http://{bound}/metrics", me.name);
    }
    let (trainer, _) = Actor::spawn(
        Some(format!("fedsilo.trainer.{}", me.name)),
        TrainerActor,
        TrainerArgs {
            name: me.name.clone(),
            region: me.region.clone(),
            data,
            faults: s.faults,
            dp_sgd: s.dp_sgd,
            credentials: Some(signing),
            metrics: metrics.clone(),
            deploy,
            board: board.clone(),
            external: s.external.map(|mut t| {
                t.owner = me.name.clone();
                let swept = t.sweep();
                if swept > 0 {
                    eprintln!(
                        "silo {}: removed {swept} trainer work director{} an earlier node left behind",
                        me.name,
                        if swept == 1 { "y" } else { "ies" }
                    );
                }
                t
            }),
        },
    )
    .await
    .context("starting the trainer actor")?;
    ractor::pg::join(TRAINER_GROUP.to_string(), vec![trainer.get_cell()]);
    board.report(crate::status::Change::Connecting(s.coordinator.clone()));
    let watch = tokio::spawn(watch_link(
        node.directory().subscribe(),
        board.clone(),
        s.coordinator.clone(),
    ));

    let bulk = tokio::spawn(crate::bulk_link::keep(
        signing_for_bulk,
        node.directory().subscribe(),
        s.coordinator.clone(),
        s.coordinator_name.clone(),
        trainer.clone(),
        s.max_backoff,
    ));
    let coordinator = keep_linked(
        &node,
        &s.coordinator,
        &s.coordinator_name,
        Role::Coordinator,
        s.once,
        s.max_backoff,
    );
    let aggregator = async {
        match &s.aggregator {
            Some((addr, name)) => {
                keep_linked(&node, addr, name, Role::Aggregator, false, s.max_backoff).await
            }
            None => std::future::pending().await,
        }
    };
    let ended: anyhow::Result<&str> = tokio::select! {
        r = coordinator => match r {
            Ok(_) => {
                println!("silo {}: coordinator gone, exiting (--once)", me.name);
                Ok("the coordinator went away (--once)")
            }
            Err(e) => Err(e.into()),
        },
        r = aggregator => r.map(|_| "the aggregator link ended").map_err(Into::into),
        _ = shutdown_signal() => Ok("interrupted"),
    };
    watch.abort();
    bulk.abort();
    board.report(crate::status::Change::Stopped(match &ended {
        Ok(why) => why.to_string(),
        Err(e) => format!("{e:#}"),
    }));
    trainer.stop(None);
    ended.map(|_| ())
}

/// Follows the link to the coordinator in the node's directory: up, or down and reconnecting.
async fn watch_link(
    mut events: tokio::sync::broadcast::Receiver<fedsilo::cluster::PeerEvent>,
    board: Arc<crate::status::StatusBoard>,
    coordinator: String,
) {
    use fedsilo::cluster::PeerEvent;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(PeerEvent::Bound { identity, .. }) if identity.role == Role::Coordinator => {
                board.report(crate::status::Change::Linked)
            }
            Ok(PeerEvent::Disconnected {
                identity: Some(i), ..
            }) if i.role == Role::Coordinator => {
                board.report(crate::status::Change::Unlinked(coordinator.clone()))
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
