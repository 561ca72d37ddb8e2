//! Fault injection, for tests and robustness experiments only: compiled in only with the
//! `fault-injection` feature, which the test harness (`fedsilo-testkit`) turns on and no
//! release build does. Without it, [`Faults`] is empty and every hook below does nothing, so
//! a production `silo-node` has no hidden flag that could make it wait, exit or forge updates.
//!
//! - a delay before each training job (so rounds last long enough to watch);
//! - an exit when the shares of a secure-aggregation round are delivered (a silo lost after
//!   key sharing);
//! - an attack from a given round on ([`crate::attack`]): the honest update forged before it
//!   is reported.

use std::time::Duration;

/// The faults this silo injects.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Wait this long before each training job.
    #[cfg(feature = "fault-injection")]
    pub train_delay: Duration,
    /// Forge every update this way, from the given round on.
    #[cfg(feature = "fault-injection")]
    pub attack: Option<(crate::attack::Attack, u64)>,
    /// Exit when the shares of this secure-aggregation round are delivered.
    #[cfg(feature = "fault-injection")]
    pub exit_after_sharing: Option<u64>,
}

/// The attack a round is trained under, if any.
#[cfg(feature = "fault-injection")]
pub type RoundAttack = Option<crate::attack::Attack>;
/// No attack can be asked for without the `fault-injection` feature.
#[cfg(not(feature = "fault-injection"))]
pub type RoundAttack = Option<std::convert::Infallible>;

impl Faults {
    /// The wait before a training job.
    pub fn train_delay(&self) -> Duration {
        #[cfg(feature = "fault-injection")]
        return self.train_delay;
        #[cfg(not(feature = "fault-injection"))]
        Duration::ZERO
    }

    /// The attack of round `round`.
    pub fn attack(&self, round: u64) -> RoundAttack {
        #[cfg(feature = "fault-injection")]
        return self
            .attack
            .filter(|(_, from)| round >= *from)
            .map(|(a, _)| a);
        #[cfg(not(feature = "fault-injection"))]
        {
            let _ = round;
            None
        }
    }

    /// Exits the process if it was told to once round `round`'s shares are delivered.
    pub fn after_sharing(&self, round: u64, silo: &str) {
        #[cfg(feature = "fault-injection")]
        if self.exit_after_sharing == Some(round) {
            eprintln!("silo {silo}: fault injection: exiting after key sharing in round {round}");
            std::process::exit(3);
        }
        let _ = (round, silo);
    }
}

/// Forges `honest` (trained on `x`, `y`) under `attack`; `retrain` trains again on a subset of
/// rows with another seed (what ALIE estimates honest statistics from). Returns the update to
/// report and the example count to claim.
#[cfg(feature = "fault-injection")]
pub fn forge(
    attack: RoundAttack,
    honest: Vec<f32>,
    examples: usize,
    rows: usize,
    seed: u64,
    retrain: &dyn Fn(&[usize], u64) -> Vec<f32>,
) -> (Vec<f32>, usize) {
    use crate::attack::{Attack, ALIE_SAMPLES};
    let Some(attack) = attack else {
        return (honest, examples);
    };
    let examples = if attack == Attack::Inflate {
        examples * 100
    } else {
        examples
    };
    let mut samples = vec![honest];
    if attack == Attack::Alie {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..rows).collect();
        for s in 1..ALIE_SAMPLES {
            order.shuffle(&mut rng);
            samples.push(retrain(&order[..rows / 2], seed.wrapping_add(s as u64)));
        }
    }
    (attack.forge(&samples, seed), examples)
}

/// Without the `fault-injection` feature nothing is forged.
#[cfg(not(feature = "fault-injection"))]
pub fn forge(
    _attack: RoundAttack,
    honest: Vec<f32>,
    examples: usize,
    _rows: usize,
    _seed: u64,
    _retrain: &dyn Fn(&[usize], u64) -> Vec<f32>,
) -> (Vec<f32>, usize) {
    (honest, examples)
}

/// The command-line flags of the faults (hidden from `--help`).
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, clap::Args)]
pub struct FaultArgs {
    /// Fault injection for tests: wait this many milliseconds before each training job.
    #[arg(long, default_value_t = 0, hide = true)]
    pub train_delay_ms: u64,
    /// Robustness experiments only: make this silo Byzantine.
    #[arg(long, value_enum, hide = true)]
    pub attack: Option<crate::attack::Attack>,
    /// Robustness experiments only: mount the --attack from this round on (honest before).
    #[arg(long, default_value_t = 0, hide = true)]
    pub attack_from_round: u64,
    /// Fault injection for tests: exit abruptly when the coordinator delivers the secure
    /// aggregation shares of this round (a silo lost after key sharing).
    #[arg(long, hide = true)]
    pub exit_after_sharing: Option<u64>,
}

#[cfg(feature = "fault-injection")]
impl FaultArgs {
    /// The faults these flags ask for.
    pub fn faults(&self) -> Faults {
        Faults {
            train_delay: Duration::from_millis(self.train_delay_ms),
            attack: self.attack.map(|a| (a, self.attack_from_round)),
            exit_after_sharing: self.exit_after_sharing,
        }
    }
}
