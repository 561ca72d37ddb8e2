//! `fedsilo deploy …`: deployment of committed versions to the silos, through a coordinator's
//! admin API.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::admin_cmd::ApiConnection;

/// `fedsilo deploy` (documented on its command).
#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(subcommand)]
    command: DeployCommand,
    #[command(flatten)]
    api: ApiConnection,
}

#[derive(Debug, Subcommand)]
enum DeployCommand {
    /// Order a committed version deployed (scope operate): to every silo, or with --region or
    /// --silo to fewer. Each silo gets it at its next heartbeat between rounds.
    Create {
        /// The committed version (`fedsilo models list` shows them).
        #[arg(long)]
        version: u64,
        /// Only the silos of this region.
        #[arg(long, conflicts_with = "silo")]
        region: Option<String>,
        /// Only this silo (repeat for several).
        #[arg(long)]
        silo: Vec<String>,
        /// Why (recorded in the audit journal).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The deployment orders, and the version each connected silo holds (scope read).
    List,
}

/// Runs a `fedsilo deploy` command.
pub async fn run(a: DeployArgs) -> anyhow::Result<ExitCode> {
    let (method, body) = match a.command {
        DeployCommand::Create {
            version,
            region,
            silo,
            reason,
        } => {
            let mut body = json!({ "version": version, "reason": reason });
            if let Some(r) = region {
                body["region"] = json!(r);
            }
            if !silo.is_empty() {
                body["silos"] = json!(silo);
            }
            ("POST", Some(body))
        }
        DeployCommand::List => ("GET", None),
    };
    a.api.call(method, "/v1/deployments", body).await
}
