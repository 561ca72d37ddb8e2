//! `fedsilo report`: the run report of a state directory, as one self-contained HTML page.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fedsilo::federation::FederationConfig;

/// `fedsilo report` (documented on its command).
#[derive(Debug, Args)]
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
