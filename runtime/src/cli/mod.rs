//! Command-line interface of the `fedsilo` binary.

mod admin_cmd;
mod aggregate_cmd;
mod aggregator_cmd;
mod audit_cmd;
mod certs_cmd;
mod coordinator_cmd;
mod decision_cmd;
mod deploy_cmd;
mod models_cmd;
mod policy_cmd;
mod privacy_cmd;
mod report_cmd;
mod run_cmd;

use clap::{Parser, Subcommand};

/// fedsilo — cross-silo federated fine-tuning over mutual TLS.
///
/// A typical start, on one machine for a trial:
///
///   fedsilo certs init --out certs --coordinator coordinator --silo bank-a:eu --silo bank-b:us
///   fedsilo coordinator --config federation.toml
///   silo-node --kit certs/bank-a --coordinator 127.0.0.1:7443 --data a.csv --schema schema.toml
#[derive(Debug, Parser)]
#[command(name = "fedsilo", version, verbatim_doc_comment)]
pub struct Cli {
    /// Log filter (tracing syntax), e.g. `info`, `fedsilo=debug`. RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "warn")]
    pub log: String,
    /// Log lines as text, or as one JSON object per line for a log shipper.
    #[arg(long, global = true, value_enum, default_value_t = fedsilo::logging::LogFormat::Text)]
    pub log_format: fedsilo::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make and extend the consortium's certificates.
    Certs(certs_cmd::CertsArgs),
    /// Run the coordinator (with its aggregator, validator and policy actors).
    Coordinator(coordinator_cmd::CoordinatorArgs),
    /// Run a regional aggregator (residency: updates are combined in their allowed region).
    Aggregator(aggregator_cmd::AggregatorArgs),
    /// Combine update files offline with a kernel (to re-run a round's combination).
    Aggregate(aggregate_cmd::AggregateArgs),
    /// Check a policy file, or explain what it would decide for a roster.
    Policy(policy_cmd::PolicyArgs),
    /// Privacy planning: ε for a noise multiplier, or the noise for an ε budget.
    Privacy(privacy_cmd::PrivacyArgs),
    /// The audit journal: verify its chain, signatures and checkpoints, or show its entries.
    Audit(audit_cmd::AuditArgs),
    /// Model versions: list, show, export, diff; approve, reject, roll back.
    Models(models_cmd::ModelsArgs),
    /// Operate a running coordinator through its admin API; manage the API's tokens.
    ///
    /// With an operator kit (mutual TLS, every scope):
    ///
    ///   fedsilo admin --url https://127.0.0.1:8443 --kit certs/alice status
    ///
    /// With a token (scope read, approve or operate), and the CA to verify the coordinator:
    ///
    ///   fedsilo admin token add --tokens admin-tokens.toml --name n8n --scope approve
    ///   FEDSILO_TOKEN=fedsilo_… fedsilo admin --ca certs/ca.pem approve 4 --reason "CHG-1234"
    #[command(verbatim_doc_comment)]
    Admin(admin_cmd::AdminArgs),
    /// Training runs on a serving coordinator (`federation.serve = true`): submit, list,
    /// show, cancel. Runs queue and start one at a time; each is journaled.
    ///
    ///   fedsilo run --kit certs/alice submit --rounds 20
    ///   fedsilo run --kit certs/alice list
    ///   FEDSILO_TOKEN=fedsilo_… fedsilo run --ca certs/ca.pem cancel 3 --reason "wrong data"
    #[command(verbatim_doc_comment)]
    Run(run_cmd::RunArgs),
    /// Deploy a committed version to the silos, which keep it on disk and score with it
    /// (`silo-node score`). Deliveries are signed by the coordinator and checked by digest.
    ///
    ///   fedsilo deploy --kit certs/alice create --version 3 --reason "CHG-1234"
    ///   fedsilo deploy --kit certs/alice create --version 3 --region eu
    ///   fedsilo deploy --kit certs/alice list
    #[command(verbatim_doc_comment)]
    Deploy(deploy_cmd::DeployArgs),
    /// Write the run report, or the governance report, as a self-contained HTML page.
    ///
    /// The run report: charts of the global metric per round, per-silo metrics,
    /// participation, refusals, privacy spend and round time by phase, and tables of the
    /// rounds that made no version.
    ///
    /// The governance report (--governance), for a risk officer to file: every decision with
    /// who took it and when, lineage and checkpoint SHA-256s, deployments, policy texts,
    /// privacy settings and each silo's ε spent and left, each silo's contribution, the gate's
    /// evidence per version, runs and roster; also as JSON (--json). It is drawn from the
    /// signed audit journal, verified as it is read.
    ///
    /// The coordinator writes both (report.html, governance.html and governance.json) into
    /// its state directory when it stops.
    ///
    ///   fedsilo report --config examples/churn/federation.toml --out report.html
    ///   fedsilo report --config examples/churn/federation.toml --governance --json governance.json
    #[command(verbatim_doc_comment)]
    Report(report_cmd::ReportArgs),
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Certs(a) => certs_cmd::run(a),
        Command::Coordinator(a) => coordinator_cmd::run(a).await,
        Command::Aggregate(a) => aggregate_cmd::run(a),
        Command::Aggregator(a) => aggregator_cmd::run(a).await,
        Command::Policy(a) => policy_cmd::run(a),
        Command::Privacy(a) => privacy_cmd::run(a),
        Command::Audit(a) => audit_cmd::run(a),
        Command::Models(a) => models_cmd::run(a),
        Command::Admin(a) => admin_cmd::run(a).await,
        Command::Run(a) => run_cmd::run(a).await,
        Command::Deploy(a) => deploy_cmd::run(a).await,
        Command::Report(a) => report_cmd::run(a),
    }
}
