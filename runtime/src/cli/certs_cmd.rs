//! `fedsilo certs …`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use fedsilo::certs::{self, NodeSpec};
use fedsilo::identity::Role;

/// Certificate commands.
#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Make a consortium CA and a startup kit (key + certificate) for every node.
    ///
    /// Writes OUT/ca.pem, OUT/ca.key (0600) and OUT/<node>/{ca.pem,cert.pem,key.pem}. Each
    /// certificate carries the node's name, role and region. An existing CA is never
    /// overwritten unless --force is given.
    Init {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Consortium name, written into the CA certificate.
        #[arg(long, default_value = "fedsilo")]
        consortium: String,
        /// The coordinator, as NAME[:REGION].
        #[arg(long)]
        coordinator: String,
        #[command(flatten)]
        nodes: NodeArgs,
        /// Replace an existing CA (every certificate it issued stops working).
        #[arg(long)]
        force: bool,
        /// Do nothing, successfully, when OUT already holds a CA (a deployment's init step
        /// that runs on every start).
        #[arg(long, conflicts_with = "force")]
        if_missing: bool,
    },
    /// Issue kits for more nodes under the existing CA in OUT.
    Issue {
        /// Directory holding ca.pem and ca.key.
        #[arg(long)]
        out: PathBuf,
        /// A coordinator, as NAME[:REGION].
        #[arg(long = "coordinator")]
        coordinators: Vec<String>,
        #[command(flatten)]
        nodes: NodeArgs,
        /// Replace existing kits of the same names.
        #[arg(long)]
        force: bool,
    },
}

/// The silos and aggregators to make kits for, and their validity.
#[derive(Debug, Args)]
struct NodeArgs {
    /// A silo, as NAME[:REGION]; repeat for each silo.
    #[arg(long = "silo")]
    silos: Vec<String>,
    /// An aggregator, as NAME[:REGION]; repeat for each.
    #[arg(long = "aggregator")]
    aggregators: Vec<String>,
    /// An operator (who approves, rejects and rolls back versions), as NAME; repeat for each.
    #[arg(long = "operator")]
    operators: Vec<String>,
    /// Validity of every certificate, days (1 to 36500).
    #[arg(long, default_value_t = 365)]
    days: i64,
}

impl NodeArgs {
    /// `coordinators` followed by the silos and aggregators, parsed; checks `days`.
    fn specs(&self, coordinators: &[String]) -> anyhow::Result<Vec<NodeSpec>> {
        if !(1..=36500).contains(&self.days) {
            anyhow::bail!("--days {}: must be between 1 and 36500", self.days);
        }
        let mut nodes = specs(Role::Coordinator, coordinators)?;
        nodes.extend(specs(Role::Silo, &self.silos)?);
        nodes.extend(specs(Role::Aggregator, &self.aggregators)?);
        nodes.extend(specs(Role::Operator, &self.operators)?);
        Ok(nodes)
    }
}

fn specs(role: Role, items: &[String]) -> anyhow::Result<Vec<NodeSpec>> {
    items
        .iter()
        .map(|s| NodeSpec::parse(role, s).map_err(|e| anyhow::anyhow!("--{role} {s}: {e}")))
        .collect()
}

/// Runs a certs command.
pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let written = match args.command {
        CertsCommand::Init {
            out,
            consortium,
            coordinator,
            nodes,
            force,
            if_missing,
        } => {
            let specs = nodes.specs(&[coordinator])?;
            if if_missing && out.join("ca.pem").exists() {
                println!(
                    "{} holds a consortium CA already; nothing made (--if-missing)",
                    out.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let w = certs::init(&out, &consortium, &specs, nodes.days, force)?;
            println!(
                "consortium CA written to {} (keep ca.key offline in production)",
                out.join("ca.pem").display()
            );
            w.into_iter().zip(specs).collect::<Vec<_>>()
        }
        CertsCommand::Issue {
            out,
            coordinators,
            nodes,
            force,
        } => {
            let specs = nodes.specs(&coordinators)?;
            if specs.is_empty() {
                anyhow::bail!(
                    "nothing to issue: name at least one --silo, --aggregator, --operator or --coordinator"
                );
            }
            let w = certs::issue(&out, &specs, nodes.days, force)?;
            w.into_iter().zip(specs).collect()
        }
    };
    for (dir, spec) in written {
        println!(
            "  {:<20} {:<12} region {:<12} -> {}",
            spec.identity.name,
            spec.identity.role.as_str(),
            spec.identity.region,
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
