//! Custom topology: a platform team runs the coordinator node from its own program and extends
//! it at the library's two extension points.
//!
//! - A **custom kernel**: the weighted geometric median ([`geometric_median`]), registered by
//!   name before the federation file is read; `kernel = "geometric-median"` selects it.
//! - A **custom actor**: a drift monitor ([`drift_monitor`]) composed into the node. It follows
//!   the round events and pauses the federation when a silo's updates drift; here a person
//!   (played by this program) looks at the status and resumes.
//!
//! The four churn regions train; from round 3 the west region's trainer breaks and sends noise.
//! The run checks that the monitor paused the federation at that round naming west, that the
//! run was resumed and finished, and that the geometric median kept the model good throughout.
//!
//!   examples/custom_topology/run.sh             # builds, then runs 8 rounds
//!   ROUNDS=5 examples/custom_topology/run.sh

mod drift_monitor;
mod geometric_median;

use std::process::{Child, Command, Stdio};

use anyhow::{ensure, Context};
use drift_monitor::{DriftArgs, DriftMessage, DriftMonitor};
use fedsilo::certs::NodeSpec;
use fedsilo::events::EventFormat;
use fedsilo::federation::FederationConfig;
use fedsilo::identity::Role;
use fedsilo::launch::{Extension, RunningFederation};
use fedsilo::status::RunState;
use geometric_median::GeometricMedian;
use serde_json::Value;
use testkit::sandbox::ExampleRun;

const REGIONS: [&str; 4] = ["northeast", "midwest", "south", "west"];
/// From this round on, west's trainer sends N(0, 1) noise instead of its update.
const BROKEN_FROM: u64 = 3;

/// Silo processes, killed when dropped.
struct Silos(Vec<Child>);

