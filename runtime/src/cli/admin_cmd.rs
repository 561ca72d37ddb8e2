//! `fedsilo admin …`: the admin API from the command line, and its bearer tokens.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use fedsilo::admin::{tokens, AdminClient, Scope};
use fedsilo::tls::NodeCredentials;
use serde_json::json;

/// `fedsilo admin` (documented on its command).
#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    #[command(flatten)]
    api: ApiConnection,
}

/// How to reach the admin API (shared by `fedsilo admin` and `fedsilo run`).
#[derive(Debug, Args)]
pub struct ApiConnection {
    /// The admin API's base URL (`admin.listen` of the coordinator).
    #[arg(long, global = true, default_value = "https://127.0.0.1:8443")]
    url: String,
    /// An operator's certificate kit (`fedsilo certs issue --operator NAME`).
    #[arg(long, global = true)]
    kit: Option<PathBuf>,
    /// The consortium CA (PEM) to verify the coordinator against, when no kit is given.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// A bearer token (prefer the environment variable: a command line is visible to others).
    #[arg(long, global = true, env = "FEDSILO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The name in the coordinator's certificate (its node name).
    #[arg(long, global = true, default_value = "coordinator")]
    server_name: String,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// The federation now: state, round, version, candidate awaiting approval, silos.
    Status,
    /// Silos and their health.
    Silos,
    /// The latest round outcomes.
    Rounds {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Every version and its metadata.
    Versions,
    /// The tail of the audit journal.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The coordinator's Prometheus metrics, in the text format (scope read).
    Metrics,
    /// Approve the candidate awaiting approval (scope approve).
    Approve {
        /// The candidate version.
        version: u64,
        /// Why (recorded in the audit journal).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Reject the candidate awaiting approval (scope approve).
    Reject {
        /// The candidate version.
        version: u64,
        /// Why (recorded in the audit journal).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Make an earlier committed version current again (scope operate; not during a round).
    Rollback {
        /// The version.
        version: u64,
        /// Why (recorded in the audit journal).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// While paused, start one round now (scope operate).
    StartRound,
    /// Pause the federation: no new round starts (scope operate).
    Pause {
        /// Why (recorded in the audit journal).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume the federation (scope operate).
    Resume,
    /// Manage the bearer tokens file (`admin.tokens`); no coordinator needed.
    Token(TokenArgs),
}

/// Token commands.
#[derive(Debug, Args)]
struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a token, store its SHA-256 in the tokens file and print it (only this once).
    Add {
        /// The tokens file (created, mode 0600, when missing).
        #[arg(long)]
        tokens: PathBuf,
        /// Who holds it, e.g. `n8n` (recorded in the audit journal for what it does).
        #[arg(long)]
        name: String,
        /// What it may do: read; approve (read + approve/reject); operate (everything).
        #[arg(long, value_enum)]
        scope: Scope,
    },
    /// Remove a token (a running coordinator stops accepting it at once).
    Revoke {
        /// The tokens file.
        #[arg(long)]
        tokens: PathBuf,
        /// The token's name.
        #[arg(long)]
        name: String,
    },
    /// List the tokens' names and scopes.
    List {
        /// The tokens file.
        #[arg(long)]
        tokens: PathBuf,
    },
}

fn token_command(t: TokenCommand) -> anyhow::Result<ExitCode> {
    match t {
        TokenCommand::Add {
            tokens,
            name,
            scope,
        } => {
            let token = tokens::add(&tokens, &name, scope)?;
            eprintln!(
                "token {name} (scope {}) added to {}; it is shown only now:",
                scope.as_str(),
                tokens.display()
            );
            println!("{token}");
        }
        TokenCommand::Revoke { tokens, name } => {
            tokens::revoke(&tokens, &name)?;
            println!("token {name} revoked");
        }
        TokenCommand::List { tokens } => {
            for t in tokens::list(&tokens)? {
                println!("{:<24} {}", t.name, t.scope.as_str());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an admin command.
pub async fn run(a: AdminArgs) -> anyhow::Result<ExitCode> {
    use AdminCommand::*;
    let (method_path, body) = match a.command {
        Token(t) => return token_command(t.command),
        Status => (("GET", "/v1/status".to_string()), None),
        Silos => (("GET", "/v1/silos".to_string()), None),
        Rounds { limit } => (("GET", format!("/v1/rounds?limit={limit}")), None),
        Versions => (("GET", "/v1/versions".to_string()), None),
        Audit { limit } => (("GET", format!("/v1/audit?limit={limit}")), None),
        Metrics => (("GET", "/metrics".to_string()), None),
        Approve { version, reason } => (
            ("POST", format!("/v1/candidates/{version}/approve")),
            Some(json!({ "reason": reason })),
        ),
        Reject { version, reason } => (
            ("POST", format!("/v1/candidates/{version}/reject")),
            Some(json!({ "reason": reason })),
        ),
        Rollback { version, reason } => (
            ("POST", format!("/v1/versions/{version}/rollback")),
            Some(json!({ "reason": reason })),
        ),
        StartRound => (("POST", "/v1/rounds".to_string()), Some(json!({}))),
        Pause { reason } => (
            ("POST", "/v1/pause".to_string()),
            Some(json!({ "reason": reason })),
        ),
        Resume => (("POST", "/v1/resume".to_string()), Some(json!({}))),
    };
    let (method, path) = method_path;
    a.api.call(method, &path, body).await
}

impl ApiConnection {
    /// Calls `method path` with `body` (JSON, for a POST) and prints the answer: the JSON
    /// pretty-printed (the metrics as text), or the error with its status (exit 1).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<ExitCode> {
        let a = self;
        fedsilo::tls::install_crypto_provider();
        let client = match (&a.kit, &a.ca) {
        (Some(kit), _) => {
            let creds = NodeCredentials::load_kit(kit)
                .with_context(|| format!("--kit {}", kit.display()))?;
            AdminClient::with_kit(&a.url, &creds, &a.server_name)?.token(a.token.clone())
        }
        (None, Some(ca)) => AdminClient::with_token(&a.url, ca, a.token.clone(), &a.server_name)?,
        (None, None) => anyhow::bail!(
            "give --kit (an operator's kit) or --ca (the consortium CA) with a token in FEDSILO_TOKEN"
        ),
    };
        let response = match body {
            None => client.get(path).await?,
            Some(b) => client.post(path, &b).await?,
        };
        let json = response.json();
        if (200..300).contains(&response.status) && path == "/metrics" {
            print!("{}", response.text());
            Ok(ExitCode::SUCCESS)
        } else if (200..300).contains(&response.status) {
            println!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_else(|_| response.text())
            );
            Ok(ExitCode::SUCCESS)
        } else {
            let why = json["error"]
                .as_str()
                .map_or_else(|| response.text(), str::to_string);
            eprintln!("fedsilo: {method} {path}: {} {why}", response.status);
            Ok(ExitCode::FAILURE)
        }
    }
}
