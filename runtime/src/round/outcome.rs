//! How a round ends ([`RoundOutcome`]) and who did not contribute to it ([`Attendance`]).

use crate::events::RoundSummary;
use crate::kernels::server_optimizer::OptimizerState;

/// Cohort members that did not contribute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attendance {
    /// Every silo whose update was not aggregated, with the reason (late, lost, refused...).
    /// Silos merely not collected because the round could no longer reach quorum are listed
    /// here but are not to blame: see [`Attendance::failed`].
    pub missing: Vec<(String, String)>,
    /// The subset refused by an admission rule (these count towards quarantine).
    pub refused: Vec<(String, String)>,
}

/// How the reason of a silo whose link closed during the round begins.
pub const LEFT_MID_ROUND: &str = "left the federation mid-round";

/// The reason given to silos not collected because quorum became impossible.
pub const NOT_COLLECTED: &str = "not collected: the round could no longer reach quorum";

impl Attendance {
    /// The round's attendance so far.
    pub fn of(missing: &[(String, String)], refused: &[(String, String)]) -> Self {
        Attendance {
            missing: missing.to_vec(),
            refused: refused.to_vec(),
        }
    }

    /// Silos that failed the round themselves (refused, late, lost): these start a cool-down.
    pub fn failed(&self) -> impl Iterator<Item = &str> {
        self.missing
            .iter()
            .filter(|(_, why)| why != NOT_COLLECTED)
            .map(|(s, _)| s.as_str())
    }
}

/// How a round ended.
#[derive(Debug)]
pub enum RoundOutcome {
    /// A scored candidate: ready to commit, or (`failed_gate`) to keep as rejected.
    Candidate {
        /// Its parameters.
        params: Vec<f32>,
        /// The summary (version, digest and validation figures filled in).
        summary: Box<RoundSummary>,
        /// The server optimiser's state after this round, to adopt if committed.
        optimizer: Option<OptimizerState>,
        /// Why the candidate failed the validation gate: it is kept as a rejected version and
        /// the current version stays.
        failed_gate: Option<String>,
    },
    /// The candidate failed validation.
    Rejected {
        /// Round number.
        round: u64,
        /// Why.
        reason: String,
        /// Who failed the round, and who was refused by admission rules.
        attendance: Attendance,
    },
    /// No candidate.
    Abandoned {
        /// Round number.
        round: u64,
        /// Why.
        reason: String,
        /// Who failed the round, and who was refused by admission rules.
        attendance: Attendance,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silos_merely_not_collected_are_not_blamed() {
        let a = Attendance {
            missing: vec![
                (
                    "a".into(),
                    "left the federation mid-round (session closed)".into(),
                ),
                ("b".into(), NOT_COLLECTED.into()),
                (
                    "c".into(),
                    "stale: update for round 2, this is round 3".into(),
                ),
            ],
            refused: vec![("c".into(), "stale".into())],
        };
        assert_eq!(a.failed().collect::<Vec<_>>(), vec!["a", "c"]);
    }
}
