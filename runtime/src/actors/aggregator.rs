//! The Aggregator actor: holds one round's accumulator and folds admitted updates into it as
//! they arrive. Memory is O(model) whatever the number of silos.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::kernels::WeightedMean;

/// Messages of the Aggregator actor.
#[derive(Debug)]
pub enum AggregatorMessage {
    /// Start a round: a fresh accumulator for updates of `len` values (any previous round's
    /// accumulator is discarded).
    Begin {
        /// Round number.
        round: u64,
        /// Values per update.
        len: usize,
    },
    /// Fold one admitted update with its weight (example count). Replies with the refusal
    /// reason if the kernel refuses it (wrong round, length, non-finite values).
    Fold {
        /// Round number; must be the current one.
        round: u64,
        /// Silo, for the log.
        silo: String,
        /// The update.
        update: Vec<f32>,
        /// Its weight.
        weight: f64,
        /// `Ok` or the reason.
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// End the round: the weighted mean of what was folded.
    Finish {
        /// Round number.
        round: u64,
        /// The mean, or why there is none.
        reply: RpcReplyPort<Result<Vec<f32>, String>>,
    },
    /// Discard the round's accumulator.
    Abort {
        /// Round number.
        round: u64,
    },
}

impl ractor::Message for AggregatorMessage {}

/// The Aggregator actor.
#[derive(Debug)]
pub struct AggregatorActor;

/// Its state: the open round, if any.
#[derive(Debug, Default)]
pub struct AggregatorState {
    open: Option<(u64, WeightedMean)>,
}

impl Actor for AggregatorActor {
    type Msg = AggregatorMessage;
    type State = AggregatorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<AggregatorState, ActorProcessingErr> {
        Ok(AggregatorState::default())
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut AggregatorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AggregatorMessage::Begin { round, len } => {
                state.open = Some((round, WeightedMean::new(len)));
            }
            AggregatorMessage::Fold {
                round,
                silo,
                update,
                weight,
                reply,
            } => {
                let result = match &mut state.open {
                    Some((r, acc)) if *r == round => {
                        acc.fold(&update, weight).map_err(|e| e.to_string())
                    }
                    Some((r, _)) => Err(format!(
                        "update for round {round}, aggregator is on round {r}"
                    )),
                    None => Err(format!("update for round {round}, no round open")),
                };
                tracing::debug!(round, silo, weight, ok = result.is_ok(), "aggregator: fold");
                let _ = reply.send(result);
            }
            AggregatorMessage::Finish { round, reply } => {
                let result = match state.open.take() {
                    Some((r, acc)) if r == round => acc
                        .finish()
                        .ok_or_else(|| "no update was folded".to_string()),
                    Some((r, acc)) => {
                        state.open = Some((r, acc));
                        Err(format!(
                            "finish for round {round}, aggregator is on round {r}"
                        ))
                    }
                    None => Err(format!("finish for round {round}, no round open")),
                };
                let _ = reply.send(result);
            }
            AggregatorMessage::Abort { round } => {
                if matches!(state.open, Some((r, _)) if r == round) {
                    state.open = None;
                }
            }
        }
        Ok(())
    }
}
