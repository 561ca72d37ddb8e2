//! The Aggregator actor: holds one round's updates and combines them with the federation's
//! kernel. The weighted mean folds each update in as it arrives (O(model) memory whatever the
//! number of silos); robust kernels need every update, so they are kept until the round ends.
//! With `clip_norm`, each update is clipped to that L2 norm before anything else.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::kernels::clip::clip_l2;
use crate::kernels::{Aggregation, Kernel, WeightedMean};

/// What a round's combination produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The combined update.
    pub values: Vec<f32>,
    /// Silos whose updates a selecting kernel (Krum family, Bulyan) kept, in fold order.
    pub selected: Option<Vec<String>>,
    /// Silos whose updates were clipped, with their original norm.
    pub clipped: Vec<(String, f64)>,
}

/// Messages of the Aggregator actor.
#[derive(Debug)]
pub enum AggregatorMessage {
    /// Start a round: fresh state for updates of `len` values combined as `aggregation` says
    /// (any previous round's state is discarded).
    Begin {
        /// Round number.
        round: u64,
        /// Values per update.
        len: usize,
        /// Kernel and clipping.
        aggregation: Aggregation,
    },
    /// Add one admitted update with its weight (example count). Replies with the refusal
    /// reason if it cannot be taken (wrong round, length, non-finite values).
    Fold {
        /// Round number; must be the current one.
        round: u64,
        /// Silo, for the record.
        silo: String,
        /// The update.
        update: Vec<f32>,
        /// Its weight.
        weight: f64,
        /// `Ok` or the reason.
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// End the round: combine what was added.
    Finish {
        /// Round number.
        round: u64,
        /// The aggregate, or why there is none (e.g. too few updates for Bulyan's f).
        reply: RpcReplyPort<Result<Aggregate, String>>,
    },
    /// Discard the round's state.
    Abort {
        /// Round number.
        round: u64,
    },
}

impl ractor::Message for AggregatorMessage {}

/// The Aggregator actor.
#[derive(Debug)]
pub struct AggregatorActor;

#[derive(Debug)]
enum Held {
    Streaming(WeightedMean),
    Buffered(Vec<Vec<f32>>, Vec<f64>),
}

#[derive(Debug)]
struct OpenRound {
    round: u64,
    len: usize,
    aggregation: Aggregation,
    held: Held,
    silos: Vec<String>,
    clipped: Vec<(String, f64)>,
}

/// Its state: the open round, if any.
#[derive(Debug, Default)]
pub struct AggregatorState {
    open: Option<OpenRound>,
}

impl OpenRound {
    fn add(&mut self, silo: String, mut update: Vec<f32>, weight: f64) -> Result<(), String> {
        if update.len() != self.len {
            return Err(format!(
                "update has {} values, the model has {}",
                update.len(),
                self.len
            ));
        }
        if let Some(index) = update.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "update value {index} is {} (not finite)",
                update[index]
            ));
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(format!("weight {weight} must be a positive number"));
        }
        if let Some(c) = self.aggregation.clip_norm {
            let norm = clip_l2(&mut update, c);
            if norm > c {
                self.clipped.push((silo.clone(), norm));
            }
        }
        match &mut self.held {
            Held::Streaming(acc) => acc.fold(&update, weight).map_err(|e| e.to_string())?,
            Held::Buffered(ups, ws) => {
                ups.push(update);
                ws.push(weight);
            }
        }
        self.silos.push(silo);
        Ok(())
    }

    fn finish(self) -> Result<Aggregate, String> {
        let (values, selected) = match self.held {
            Held::Streaming(acc) => (acc.finish().ok_or("no update was added")?, None),
            Held::Buffered(ups, ws) => {
                let views: Vec<&[f32]> = ups.iter().map(|u| u.as_slice()).collect();
                let c = self
                    .aggregation
                    .kernel
                    .combine(&views, &ws)
                    .map_err(|e| e.to_string())?;
                let names = c
                    .selected
                    .map(|sel| sel.into_iter().map(|i| self.silos[i].clone()).collect());
                (c.values, names)
            }
        };
        Ok(Aggregate {
            values,
            selected,
            clipped: self.clipped,
        })
    }
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
            AggregatorMessage::Begin {
                round,
                len,
                aggregation,
            } => {
                let held = match aggregation.kernel {
                    Kernel::Mean => Held::Streaming(WeightedMean::new(len)),
                    _ => Held::Buffered(Vec::new(), Vec::new()),
                };
                state.open = Some(OpenRound {
                    round,
                    len,
                    aggregation,
                    held,
                    silos: Vec::new(),
                    clipped: Vec::new(),
                });
            }
            AggregatorMessage::Fold {
                round,
                silo,
                update,
                weight,
                reply,
            } => {
                let result = match &mut state.open {
                    Some(o) if o.round == round => o.add(silo.clone(), update, weight),
                    Some(o) => Err(format!(
                        "update for round {round}, aggregator is on round {}",
                        o.round
                    )),
                    None => Err(format!("update for round {round}, no round open")),
                };
                tracing::debug!(round, silo, weight, ok = result.is_ok(), "aggregator: add");
                let _ = reply.send(result);
            }
            AggregatorMessage::Finish { round, reply } => {
                let result = match state.open.take() {
                    Some(o) if o.round == round => {
                        let kernel = o.aggregation.kernel.describe();
                        let r = tokio::task::spawn_blocking(move || o.finish())
                            .await
                            .unwrap_or_else(|e| Err(format!("kernel failed: {e}")));
                        tracing::info!(round, kernel, ok = r.is_ok(), "aggregator: combined");
                        r
                    }
                    Some(o) => {
                        let r = o.round;
                        state.open = Some(o);
                        Err(format!(
                            "finish for round {round}, aggregator is on round {r}"
                        ))
                    }
                    None => Err(format!("finish for round {round}, no round open")),
                };
                let _ = reply.send(result);
            }
            AggregatorMessage::Abort { round } => {
                if state.open.as_ref().is_some_and(|o| o.round == round) {
                    state.open = None;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn robust_kernels_hold_updates_and_clip_first() {
        let (a, _) = Actor::spawn(None, AggregatorActor, ()).await.unwrap();
        let aggregation = Aggregation {
            kernel: Kernel::Median,
            clip_norm: Some(1.0),
            server_optimizer: None,
        };
        a.cast(AggregatorMessage::Begin {
            round: 1,
            len: 1,
            aggregation,
        })
        .unwrap();
        for (s, v) in [("a", 0.2f32), ("b", 0.4), ("c", 50.0)] {
            let r = ractor::call!(a, |reply| AggregatorMessage::Fold {
                round: 1,
                silo: s.into(),
                update: vec![v],
                weight: 1.0,
                reply
            })
            .unwrap();
            assert!(r.is_ok());
        }
        let bad = ractor::call!(a, |reply| AggregatorMessage::Fold {
            round: 1,
            silo: "d".into(),
            update: vec![f32::NAN],
            weight: 1.0,
            reply
        })
        .unwrap();
        assert!(bad.unwrap_err().contains("not finite"));
        let g = ractor::call!(a, |reply| AggregatorMessage::Finish { round: 1, reply })
            .unwrap()
            .unwrap();
        assert_eq!(g.values, vec![0.4]);
        assert_eq!(g.clipped, vec![("c".to_string(), 50.0)]);
    }
}
