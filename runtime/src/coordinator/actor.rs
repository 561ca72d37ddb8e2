//! The Coordinator actor: [`recovery`](super::recovery) makes its state at start, and
//! [`handle`](CoordinatorActor::handle) is the one place its messages are matched — each arm
//! hands the message to the concern that owns it, then idle work is started and the status
//! published.

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::deployments;
use super::governance::{apply_decisions, control};
use super::jobs;
use super::lifecycle::{finish, run_over};
use super::membership::{
    check_health, on_ping, on_schema_checked, refresh_aggregators, refresh_membership,
};
use super::messages::{ControlError, CoordinatorMessage};
use super::outcome::on_round;
use super::phase::Phase;
use super::publish::publish;
use super::recovery::recover;
use super::roster;
use super::scaling;
use super::schedule::maybe_start_work;
use super::settings::CoordinatorArgs;
use super::state::CoordinatorState;
use crate::audit::entry::now_ms;
use crate::cluster::TRAINER_GROUP;
use crate::events::Event;

/// The Coordinator actor.
#[derive(Debug)]
pub struct CoordinatorActor;

impl Actor for CoordinatorActor {
    type Msg = CoordinatorMessage;
    type State = CoordinatorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: CoordinatorArgs,
    ) -> Result<CoordinatorState, ActorProcessingErr> {
        let state = recover(args)?;
        ractor::pg::monitor(TRAINER_GROUP.to_string(), myself.get_cell());
        myself.send_interval(state.settings.heartbeat_interval, || {
            CoordinatorMessage::Tick
        });
        publish(&state);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        if state.phase.finished() {
            if let CoordinatorMessage::Control(_, reply) = msg {
                let _ = reply.send(Err(ControlError::Conflict("the run is over".into())));
            }
            return Ok(());
        }
        // Heartbeat answers come N times a period; the next tick publishes what they changed.
        let publish_after = !matches!(msg, CoordinatorMessage::PingResult { .. });
        if step(&myself, msg, state) {
            maybe_start_work(state, &myself).await;
        }
        if publish_after {
            publish(state);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        // Stopped in an orderly way (operator interrupt) during a round: it will never end, so
        // say so now rather than leave it to the next start.
        if let Phase::Round { round, task } = &mut state.phase {
            let round = *round;
            if let Some(t) = task.take() {
                t.abort();
            }
            state.phase = Phase::Ready;
            state
                .ledger
                .abandon(round, "the coordinator was stopped during the round")?;
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(_) = evt {
            if !state.phase.finished() {
                refresh_membership(state);
                maybe_start_work(state, &myself).await;
                publish(state);
            }
        }
        Ok(())
    }
}

/// Hands one message to the concern that owns it; `true` when idle work may start after it
/// (`false`: the run just finished, or the message changes nothing work depends on).
fn step(
    myself: &ActorRef<CoordinatorMessage>,
    msg: CoordinatorMessage,
    state: &mut CoordinatorState,
) -> bool {
    match msg {
        CoordinatorMessage::Tick => {
            refresh_membership(state);
            refresh_aggregators(state);
            check_health(state, myself);
            deployments::deliver_due(state, myself);
            roster::check(state);
            if state.settings.serve {
                let since = state.run.schedule_from_ms;
                if let Err(e) = jobs::submit_due(state, since, now_ms()) {
                    finish(
                        state,
                        myself,
                        Some(format!("cannot queue a scheduled run: {e}")),
                    );
                    return false;
                }
            }
            if !state.phase.busy() {
                if let Err(e) = apply_decisions(state) {
                    finish(state, myself, Some(format!("cannot apply a decision: {e}")));
                    return false;
                }
            }
            true
        }
        CoordinatorMessage::PingResult {
            silo,
            node_id,
            ok,
            seq,
            deployed,
        } => {
            on_ping(state, silo, node_id, ok, seq, deployed);
            false
        }
        CoordinatorMessage::Delivered {
            silo,
            node_id,
            deployment,
            result,
        } => {
            deployments::on_delivered(state, silo, node_id, deployment, result);
            false
        }
        CoordinatorMessage::ScalingDone(outcome) => {
            scaling::on_done(state, outcome);
            let waited = state.run.idle_since.elapsed();
            if state.versions.scaling.is_none() && waited > state.settings.wait_for_silos {
                let why = format!(
                    "feature scaling could not be agreed within {:.0} s",
                    state.settings.wait_for_silos.as_secs_f64()
                );
                run_over(state, myself, Some(why));
                return !state.phase.finished();
            }
            true
        }
        CoordinatorMessage::RoundDone(outcome) => {
            if let Err(e) = on_round(state, *outcome) {
                finish(state, myself, Some(format!("cannot commit: {e}")));
                return false;
            }
            true
        }
        CoordinatorMessage::SchemaChecked {
            silo,
            node_id,
            result,
        } => {
            on_schema_checked(state, silo, node_id, result);
            true
        }
        CoordinatorMessage::ComparisonDone(rows) => {
            let ctx = crate::comparison::RunContext {
                rounds: state.run.rounds_run().unwrap_or(state.run.committed),
                privacy_noise: state.run.noised,
                scores: state.run.scores().iter().map(|s| s.1).collect(),
            };
            let shortfalls = crate::comparison::shortfalls(&rows, &ctx);
            state
                .ledger
                .events
                .emit(Event::Comparison { rows, shortfalls });
            run_over(state, myself, None);
            !state.phase.finished()
        }
        CoordinatorMessage::Control(request, reply) => {
            let answer = control(state, request);
            let failed = match &answer {
                Err(ControlError::Failed(e)) => Some(e.clone()),
                _ => None,
            };
            let _ = reply.send(answer);
            match failed {
                // The journal may say more than the state: stop, a restart reconciles.
                Some(e) => {
                    finish(state, myself, Some(e));
                    false
                }
                None => true,
            }
        }
    }
}
