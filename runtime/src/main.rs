//! `fedsilo`: the consortium's command-line tool — certificates and the coordinator.

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    fedsilo::logging::init(&cli.log, cli.log_format);
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
