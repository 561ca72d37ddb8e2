//! `fedsilo aggregator`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use fedsilo::actors::regional::{RegionalAggregatorActor, RegionalArgs};
use fedsilo::cluster::link::keep_linked;
use fedsilo::cluster::{ClusterConfig, ClusterNode, LinkLimits, AGGREGATOR_GROUP};
use fedsilo::identity::Role;
use fedsilo::protocol::transfer::DEFAULT_CHUNK_VALUES;
use fedsilo::tls::NodeCredentials;
use ractor::Actor;

/// Run a regional aggregator (residency).
///
/// Silos of the regions the policy allows link to it (`silo-node --aggregator`); the
/// coordinator routes their updates here, and this node fetches each one over its own session
/// with the silo, re-checks residency against the silo's certificate region, applies the
/// admission rules and the kernel, and hands only the regional aggregate on. Every update it is
/// asked to take is recorded in <state-dir>/receive.jsonl.
///
/// Example:
///   fedsilo aggregator --kit certs/agg-eu --coordinator coord.example.net:7443 \
///                      --listen 0.0.0.0:7444 --state-dir agg-state
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct AggregatorArgs {
    /// Certificate kit (role aggregator; its region is the one residency is checked against).
    #[arg(long)]
    kit: PathBuf,
    /// The coordinator's address, host:port.
    #[arg(long)]
    coordinator: String,
    /// The coordinator's node name.
    #[arg(long, default_value = "coordinator")]
    coordinator_name: String,
    /// Where silos link to this aggregator (port 0: pick one; printed at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory for the receive log.
    #[arg(long)]
    state_dir: PathBuf,
    /// Exit when the coordinator goes away instead of reconnecting.
    #[arg(long)]
    once: bool,
    /// The consortium CA's certificate revocation list (crl.pem from `fedsilo certs
    /// revoke`): silos it names are refused, and dropped within a second of the file changing.
    #[arg(long)]
    crl: Option<PathBuf>,
}

/// Runs the aggregator.
pub async fn run(a: AggregatorArgs) -> anyhow::Result<ExitCode> {
    let creds =
        NodeCredentials::load_kit(&a.kit).context("loading the aggregator's certificate kit")?;
    let identity = creds.identity().clone();
    if identity.role != Role::Aggregator {
        bail!(
            "{}: certificate of role {}, `fedsilo aggregator` needs role aggregator",
            a.kit.display(),
            identity.role
        );
    }
    std::fs::create_dir_all(&a.state_dir)
        .with_context(|| format!("creating {}", a.state_dir.display()))?;
    let node = ClusterNode::start(ClusterConfig {
        credentials: creds,
        listen: Some(a.listen),
        limits: LinkLimits::default(),
        crl: a.crl.clone(),
        bulk: None,
    })
    .await?;
    let addr = node.local_addr().map(|x| x.to_string()).unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({"event": "listening", "addr": addr, "node": identity.name, "region": identity.region})
    );
    let args = RegionalArgs {
        identity: identity.clone(),
        directory: node.directory().clone(),
        receive_log: a.state_dir.join("receive.jsonl"),
        chunk: DEFAULT_CHUNK_VALUES,
    };
    let (actor, _) = Actor::spawn(None, RegionalAggregatorActor, args)
        .await
        .context("starting the regional aggregator")?;
    ractor::pg::join(AGGREGATOR_GROUP.to_string(), vec![actor.get_cell()]);
    tokio::select! {
        r = keep_linked(&node, &a.coordinator, &a.coordinator_name, Role::Coordinator, a.once, Duration::from_secs(10)) => { r?; }
        _ = tokio::signal::ctrl_c() => {}
    }
    actor.stop(None);
    Ok(ExitCode::SUCCESS)
}
