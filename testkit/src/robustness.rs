//! The robustness experiment (`examples/robustness`): the churn data split across ten silos by
//! state, two of them Byzantine, and the held-out AUC the honest silos see after N rounds, per
//! attack and aggregation kernel.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::sandbox::{Binaries, FederationFile, Sandbox, SiloSpec};
use silo_node::attack::Attack;

/// Silos in the experiment.
pub const SILOS: usize = 10;
/// The Byzantine ones (the last two).
pub const BYZANTINE: [&str; 2] = ["silo-8", "silo-9"];

/// The kernels compared, as `[aggregation]` TOML bodies, with a label.
pub const KERNELS: [(&str, &str); 4] = [
    ("FedAvg", "kernel = \"mean\"\nserver_optimizer = \"none\""),
    ("trimmed mean 0.2", "kernel = \"trimmed-mean\"\ntrim = 0.2"),
    ("median", "kernel = \"median\""),
    (
        "Multi-Krum f=2 m=8",
        "kernel = \"multi-krum\"\nbyzantine = 2\nkeep = 8",
    ),
];

/// Where the experiment's files are.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `examples/robustness/data` (silo-0.csv … silo-9.csv).
    pub data: PathBuf,
    /// The churn schema.
    pub schema: PathBuf,
}

impl Inputs {
    /// The files in a checkout whose root is `root`.
    pub fn in_checkout(root: &Path) -> Self {
        Inputs {
            data: root.join("examples/robustness/data"),
            schema: root.join("examples/churn/schema.toml"),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Example-weighted mean of the honest silos' held-out ROC AUC after the last round.
    pub honest_auc: f64,
    /// Rounds committed.
    pub rounds: usize,
}

/// Runs one federation in `work` with the Byzantine silos mounting `attack` (none: clean),
/// combining with `aggregation` (an `[aggregation]` body), for `rounds` rounds.
pub fn run(
    bins: &Binaries,
    inputs: &Inputs,
    work: &Path,
    attack: Option<Attack>,
    aggregation: &str,
    rounds: u64,
) -> anyhow::Result<Outcome> {
    let federation = FederationFile {
        rounds,
        heartbeat_interval_secs: 0.5,
        hidden: vec![32],
        seed: 7,
        epochs: 2,
        learning_rate: 0.05,
        extra: format!("[aggregation]\n{aggregation}"),
        ..FederationFile::new(&inputs.schema)
    }
    .render();
    // The experiment measures what each kernel withstands on its own: the default cohort norm
    // bound, which would refuse these updates before any kernel sees them, is turned off.
    let policy = "[participation]\nmin_silos = 10\nquorum = 8\n[rounds]\ndeadline_secs = 60\ngrace_secs = 1\n[admission]\nmax_norm_ratio = 0\n";
    let silos = (0..SILOS)
        .map(|i| {
            let name = format!("silo-{i}");
            let args = match attack {
                Some(a) if BYZANTINE.contains(&name.as_str()) => {
                    vec![
                        "--attack".to_string(),
                        clap::ValueEnum::to_possible_value(&a)
                            .map(|v| v.get_name().to_string())
                            .unwrap_or_default(),
                    ]
                }
                _ => vec![],
            };
            SiloSpec {
                data: inputs.data.join(format!("{name}.csv")),
                name,
                args,
                ..Default::default()
            }
        })
        .collect();
    let mut sb = Sandbox::start(
        bins,
        work,
        &federation,
        policy,
        &inputs.schema,
        silos,
        &["--once"],
    )?;
    let fin = sb.expect("finished", |e| e["event"] == "finished")?;
    if !fin["error"].is_null() {
        anyhow::bail!("federation stopped: {}", fin["error"]);
    }
    let committed = sb.committed();
    let last = committed.last().context("no round committed")?;
    let (mut num, mut den) = (0.0, 0.0);
    for (silo, m) in last["eval"].as_object().context("no eval")? {
        if BYZANTINE.contains(&silo.as_str()) {
            continue;
        }
        let (auc, n) = (
            m["auc"].as_f64().context("no auc")?,
            m["examples"].as_f64().context("no examples")?,
        );
        num += auc * n;
        den += n;
    }
    Ok(Outcome {
        honest_auc: num / den,
        rounds: committed.len(),
    })
}
