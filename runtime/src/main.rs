//! `fedsilo`: the consortium's command-line tool — certificates and the coordinator.

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log.clone()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // Room for connections up to the hard limit; the listeners keep a reserve within it.
    if let Err(e) = fedsilo::connection_budget::raise_open_files_limit() {
        tracing::warn!("cannot raise the open-files limit: {e}");
    }
    match cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fedsilo: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
