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
    /// On a node's own machine: make its private key and a certificate signing request.
    ///
    /// Writes OUT/key.pem (0600; it never leaves this machine) and OUT/request.csr, which goes
    /// to the consortium CA (`fedsilo certs sign`). The signed cert.pem and ca.pem come back
    /// into OUT, which is then the node's kit.
    ///
    ///   fedsilo certs request --name bank-c --role silo --region eu --out certs/bank-c
    #[command(verbatim_doc_comment)]
    Request {
        /// The node's kit directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        who: Who,
    },
    /// At the consortium CA: sign a node's certificate signing request.
    ///
    /// The CA decides who the node is: the request must ask for exactly the name, role and
    /// region given here, or it is refused (check who sent it). Writes OUT/cert.pem and
    /// OUT/ca.pem, to send back to the node.
    ///
    ///   fedsilo certs sign --ca-dir certs --csr bank-c.csr --name bank-c --role silo \
    ///                      --region eu --out signed/bank-c
    #[command(verbatim_doc_comment)]
    Sign {
        /// Directory holding the CA's ca.pem and ca.key.
        #[arg(long)]
        ca_dir: PathBuf,
        /// The request (request.csr from `fedsilo certs request`).
        #[arg(long)]
        csr: PathBuf,
        #[command(flatten)]
        who: Who,
        /// Validity, days (1 to 36500).
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Where to write cert.pem and ca.pem.
        #[arg(long)]
        out: PathBuf,
    },
    /// At the consortium CA: revoke a certificate.
    ///
    /// Adds it to CA_DIR/revoked.json and writes CA_DIR/crl.pem, the CA-signed revocation
    /// list. Give that file to the coordinator (`network.crl`) and the aggregators (`--crl`):
    /// they refuse the certificate at the handshake and close its open sessions within a
    /// second of the file changing.
    ///
    ///   fedsilo certs revoke --ca-dir certs --cert certs/bank-b/cert.pem --reason "left"
    #[command(verbatim_doc_comment)]
    Revoke {
        /// Directory holding the CA's ca.pem and ca.key.
        #[arg(long)]
        ca_dir: PathBuf,
        /// The certificate to revoke.
        #[arg(long, required_unless_present = "serial", conflicts_with = "serial")]
        cert: Option<PathBuf>,
        /// Or its serial number, hex (colons allowed).
        #[arg(long)]
        serial: Option<String>,
        /// Why (recorded in revoked.json).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// The identity a request asks for and the CA signs.
#[derive(Debug, Args)]
struct Who {
    /// The node's name.
    #[arg(long)]
    name: String,
    /// Its role: silo, aggregator, operator or coordinator.
    #[arg(long)]
    role: Role,
    /// Its region.
    #[arg(long, default_value = fedsilo::identity::DEFAULT_REGION)]
    region: String,
}

impl Who {
    fn identity(&self) -> anyhow::Result<fedsilo::identity::Identity> {
        fedsilo::identity::validate_name("node", &self.name)?;
        fedsilo::identity::validate_name("region", &self.region)?;
        Ok(fedsilo::identity::Identity {
            name: self.name.clone(),
            role: self.role,
            region: self.region.clone(),
        })
    }
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
        CertsCommand::Request { out, who } => {
            let id = who.identity()?;
            let csr = certs::write_request(&out, &id)?;
            println!(
                "key written to {} (it stays here); send {} to the consortium CA for `fedsilo certs sign`",
                out.join("key.pem").display(),
                csr.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        CertsCommand::Sign {
            ca_dir,
            csr,
            who,
            days,
            out,
        } => {
            if !(1..=36500).contains(&days) {
                anyhow::bail!("--days {days}: from 1 to 36500");
            }
            let id = who.identity()?;
            let cert = certs::sign(&ca_dir, &csr, &id, days, &out)?;
            println!(
                "signed {id}: {} and ca.pem beside it; send both back to the node's kit directory",
                cert.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        CertsCommand::Revoke {
            ca_dir,
            cert,
            serial,
            reason,
        } => {
            let (crl, entry) = certs::revoke(&ca_dir, cert.as_deref(), serial.as_deref(), &reason)?;
            println!(
                "revoked serial {}{}; {} lists every revoked certificate: give it to the coordinator (network.crl) and the aggregators (--crl)",
                entry.serial,
                if entry.name.is_empty() { String::new() } else { format!(" ({})", entry.name) },
                crl.display()
            );
            return Ok(ExitCode::SUCCESS);
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
