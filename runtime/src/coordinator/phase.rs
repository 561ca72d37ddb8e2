//! Where the coordinator stands: one [`Phase`] (what it is doing) and one [`Hold`] (whether an
//! operator paused it). Every flag the coordinator used to keep — busy, round in flight, its
//! task, awaiting a decision, finished, compared, a step asked for — is one of these variants,
//! so no two can disagree.
//!
//! ```text
//!            scaling agreed                 round task spawned
//! Starting ───────────────▶ Ready ───────────────────────────▶ Round
//!    ▲  │ (retry later)      ▲ ▲   committed / rejected /          │
//!    └──┘                    │ └──────────── abandoned ────────────┤
//!                            │                                     │ passed the gate,
//!                 approved / │                                     │ approval required
//!        rejected / rollback │                                     ▼
//!                            └──────────────────────────── AwaitingApproval
//!
//! Ready ──(last round done, or budget spent)──▶ Comparing ──▶ Finished
//!                                                          └──▶ Idle (serving: the run ends,
//! Idle ──(a queued run starts)──▶ Starting or Ready               the next queued one starts)
//! any   ──(an error the coordinator cannot go on from)─────────▶ Finished
//! ```
//!
//! A pause ([`Hold::Paused`]) is orthogonal: a round in flight finishes, no new one starts
//! unless an operator asks for one step. The transitions themselves are carried out where
//! their side effects are (`schedule`, `outcome`, `governance`, `lifecycle`); what they may do
//! in each phase is decided here, by pure functions with unit tests.

use std::time::Instant;

use tokio::task::AbortHandle;

use crate::events::RoundSummary;
use crate::kernels::server_optimizer::OptimizerState;
use crate::model::checkpoint::Checkpoint;
use crate::registry::VersionMeta;
use crate::status::{Pause, RunState};

/// A candidate that passed the gate and waits for an operator's decision.
#[derive(Debug)]
pub struct Awaiting {
    /// Its metadata, as the registry holds it.
    pub meta: VersionMeta,
    /// Its checkpoint.
    pub ckpt: Checkpoint,
    /// The server optimiser's state after its round, adopted if it is approved.
    pub optimizer: Option<OptimizerState>,
    /// The round's summary (lost if the coordinator restarted meanwhile).
    pub summary: Option<Box<RoundSummary>>,
}

/// What the coordinator is doing.
#[derive(Debug)]
pub enum Phase {
    /// Feature scaling is not agreed yet: no round can start. `agreeing`: an attempt is out;
    /// `retry_at`: no new attempt before then (after one failed).
    Starting {
        /// An agreement task is running.
        agreeing: bool,
        /// Back-off after a failed attempt.
        retry_at: Option<Instant>,
    },
    /// Between rounds: the next one starts when the policy's selection allows.
    Ready,
    /// Between runs (a serving coordinator): the next queued run starts from here.
    Idle,
    /// Round `round` is in flight.
    Round {
        /// Its number.
        round: u64,
        /// Its task, aborted if the coordinator stops.
        task: Option<AbortHandle>,
    },
    /// A candidate passed the gate and waits for an operator; no round starts.
    AwaitingApproval(Box<Awaiting>),
    /// The run is over; the silos train local-only baselines for the comparison.
    Comparing,
    /// Over, with the error if the run failed. Every request is refused from here on.
    Finished {
        /// Why it failed, if it did.
        error: Option<String>,
    },
}

/// Whether an operator paused the federation.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// Rounds start on their own.
    Running,
    /// No new round starts (journaled; a restart stays paused). `step`: one round was asked
    /// for and has not started yet.
    Paused {
        /// Who paused it and why.
        pause: Pause,
        /// One round asked for.
        step: bool,
    },
}

impl Phase {
    /// A task the coordinator waits for is out (scaling, a round, the comparison).
    pub fn busy(&self) -> bool {
        matches!(
            self,
            Phase::Starting { agreeing: true, .. } | Phase::Round { .. } | Phase::Comparing
        )
    }

    /// The round in flight, if any.
    pub fn round_in_flight(&self) -> Option<u64> {
        match self {
            Phase::Round { round, .. } => Some(*round),
            _ => None,
        }
    }

    /// The candidate awaiting approval, if any.
    pub fn awaiting(&self) -> Option<&Awaiting> {
        match self {
            Phase::AwaitingApproval(a) => Some(a),
            _ => None,
        }
    }

    /// Whether the run is over.
    pub fn finished(&self) -> bool {
        matches!(self, Phase::Finished { .. })
    }

    /// The error the run ended with, if it ended with one.
    pub fn error(&self) -> Option<&String> {
        match self {
            Phase::Finished { error } => error.as_ref(),
            _ => None,
        }
    }

