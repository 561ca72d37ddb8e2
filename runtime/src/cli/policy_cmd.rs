//! `fedsilo policy …`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use fedsilo_policies::explain::{explain, summary, Roster};
use std::fmt::Write as _;

use fedsilo::privacy::budget::rounds_within;
use fedsilo_policies::privacy::{NoiseMode, PrivacyRules};
use fedsilo_policies::{ParticipationRules, Policy};

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

/// How many rounds each budget allows, with the multiplier a round is charged at (for
/// distributed noise: with `min_silos` dispatched and only `quorum` reporting).
fn budget_forecast(dp: &PrivacyRules, p: &ParticipationRules) -> String {
    let z = dp.effective_multiplier(p.min_silos, p.quorum);
    let mut out = String::new();
    let budgets = dp
        .budget
        .map(|b| ("every silo".to_string(), b))
        .into_iter()
        .chain(
            dp.silos
                .keys()
                .filter_map(|s| dp.budget_of(s).map(|b| (s.clone(), b))),
        );
    for (who, b) in budgets {
        let n = rounds_within(z, b, 1_000_000);
        let _ = writeln!(
            out,
            "budget         {who}: {n} round(s) at z = {z:.3} before ε would pass {} at δ = {:e}{}",
            b.epsilon,
            b.delta,
            match dp.mode {
                NoiseMode::Central => String::new(),
                NoiseMode::Distributed => format!(
                    " (distributed: {} dispatched, {} reporting; more dispatched means fewer rounds)",
                    p.min_silos, p.quorum
                ),
            }
        );
    }
    out
}

/// Runs a policy command.
pub fn run(a: PolicyArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        PolicyCommand::Check { file } => {
            let p = Policy::load(&file)?;
            println!("{}: valid", file.display());
            print!("{}", summary(&p));
            if let Some(dp) = &p.privacy {
                print!("{}", budget_forecast(dp, &p.participation));
            }
        }
        PolicyCommand::Explain { file, roster } => {
            let p = Policy::load(&file)?;
            let r = Roster::load(&roster)?;
            print!("{}", explain(&p, &r));
        }
    }
    Ok(ExitCode::SUCCESS)
}
