//! `fedsilo report`: the run report of a state directory, or its governance report, as one
//! self-contained HTML page (and the governance report also as JSON).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use fedsilo::federation::FederationConfig;
use fedsilo::identity::signature::CaCheck;
use fedsilo::report::governance::ReadOptions;

/// `fedsilo report` (documented on its command).
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The coordinator's state directory.
    #[arg(long, required_unless_present = "config", conflicts_with = "config")]
    state_dir: Option<PathBuf>,
    /// Or the federation file, whose `federation.state_dir` is used (and, for the governance
    /// report, its name, roster and the coordinator kit's CA).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The governance report instead of the run report: every decision with who took it and
    /// when, lineage, checkpoint SHA-256s, deployments, policies, privacy spend per silo, each
    /// silo's contribution, the gate's evidence, runs and roster. Exit status 1 when the audit
    /// journal does not verify (the report is written all the same, and says so).
    #[arg(long)]
    governance: bool,
    /// With --governance: also write the report as JSON to this file.
    #[arg(long, requires = "governance")]
    json: Option<PathBuf>,
    /// With --governance: the consortium CA (a kit's ca.pem) that must have issued the
    /// journal's signers (default with --config: the coordinator kit's ca.pem).
    #[arg(long, requires = "governance")]
    ca: Option<PathBuf>,
    /// Where to write the page [default: report.html, or governance.html with --governance].
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Writes the report.
pub fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let (state_dir, name, cfg) = match (a.state_dir, a.config) {
        (Some(s), _) => (s.clone(), s.display().to_string(), None),
        (None, Some(c)) => {
            let cfg = FederationConfig::load(&c)?;
            (
                cfg.federation.state_dir.clone(),
                cfg.federation.name.clone(),
                Some(cfg),
            )
        }
        (None, None) => anyhow::bail!("give --state-dir or --config"),
    };
    if !a.governance {
        let out = a.out.unwrap_or_else(|| "report.html".into());
        fedsilo::report::write(&state_dir, &out, &format!("fedsilo run report — {name}"))?;
        println!("report written to {}", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    let ca = match (&a.ca, &cfg) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(cfg)) => Some(cfg.network.kit.join("ca.pem")).filter(|p| p.exists()),
        (None, None) => None,
    };
    let ca = ca
        .as_deref()
        .map(CaCheck::load)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let out = a.out.unwrap_or_else(|| "governance.html".into());
    let opts = ReadOptions {
        federation: name,
        ca,
        roster: cfg.map(|c| c.members),
        versions: None,
        check_files: true,
    };
    let report = fedsilo::report::write_governance(&state_dir, opts, &out, a.json.as_deref())?;
    println!("governance report written to {}", out.display());
    if let Some(json) = &a.json {
        println!("and as JSON to {}", json.display());
    }
    if let Some(p) = &report.journal.problem {
        eprintln!("fedsilo report: the audit journal does not verify: {p}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
