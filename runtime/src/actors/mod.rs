//! # The coordinator-side actors
//!
//! One file per actor (the Coordinator, larger, has a folder of its own: [`crate::coordinator`]); each owns its state and nothing else, and its messages are the enum
//! beside it.
//!
//! - [`aggregator`] — folds admitted updates into the round's kernel (streaming FedAvg).
//! - [`validator`] — evaluates a candidate at the silos and says accept or reject.
//! - [`policy`] — hosts the policy's pure rules and logs every verdict.
//!
//! The trainer actor lives in the `silo-node` crate; its message type, the one that crosses
//! the network, is [`crate::protocol::TrainerMessage`].

pub mod aggregator;
pub mod policy;
pub mod regional;
pub mod update_values;
pub mod validator;

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};

use crate::{Error, Result};

/// How long a local actor may take to answer a local request before it is considered stuck.
pub const LOCAL_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Asks a local actor and waits for the answer (bounded by [`LOCAL_CALL_TIMEOUT`]).
pub async fn ask<M: Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    what: &str,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T> {
    ask_within(actor, what, LOCAL_CALL_TIMEOUT, build).await
}

/// Asks a local actor and waits at most `timeout` for the answer (for work, such as
/// validation, that is itself bounded by a longer deadline).
pub async fn ask_within<M: Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    what: &str,
    timeout: Duration,
    build: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T> {
    match actor.call(build, Some(timeout)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(Error::Cluster(format!(
            "{what}: no answer within {timeout:?}"
        ))),
        Ok(CallResult::SenderError) => {
            Err(Error::Cluster(format!("{what}: actor dropped the request")))
        }
        Err(e) => Err(Error::Cluster(format!("{what}: {e}"))),
    }
}
