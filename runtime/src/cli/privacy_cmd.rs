//! `fedsilo privacy …`

use std::process::ExitCode;

use clap::{Args, Subcommand};
use fedsilo::privacy::rdp::{epsilon, noise_for};

/// Privacy planning: ε of the Poisson-subsampled Gaussian mechanism (RDP accountant, the same
/// orders and conversion as Google's dp_accounting).
#[derive(Debug, Args)]
pub struct PrivacyArgs {
    #[command(subcommand)]
    command: PrivacyCommand,
}

#[derive(Debug, Subcommand)]
enum PrivacyCommand {
    /// ε spent after T steps at sampling rate Q with noise multiplier Z, for δ.
    ///
    /// Example: fedsilo privacy epsilon --sampling-rate 0.01 --noise-multiplier 1.1 --steps 10000 --delta 1e-5
    Epsilon {
        /// Probability that a record (or silo) takes part in a step, in [0, 1].
        #[arg(long)]
        sampling_rate: f64,
        /// Noise standard deviation divided by the clipping norm.
        #[arg(long)]
        noise_multiplier: f64,
        /// Steps (rounds, or DP-SGD batches) composed.
        #[arg(long)]
        steps: u64,
        /// δ, in (0, 1); usually below 1 / (number of records).
        #[arg(long)]
        delta: f64,
    },
    /// The smallest noise multiplier whose ε after T steps at rate Q stays within E for δ.
    ///
    /// Example: fedsilo privacy noise --epsilon 3 --delta 1e-5 --sampling-rate 0.01 --steps 10000
    Noise {
        /// The ε budget.
        #[arg(long)]
        epsilon: f64,
        /// δ, in (0, 1).
        #[arg(long)]
        delta: f64,
        /// Sampling rate, in [0, 1].
        #[arg(long)]
        sampling_rate: f64,
        /// Steps composed.
        #[arg(long)]
        steps: u64,
    },
}

/// Runs a privacy command.
pub fn run(a: PrivacyArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        PrivacyCommand::Epsilon {
            sampling_rate,
            noise_multiplier,
            steps,
            delta,
        } => {
            let (eps, order) = epsilon(sampling_rate, noise_multiplier, steps, delta)?;
            println!("epsilon {eps:.6}  (delta {delta}, best RDP order {order})");
        }
        PrivacyCommand::Noise {
            epsilon: target,
            delta,
            sampling_rate,
            steps,
        } => {
            let z = noise_for(target, delta, sampling_rate, steps)?;
            let (eps, _) = epsilon(sampling_rate, z, steps, delta)?;
            println!("noise multiplier {z:.4}  (epsilon {eps:.4} ≤ {target}, delta {delta})");
        }
    }
    Ok(ExitCode::SUCCESS)
}
