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
        /// This run's local epochs per round (default: the federation file's `plan.epochs`).
        #[arg(long)]
        epochs: Option<u32>,
        /// This run's mini-batch size (default: `plan.batch_size`).
        #[arg(long)]
        batch_size: Option<u32>,
        /// This run's learning rate (default: `plan.learning_rate`).
        #[arg(long, allow_negative_numbers = true)]
        learning_rate: Option<f32>,
        /// This run's FedProx μ (default: `plan.prox_mu`).
        #[arg(long, allow_negative_numbers = true)]
        prox_mu: Option<f32>,
        /// An idempotency key (e.g. a change ticket): submitting again with it after a timeout
        /// finds the run the first submission made instead of queueing a second one.
        #[arg(long)]
        key: Option<String>,
        /// Every candidate of this run waits for an operator's approval (whatever the policy
        /// says; a run can tighten the policy, never loosen it).
        #[arg(long)]
        require_approval: bool,
        /// This run's largest allowed drop of the weighted held-out AUC (the stricter of this
        /// and the policy's `validation.max_auc_drop` applies).
        #[arg(long)]
        max_auc_drop: Option<f64>,
        /// This run's largest allowed drop of any one silo's held-out AUC (the stricter of this
        /// and the policy's applies).
        #[arg(long)]
        max_silo_auc_drop: Option<f64>,
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
        RunCommand::Submit {
            rounds,
            epochs,
            batch_size,
            learning_rate,
            prox_mu,
            key,
            require_approval,
            max_auc_drop,
            max_silo_auc_drop,
        } => {
            let mut body = json!({ "rounds": rounds });
            if require_approval {
                body["require_approval"] = json!(true);
            }
            for (key, value) in [
                ("epochs", epochs.map(|v| json!(v))),
                ("batch_size", batch_size.map(|v| json!(v))),
                ("learning_rate", learning_rate.map(|v| json!(v))),
                ("prox_mu", prox_mu.map(|v| json!(v))),
                ("key", key.map(|v| json!(v))),
                ("max_auc_drop", max_auc_drop.map(|v| json!(v))),
                ("max_silo_auc_drop", max_silo_auc_drop.map(|v| json!(v))),
            ] {
                if let Some(v) = value {
                    body[key] = v;
                }
            }
            ("POST", "/v1/runs".to_string(), Some(body))
        }
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
