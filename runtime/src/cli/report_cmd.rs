//! `fedsilo report`: the run report of a state directory, as one self-contained HTML page.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fedsilo::federation::FederationConfig;

/// Write the run report: one HTML page with charts (global metric per round, per-silo
/// metrics, participation, refusals, privacy spend, round time by phase) and tables of the
/// rounds that made no version. It needs no network to open. The coordinator also writes
/// <state_dir>/report.html when a run ends.
///
///   fedsilo report --config examples/churn/federation.toml --out report.html
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ReportArgs {
    /// The coordinator's state directory.
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    state_dir: Option<PathBuf>,
    /// Or the federation file, whose `federation.state_dir` is used.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where to write the page.
    #[arg(long, default_value = "report.html")]
    out: PathBuf,
}

/// Writes the report.
pub fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let (state_dir, title) = match (a.state_dir, a.config) {
        (Some(s), _) => {
            let title = format!("fedsilo run report — {}", s.display());
            (s, title)
        }
        (None, Some(c)) => {
            let cfg = FederationConfig::load(&c)?;
            let title = format!("fedsilo run report — {}", cfg.federation.name);
            (cfg.federation.state_dir, title)
        }
        (None, None) => anyhow::bail!("give --state-dir or --config"),
    };
    fedsilo::report::write(&state_dir, &a.out, &title)?;
    println!("report written to {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}
