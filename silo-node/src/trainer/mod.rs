//! The Trainer actor: a silo's only voice in the federation.
//!
//! It answers the coordinator's [`Request`]s (carried as [`TrainerMessage::Rpc`]) and never
//! sends data: the only things that leave are feature sums, the update, its example count and
//! metrics. Training runs on a blocking thread so heartbeats are answered meanwhile; the result
//! comes back as [`TrainerMessage::JobDone`], is stored for `FetchUpdate`, and only then is the
//! coordinator told the update is ready.
//!
//! Every request is decoded here from opaque bytes: a malformed or incompatible frame gets a
//! [`Response::Error`] naming the problem, and the actor keeps serving.
//!
//! | file | concern |
//! |---|---|
//! | `state` | what the trainer was started with and holds; compression of an update |
//! | `models` | models received in chunks, the cache, spec and scaling checks |
//! | `requests` | the answer to each request, now or from a background job; which [`crate::model_trainers`] trainer serves it |
//! | `jobs` | a round's training, scoring (with personalisation) and the local baseline, for any trainer |
//! | `secure` | the silo's side of secure aggregation |
//! | `files` | a described model's pinned files received from the coordinator, and the trainer built once they are in |
//! | `deployment` | a version deployed to this silo: checked, kept on disk, reported with each heartbeat |

mod deployment;
mod files;
mod jobs;
mod models;
mod refusal;
mod requests;
mod secure;
mod state;

#[cfg(test)]
mod tests;

pub use files::AwaitingFiles;
pub use models::MAX_MODEL_VALUES;
pub use state::{LocalData, SiloDpSgd, TrainerArgs, TrainerState};

use fedsilo::protocol::{decode, Request, Response, TrainerMessage};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use requests::{answer, trained, Answer, Training};
use state::{err, reply_with};

/// The Trainer actor.
#[derive(Debug)]
pub struct TrainerActor;

impl Actor for TrainerActor {
    type Msg = TrainerMessage;
    type State = TrainerState;
    type Arguments = TrainerArgs;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: TrainerArgs,
    ) -> Result<TrainerState, ActorProcessingErr> {
        Ok(TrainerState::new(args)?)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut TrainerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TrainerMessage::JobDone {
                update,
                response,
                reply,
                spent,
                training,
            } => job_done(state, update, *response, reply, spent, training),
            TrainerMessage::Store {
                model,
                values,
                reply,
            } => {
                state.args.metrics.request("put_model");
                let _ = reply.send(state.store_whole(model, values));
            }
            TrainerMessage::TakeUpdate { round, reply } => {
                state.args.metrics.request("fetch_update");
                let _ = reply.send(requests::take_update(state, round));
            }
            TrainerMessage::Rpc { frame, reply } => {
                let request = match decode::<Request>(&frame, "coordinator") {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("refusing a request: {e}");
                        reply_with(reply, err(e.to_string()));
                        return Ok(());
                    }
                };
                let kind = request.kind();
                state.args.metrics.request(kind);
                match answer(state, request) {
                    Answer::Now(response) => {
                        if matches!(response, Response::Error { .. }) {
                            state.args.metrics.refused(kind);
                        }
                        reply_with(reply, response);
                    }
                    Answer::Blocking(what, job) => in_background(myself, reply, what, job),
                    Answer::Train(training) => train_in_background(myself, reply, training),
                }
            }
        }
        Ok(())
    }
}

/// A background job finished: its update is kept (compressed if the plan asked), the DP-SGD
/// spend reported, and the coordinator answered.
fn job_done(
    state: &mut TrainerState,
    update: Option<(u64, Vec<f32>)>,
    mut response: Response,
    reply: RpcReplyPort<Vec<u8>>,
    spent: Option<(f64, u64)>,
    training: bool,
) {
    if let (Some(_), Some(cfg), Some(book)) = (spent, &state.args.dp_sgd, &state.book) {
        let (delta, dp) = (cfg.delta, cfg.dp);
        let eps = book.spent(&state.args.name, delta);
        tracing::info!(epsilon = eps, delta, "DP-SGD privacy spent so far");
        println!(
            "silo {}: DP-SGD spent so far: epsilon {eps:.4} at delta {delta} (clip {}, noise multiplier {})",
            state.args.name, dp.clip, dp.noise_multiplier
        );
    }
    if let (true, Some(round)) = (training, state.busy) {
        let outcome = match &response {
            Response::Trained(r) => Some((r.examples, r.train_loss)),
            _ => None,
        };
        state
            .args
            .board
            .report(crate::status::Change::Trained(round, outcome));
    }
    if let (true, Response::Trained(r)) = (training, &response) {
        state.args.metrics.trained(r.train_seconds);
        tracing::info!(
            round = r.round,
            from_version = r.base.version,
            examples = r.examples,
            loss = format_args!("{:.4}", r.train_loss),
            update_bytes = r.update_len * 4,
            seconds = format_args!("{:.2}", r.train_seconds),
            "trained round {}",
            r.round
        );
    }
    if training && matches!(response, Response::Error { .. }) {
        state.args.metrics.refused("train");
    }
    if let Some((round, values)) = update {
        state.encoded = None;
        let values = match state.compress_next.take() {
            Some((r, scheme, seed)) if r == round => {
                state.compress(round, values, scheme, seed, &mut response)
            }
            _ => values,
        };
        state.update = Some((round, Arc::new(values)));
    }
    if training {
        state.busy = None;
    }
    reply_with(reply, response);
}

/// Runs `job` on a blocking thread and answers `reply` with its response through
/// [`TrainerMessage::JobDone`], so the mailbox (and heartbeats) keeps moving meanwhile.
fn in_background(
    myself: ActorRef<TrainerMessage>,
    reply: RpcReplyPort<Vec<u8>>,
    what: &'static str,
    job: impl FnOnce() -> Response + Send + 'static,
) {
    tokio::spawn(async move {
        let response = tokio::task::spawn_blocking(job)
            .await
            .unwrap_or_else(|e| err(format!("{what} failed: {e}")));
        let _ = myself.cast(TrainerMessage::JobDone {
            update: None,
            response: Box::new(response),
            reply,
            spent: None,
            training: false,
        });
    });
}

/// Runs a round's training on a blocking thread (after its delay); the result comes back
/// through [`TrainerMessage::JobDone`].
fn train_in_background(
    myself: ActorRef<TrainerMessage>,
    reply: RpcReplyPort<Vec<u8>>,
    t: Training,
) {
    tokio::spawn(async move {
        if !t.delay.is_zero() {
            tokio::time::sleep(t.delay).await;
        }
        let job = tokio::task::spawn_blocking(t.job).await;
        let (update, response, spent) = trained(t.round, t.masked, job);
        let _ = myself.cast(TrainerMessage::JobDone {
            update,
            response: Box::new(response),
            reply,
            spent,
            training: true,
        });
    });
}
