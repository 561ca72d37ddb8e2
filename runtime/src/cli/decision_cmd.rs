//! `fedsilo models approve|reject|rollback`: an operator's signed decision, dropped into the
//! coordinator's inbox.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fedsilo::decision::submit;
pub use fedsilo::decision::Kind;
use fedsilo::registry::RegistryReader;
use fedsilo::store::ModelStore;
use fedsilo::tls::NodeCredentials;

/// A decision on one version.
#[derive(Debug, Args)]
pub struct DecisionArgs {
    /// The version.
    version: u64,
    /// The coordinator's state directory (its `decisions/` inbox).
    #[arg(long)]
    state_dir: PathBuf,
    /// The operator's certificate kit (`fedsilo certs issue --operator NAME`): the decision is
    /// signed with its key, and recorded under its name.
    #[arg(long)]
    kit: PathBuf,
    /// Why (recorded in the audit journal).
    #[arg(long, default_value = "")]
    reason: String,
}

/// Signs and submits the decision.
pub fn run(a: DecisionArgs, kind: Kind) -> anyhow::Result<ExitCode> {
    fedsilo::tls::install_crypto_provider();
    let creds = NodeCredentials::load_kit(&a.kit)?;
    // What the operator is looking at: the decision applies only if it is still so.
    let expect = match kind {
        Kind::Approve | Kind::Reject => (
            RegistryReader::open(&a.state_dir)
                .ok()
                .and_then(|r| r.get(a.version).ok().flatten())
                .map(|m| m.file_sha256),
            None,
        ),
        Kind::Rollback => (
            None,
            ModelStore::at(&a.state_dir)
                .current_version()
                .ok()
                .flatten(),
        ),
    };
    let path = submit(&a.state_dir, &creds, kind, a.version, &a.reason, expect)?;
    println!(
        "{} of version {} by {} submitted ({}); the coordinator applies it at its next step and records it in the audit journal",
        kind.as_str(),
        a.version,
        creds.identity().name,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