    /// Leaves the approval phase, handing over the candidate (the phase becomes `Ready`).
    pub fn take_awaiting(&mut self) -> Option<Box<Awaiting>> {
        match std::mem::replace(self, Phase::Ready) {
            Phase::AwaitingApproval(a) => Some(a),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Why an operator may not start a round by hand now, if they may not (`paused`: the
    /// federation is paused; `next`: the next round's number; `rounds`: the run's last).
    pub fn refuses_step(&self, hold: &Hold, next: u64, rounds: u64) -> Option<String> {
        let Hold::Paused { step, .. } = hold else {
            return Some("the federation is running: rounds start on their own (pause it to start rounds by hand)".into());
        };
        if let Some(r) = self.round_in_flight() {
            return Some(format!("round {r} is in flight"));
        }
        if let Some(a) = self.awaiting() {
            return Some(format!(
                "candidate v{} awaits approval: approve or reject it first",
                a.meta.version
            ));
        }
        if matches!(self, Phase::Idle) {
            return Some("no training run is active: submit one (fedsilo run submit)".into());
        }
        if next > rounds {
            return Some(format!("all {rounds} rounds of this run are done"));
        }
        if *step {
            return Some(format!("round {next} was already requested"));
        }
        None
    }

    /// What the status reports (`scaled`: feature scaling is agreed).
    pub fn run_state(&self, hold: &Hold, scaled: bool) -> RunState {
        match self {
            Phase::Finished { .. } => RunState::Finished,
            Phase::Round { .. } => RunState::RoundInFlight,
            Phase::AwaitingApproval(_) => RunState::AwaitingApproval,
            _ if matches!(hold, Hold::Paused { .. }) => RunState::Paused,
            Phase::Idle => RunState::Idle,
            _ if !scaled => RunState::Starting,
            _ => RunState::Ready,
        }
    }
}

impl Hold {
    /// The pause, if paused.
    pub fn pause(&self) -> Option<&Pause> {
        match self {
            Hold::Paused { pause, .. } => Some(pause),
            Hold::Running => None,
        }
    }

    /// Whether a round may be dispatched: running, or paused with a step asked for.
    pub fn may_dispatch(&self) -> bool {
        matches!(self, Hold::Running | Hold::Paused { step: true, .. })
    }

    /// A dispatched round used the step that was asked for.
    pub fn step_taken(&mut self) {
        if let Hold::Paused { step, .. } = self {
            *step = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paused(step: bool) -> Hold {
        Hold::Paused {
            pause: Pause {
                by: "alice".into(),
                reason: "audit".into(),
            },
            step,
        }
    }

    #[test]
    fn only_tasks_make_the_coordinator_busy() {
        let starting = |agreeing| Phase::Starting {
            agreeing,
            retry_at: None,
        };
        assert!(starting(true).busy());
        assert!(!starting(false).busy());
        assert!(Phase::Round {
            round: 3,
            task: None
        }
        .busy());
        assert!(Phase::Comparing.busy());
        assert!(!Phase::Ready.busy());
        assert!(!Phase::Finished { error: None }.busy());
    }

    #[test]
    fn the_status_follows_the_phase_before_the_pause() {
        let round = Phase::Round {
            round: 2,
            task: None,
        };
        assert_eq!(
            round.run_state(&paused(false), true),
            RunState::RoundInFlight
        );
        assert_eq!(
            Phase::Ready.run_state(&paused(false), true),
            RunState::Paused
        );
        assert_eq!(
            Phase::Ready.run_state(&Hold::Running, true),
            RunState::Ready
        );
        let starting = Phase::Starting {
            agreeing: true,
            retry_at: None,
        };
        assert_eq!(
            starting.run_state(&Hold::Running, false),
            RunState::Starting
        );
        assert_eq!(
            Phase::Finished { error: None }.run_state(&paused(true), true),
            RunState::Finished
        );
        // The comparison at the end reports ready, as before it had a phase of its own.
        assert_eq!(
            Phase::Comparing.run_state(&Hold::Running, true),
            RunState::Ready
        );
    }

    #[test]
    fn a_step_is_refused_unless_paused_idle_and_rounds_remain() {
        assert!(Phase::Ready
            .refuses_step(&Hold::Running, 1, 5)
            .unwrap()
            .contains("running"));
        assert_eq!(Phase::Ready.refuses_step(&paused(false), 3, 5), None);
        let round = Phase::Round {
            round: 3,
            task: None,
        };
        assert_eq!(
            round.refuses_step(&paused(false), 4, 5).as_deref(),
            Some("round 3 is in flight")
        );
        assert!(Phase::Ready
            .refuses_step(&paused(false), 6, 5)
            .unwrap()
            .contains("all 5 rounds"));
        assert!(Phase::Ready
            .refuses_step(&paused(true), 3, 5)
            .unwrap()
            .contains("already requested"));
    }

    #[test]
    fn a_paused_federation_dispatches_only_a_requested_step_and_only_once() {
        assert!(Hold::Running.may_dispatch());
        assert!(!paused(false).may_dispatch());
        let mut hold = paused(true);
        assert!(hold.may_dispatch());
        hold.step_taken();
        assert_eq!(hold, paused(false));
        assert_eq!(hold.pause().map(|p| p.by.as_str()), Some("alice"));
        let mut running = Hold::Running;
        running.step_taken();
        assert_eq!(running, Hold::Running);
    }

    #[test]
    fn taking_the_candidate_leaves_the_approval_phase_and_nothing_else() {
        let mut round = Phase::Round {
            round: 1,
            task: None,
        };
        assert!(round.take_awaiting().is_none());
        assert_eq!(round.round_in_flight(), Some(1), "a round is not disturbed");
        let mut done = Phase::Finished {
            error: Some("x".into()),
        };
        assert!(done.take_awaiting().is_none());
        assert_eq!(done.error().map(String::as_str), Some("x"));
    }
}
