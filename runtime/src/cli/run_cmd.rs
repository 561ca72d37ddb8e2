//! `fedsilo run …`: training runs on a serving coordinator, through its admin API.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::admin_cmd::ApiConnection;

/// `fedsilo run` (documented on its command).
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(subcommand)]
    command: RunCommand,
    #[command(flatten)]
    api: ApiConnection,
}

#[derive(Debug, Subcommand)]
enum RunCommand {
    /// Queue a run (scope operate); runs start one at a time, oldest first.
    Submit {
        /// Rounds to run (1 to 100,000).
        #[arg(long)]
        rounds: u64,
    },
    /// Every run: queued, running, finished, failed, cancelled (scope read).
    List,
    /// One run (scope read).
    Show {
        /// The run's id.
        id: u64,
    },
    /// Cancel a queued run, or end the running one at the next round boundary (scope operate).
    Cancel {
        /// The run's id.
        id: u64,
        /// Why (recorded in the audit journal).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Runs a `fedsilo run` command.
pub async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let (method, path, body) = match a.command {
        RunCommand::Submit { rounds } => (
            "POST",
            "/v1/runs".to_string(),
            Some(json!({ "rounds": rounds })),
        ),
        RunCommand::List => ("GET", "/v1/runs".to_string(), None),
        RunCommand::Show { id } => ("GET", format!("/v1/runs/{id}"), None),
        RunCommand::Cancel { id, reason } => (
            "POST",
            format!("/v1/runs/{id}/cancel"),
            Some(json!({ "reason": reason })),
        ),
    };
    a.api.call(method, &path, body).await
}