impl Drop for Silos {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The team's additions to the node: the drift monitor, fed from the event stream, and the
/// person who resumes the federation after looking at what paused it.
fn platform(fed: RunningFederation) {
    let RunningFederation {
        control, events, ..
    } = fed;
    let mut stream = events.subscribe();
    let monitor_control = control.clone();
    tokio::spawn(async move {
        let args = DriftArgs {
            control: monitor_control,
            factor: 10.0,
            warmup: 2,
        };
        let monitor =
            match ractor::Actor::spawn(Some("drift-monitor".into()), DriftMonitor, args).await {
                Ok((m, _)) => m,
                Err(e) => return eprintln!("cannot start the drift monitor: {e}"),
            };
        // Visible to the whole cluster, like the runtime's own actors.
        ractor::pg::join("platform.drift-monitor".into(), vec![monitor.get_cell()]);
        loop {
            match stream.recv().await {
                Ok(e) => {
                    let _ = monitor.cast(DriftMessage::Event(Box::new(e)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    let mut status = control.watch();
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            let now = status.borrow_and_update().clone();
            if now.state != RunState::Paused {
                continue;
            }
            let why = now.paused.map(|p| p.reason).unwrap_or_default();
            println!("operator: the federation is paused ({why}); silos now:");
            for s in &now.silos {
                println!(
                    "  {:<10} healthy {:<5} last heartbeat {:.1} s ago",
                    s.name, s.healthy, s.last_heartbeat_secs
                );
            }
            println!("operator: west's feed is known to be broken and the geometric median holds; resuming");
            if let Err(e) = control.resume("operator").await {
                println!("operator: could not resume: {e}");
            }
        }
    });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    fedsilo::tls::install_crypto_provider();
    fedsilo::kernels::custom::register(
        "geometric-median",
        GeometricMedian {
            iterations: 100,
            tolerance: 1e-7,
        },
    )
    .map_err(anyhow::Error::msg)?;

    let ExampleRun {
        here,
        rounds,
        work,
        bins,
    } = ExampleRun::prepare("custom_topology", 8)?;
    let churn = here.join("../churn");

    let mut nodes =
        vec![NodeSpec::parse(Role::Coordinator, "coordinator").map_err(anyhow::Error::msg)?];
    for r in REGIONS {
        nodes.push(NodeSpec::parse(Role::Silo, r).map_err(anyhow::Error::msg)?);
    }
    fedsilo::certs::init(&work.join("certs"), "custom-topology", &nodes, 30, false)?;

    let origin = here.join("federation.toml");
    let mut cfg = FederationConfig::load(&origin)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    cfg.federation.rounds = rounds;
    cfg.federation.state_dir = work.join("state");
    cfg.network.kit = work.join("certs/coordinator");
    cfg.network.listen = format!("127.0.0.1:{port}").parse()?;

    let mut silos = Silos(vec![]);
    for r in REGIONS {
        let mut cmd = Command::new(&bins.silo_node);
        cmd.arg("--kit")
            .arg(work.join("certs").join(r))
            .args(["--coordinator", &format!("127.0.0.1:{port}"), "--data"])
            .arg(churn.join(format!("data/{r}.csv")))
            .arg("--schema")
            .arg(churn.join("schema.toml"))
            .args(["--max-backoff-secs", "0.3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if r == "west" {
            cmd.args([
                "--attack",
                "gaussian",
                "--attack-from-round",
                &BROKEN_FROM.to_string(),
            ]);
        }
        silos.0.push(cmd.spawn().context("starting silo-node")?);
    }
    println!("custom topology: 4 regions, {rounds} rounds, kernel geometric-median (registered by this program), drift monitor in the node; west breaks from round {BROKEN_FROM}\n");
    let extensions: Vec<Extension> = vec![Box::new(platform)];
    let result = fedsilo::launch::run(
        cfg,
        &origin.display().to_string(),
        EventFormat::Table,
        extensions,
    )
    .await?
    .context("interrupted")?;
    drop(silos);

    ensure!(
        result.error.is_none(),
        "the federation stopped: {:?}",
        result.error
    );
    ensure!(
        result.rounds_committed == rounds,
        "{} of {rounds} rounds committed",
        result.rounds_committed
    );
    let events: Vec<Value> = std::fs::read_to_string(work.join("state/events.jsonl"))?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let paused: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "federation_paused")
        .collect();
    ensure!(paused.len() == 1, "paused {} times", paused.len());
    let reason = paused[0]["reason"].as_str().unwrap_or_default();
    ensure!(
        paused[0]["by"] == "drift-monitor"
            && reason.starts_with(&format!("drift at west: its round-{BROKEN_FROM} update")),
        "paused by {} for {reason}",
        paused[0]["by"]
    );
    ensure!(
        events
            .iter()
            .any(|e| e["event"] == "federation_resumed" && e["by"] == "operator"),
        "never resumed"
    );
    let committed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "round_committed")
        .collect();
    ensure!(
        committed.iter().all(|r| r["aggregation"]
            .as_str()
            .is_some_and(|a| a.starts_with("geometric-median"))),
        "a version not made by the custom kernel"
    );
    let before = committed
        .iter()
        .find(|r| r["round"] == BROKEN_FROM - 1)
        .map(|r| fedsilo::report::weighted_score(&r["eval"]).unwrap_or(f64::NAN))
        .context("no round before the break")?;
    let worst = committed
        .iter()
        .filter(|r| r["round"].as_u64().is_some_and(|n| n >= BROKEN_FROM))
        .map(|r| fedsilo::report::weighted_score(&r["eval"]).unwrap_or(f64::NAN))
        .fold(f64::INFINITY, f64::min);
    println!(
        "\nheld-out AUC before west broke: {before:.3}; lowest after, with its noise in every round: {worst:.3}"
    );
    ensure!(
        worst >= before - 0.02,
        "the geometric median let the noise through"
    );
    println!(
        "custom topology: every check passed (state and run report in {})",
        work.join("state").display()
    );
    Ok(())
}
