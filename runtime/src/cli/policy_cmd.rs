//! `fedsilo policy …`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use fedsilo_policies::explain::{explain, summary, Roster};
use fedsilo_policies::Policy;

/// Policy commands.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and print a normalised summary (exit status 1 on an error, which
    /// names the file, line, key, value and what is allowed).
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Dry run: which silos of a roster the policy would select next round, which not and why,
    /// and where each selected silo's update would be aggregated.
    Explain {
        /// The policy file.
        file: PathBuf,
        /// A roster file: `round`, `[[silo]]` name/region (and optionally role, versions,
        /// heartbeat age, last failure, quarantine), `[[aggregator]]` name/region.
        #[arg(long)]
        roster: PathBuf,
    },
}

/// Runs a policy command.
pub fn run(a: PolicyArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        PolicyCommand::Check { file } => {
            let p = Policy::load(&file)?;
            println!("{}: valid", file.display());
            print!("{}", summary(&p));
        }
        PolicyCommand::Explain { file, roster } => {
            let p = Policy::load(&file)?;
            let r = Roster::load(&roster)?;
            print!("{}", explain(&p, &r));
        }
    }
    Ok(ExitCode::SUCCESS)
}
