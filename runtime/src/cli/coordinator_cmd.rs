//! `fedsilo coordinator`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fedsilo::events::EventFormat;
use fedsilo::federation::FederationConfig;

/// Run the coordinator of a federation.
///
/// Reads the federation file (docs/configuration.md lists every key), listens for silos over mutual
/// TLS, agrees feature scaling with them, runs the configured number of rounds and exits —
/// or, with `--serve` (`federation.serve`), keeps serving and takes training runs as jobs
/// (`fedsilo run submit`) until it is stopped.
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
    /// Keep serving between runs (`federation.serve = true`): the admin API, metrics and
    /// webhooks stay up and runs are submitted with `fedsilo run submit`; stop with Ctrl-C or
    /// SIGTERM.
    #[arg(long)]
    serve: bool,
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
    /// Override `federation.pooled_reference` (and turn on `compare_local`): a model trained
    /// on the union of the silos' training rows (`fedsilo-pretrain --pooled`), scored by every
    /// silo at the end beside local-only and federated, as the non-private reference.
    #[arg(long)]
    pooled_reference: Option<PathBuf>,
    /// Fault injection for tests: route this silo's update to an aggregator the policy does not
    /// allow (the aggregator must refuse it). Only in builds with `fault-injection`.
    #[cfg(feature = "fault-injection")]
    #[arg(long, hide = true)]
    fault_misroute: Option<String>,
    /// How to show events on stdout.
    #[arg(long, value_enum, default_value_t = EventFormat::Table)]
    events: EventFormat,
}

/// Runs the coordinator until the federation finishes.
pub async fn run(a: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = FederationConfig::load_unchecked(&a.config)?;
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
    if a.serve {
        cfg.federation.serve = true;
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
    if let Some(r) = a.pooled_reference {
        cfg.federation.pooled_reference = Some(r);
        cfg.federation.compare_local = true;
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
    #[cfg(feature = "fault-injection")]
    let result =
        fedsilo::launch::run_misrouting(cfg, &origin, a.events, a.fault_misroute, vec![]).await?;
    #[cfg(not(feature = "fault-injection"))]
    let result = fedsilo::launch::run(cfg, &origin, a.events, vec![]).await?;
    Ok(match result {
        Some(r) if r.error.is_none() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}
