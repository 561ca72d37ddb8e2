//! The platform team's own actor: a drift monitor. It follows the federation's round events
//! and, when a silo's update norm jumps far above its own history (a shifted data feed, a
//! broken pipeline, a poisoned trainer), pauses the whole federation through the same control
//! the admin API uses, naming the silo, so that a person looks before the next round.

use std::collections::{BTreeMap, BTreeSet};

use fedsilo::control::FederationControl;
use fedsilo::events::Event;
use fedsilo_policies::admission::median;
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// Messages of the drift monitor.
#[derive(Debug)]
pub enum DriftMessage {
    /// Something happened in the federation (fed from the event stream).
    Event(Box<Event>),
}

// Local only: never sent to another node.
impl ractor::Message for DriftMessage {}

/// Start-up arguments.
pub struct DriftArgs {
    /// The federation to pause.
    pub control: FederationControl,
    /// A norm this many times the silo's median so far is drift.
    pub factor: f64,
    /// Rounds of a silo's history before it is judged.
    pub warmup: usize,
}

/// Its state: each silo's update norms so far, and the silos already reported.
pub struct DriftState {
    args: DriftArgs,
    norms: BTreeMap<String, Vec<f64>>,
    reported: BTreeSet<String>,
}

/// The actor.
pub struct DriftMonitor;

impl Actor for DriftMonitor {
    type Msg = DriftMessage;
    type State = DriftState;
    type Arguments = DriftArgs;

    async fn pre_start(
        &self,
        _: ActorRef<DriftMessage>,
        args: DriftArgs,
    ) -> Result<DriftState, ActorProcessingErr> {
        Ok(DriftState {
            args,
            norms: BTreeMap::new(),
            reported: BTreeSet::new(),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<DriftMessage>,
        msg: DriftMessage,
        state: &mut DriftState,
    ) -> Result<(), ActorProcessingErr> {
        let DriftMessage::Event(event) = msg;
        let Event::RoundCommitted(round) = *event else {
            return Ok(());
        };
        for (silo, norm) in &round.update_norms {
            let history = state.norms.entry(silo.clone()).or_default();
            if history.len() >= state.args.warmup && !state.reported.contains(silo) {
                let usual = median(history);
                if *norm > state.args.factor * usual {
                    state.reported.insert(silo.clone());
                    let reason = format!(
                        "drift at {silo}: its round-{} update norm {norm:.2} is {:.0}× its median {usual:.3}; check its data feed before resuming",
                        round.round,
                        norm / usual
                    );
                    match state.args.control.pause("drift-monitor", &reason).await {
                        Ok(_) => println!("drift monitor: paused the federation: {reason}"),
                        Err(e) => println!("drift monitor: could not pause: {e}"),
                    }
                }
            }
            history.push(*norm);
        }
        Ok(())
    }
}
