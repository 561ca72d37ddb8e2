//! The Policy actor: hosts a [`Policy`] and answers with the verdicts of its pure rules
//! (`fedsilo_policies`), logging each one. It decides nothing the rules do not say.

use fedsilo_policies::participation::{self, Candidate, Selection};
use fedsilo_policies::{Policy, Verdict};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// Messages of the Policy actor.
#[derive(Debug)]
pub enum PolicyMessage {
    /// Choose a round's cohort among the candidates.
    SelectCohort {
        /// Round number (for the log).
        round: u64,
        /// The silos the coordinator knows.
        candidates: Vec<Candidate>,
        /// The selection with reasons.
        reply: RpcReplyPort<Selection>,
    },
    /// Whether `received` updates out of `selected` may be committed.
    Quorum {
        /// Round number (for the log).
        round: u64,
        /// Updates admitted.
        received: usize,
        /// Cohort size.
        selected: usize,
        /// The verdict.
        reply: RpcReplyPort<Verdict>,
    },
    /// A copy of the policy in force (timings, thresholds).
    Snapshot(RpcReplyPort<Policy>),
}

impl ractor::Message for PolicyMessage {}

/// The Policy actor.
#[derive(Debug)]
pub struct PolicyActor;

impl Actor for PolicyActor {
    type Msg = PolicyMessage;
    type State = Policy;
    type Arguments = Policy;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        policy: Policy,
    ) -> Result<Policy, ActorProcessingErr> {
        Ok(policy)
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        policy: &mut Policy,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PolicyMessage::SelectCohort {
                round,
                candidates,
                reply,
            } => {
                let s = participation::select_cohort(policy, &candidates);
                tracing::info!(round, allow = s.verdict.allow, reasons = ?s.verdict.reasons, excluded = ?s.excluded, "policy: cohort");
                let _ = reply.send(s);
            }
            PolicyMessage::Quorum {
                round,
                received,
                selected,
                reply,
            } => {
                let v = participation::quorum_verdict(policy, received, selected);
                tracing::info!(round, allow = v.allow, reasons = ?v.reasons, "policy: quorum");
                let _ = reply.send(v);
            }
            PolicyMessage::Snapshot(reply) => {
                let _ = reply.send(policy.clone());
            }
        }
        Ok(())
    }
}
