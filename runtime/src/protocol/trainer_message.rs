//! The trainer actor's message type: the one message type that crosses the network.

use std::time::Duration;

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{ActorRef, Message, RpcReplyPort};

use super::{decode, encode, Request, Response};
use crate::{Error, Result};

const RPC_VARIANT: &str = "fedsilo.rpc";

/// Why a silo's trainer will not keep a model or send an update over the bulk data plane.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HolderRefusal {
    /// Refused; the reason goes to the coordinator.
    #[error("{0}")]
    Refused(String),
    /// The update exists but leaves another way (compressed, masked): the coordinator is told
    /// to ask on the control plane.
    #[error("{0}")]
    AskControl(String),
}

/// Messages of a silo's trainer actor.
///
/// Only [`TrainerMessage::Rpc`] travels between nodes. Its payload is an opaque encoded frame so
/// that ractor never decodes it: the actor decodes it itself and answers a malformed or
/// incompatible frame with an encoded [`Response::Error`].
#[derive(Debug)]
pub enum TrainerMessage {
    /// A request from the coordinator: an encoded [`Request`]; the reply is an encoded
    /// [`Response`].
    Rpc {
        /// Encoded request frame.
        frame: Vec<u8>,
        /// Where the encoded response goes (back over the same session).
        reply: RpcReplyPort<Vec<u8>>,
    },
    /// Local only: a background job (training, local baseline) finished. The actor stores the
    /// update, if any, then sends `response` on `reply`.
    JobDone {
        /// `(round, update)` to keep for `FetchUpdate`.
        update: Option<(u64, Vec<f32>)>,
        /// The response to send.
        response: Box<Response>,
        /// Where to send it.
        reply: RpcReplyPort<Vec<u8>>,
        /// Record-level DP-SGD the job ran, for the silo's own accountant: (sampling rate, steps).
        spent: Option<(f64, u64)>,
        /// Whether this was the round's training job (which frees the trainer for the next);
        /// scoring and baselines run beside it.
        training: bool,
    },
    /// Local only: a whole model arrived over the bulk data plane, its digest checked; keep it
    /// as a `PutModel` would.
    Store {
        /// The model.
        model: super::ModelRef,
        /// Its values.
        values: Vec<f32>,
        /// `Ok`, or why the trainer will not keep it.
        reply: RpcReplyPort<std::result::Result<(), HolderRefusal>>,
    },
    /// Local only: the bulk data plane asks for round `round`'s update.
    TakeUpdate {
        /// The round.
        round: u64,
        /// The update (shared, not copied), or why it is not served there.
        reply: RpcReplyPort<std::result::Result<std::sync::Arc<Vec<f32>>, HolderRefusal>>,
    },
}

impl Message for TrainerMessage {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> std::result::Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            TrainerMessage::Rpc { frame, reply } => Ok(rpc_to_serialized(frame, reply)),
            TrainerMessage::JobDone { .. }
            | TrainerMessage::Store { .. }
            | TrainerMessage::TakeUpdate { .. } => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(bytes: SerializedMessage) -> std::result::Result<Self, BoxedDowncastErr> {
        rpc_from_serialized(bytes)
            .map(|(frame, reply)| TrainerMessage::Rpc { frame, reply })
            .ok_or(BoxedDowncastErr)
    }
}

/// Sends an encoded request `frame` to a remote actor (wrapped by `wrap` into its message
/// type) and waits at most `timeout` for the encoded response.
pub async fn call_bytes<M: Message>(
    actor: &ActorRef<M>,
    frame: Vec<u8>,
    timeout: Duration,
    peer: &str,
    wrap: impl FnOnce(Vec<u8>, RpcReplyPort<Vec<u8>>) -> M,
) -> Result<Vec<u8>> {
    let gone = || Error::PeerGone {
        peer: peer.to_string(),
    };
    match actor
        .call(|reply| wrap(frame, reply), Some(timeout))
        .await
        .map_err(|_| gone())?
    {
        ractor::rpc::CallResult::Success(b) => Ok(b),
        ractor::rpc::CallResult::Timeout => Err(Error::Call {
            peer: peer.to_string(),
            message: format!("no answer within {timeout:?}"),
        }),
        ractor::rpc::CallResult::SenderError => Err(gone()),
    }
}

/// The serialized form of an RPC frame (for `Message::serialize` of wire message types).
pub fn rpc_to_serialized(frame: Vec<u8>, reply: RpcReplyPort<Vec<u8>>) -> SerializedMessage {
    SerializedMessage::Call {
        variant: RPC_VARIANT.to_string(),
        args: frame,
        reply,
        metadata: None,
    }
}

/// The RPC frame in a serialized message, if it is one (for `Message::deserialize`).
pub fn rpc_from_serialized(bytes: SerializedMessage) -> Option<(Vec<u8>, RpcReplyPort<Vec<u8>>)> {
    match bytes {
        SerializedMessage::Call {
            variant,
            args,
            reply,
            ..
        } if variant == RPC_VARIANT => Some((args, reply)),
        _ => None,
    }
}

/// Sends `request` to a trainer and waits at most `timeout` for its response. `peer` names the
/// silo in errors. A [`Response::Error`] from the silo becomes an [`Error::Call`].
pub async fn call(
    trainer: &ActorRef<TrainerMessage>,
    request: &Request,
    timeout: Duration,
    peer: &str,
) -> Result<Response> {
    let bytes = call_bytes(trainer, encode(request), timeout, peer, |frame, reply| {
        TrainerMessage::Rpc { frame, reply }
    })
    .await?;
    match decode::<Response>(&bytes, peer)? {
        Response::Error { message } => Err(Error::Call {
            peer: peer.to_string(),
            message,
        }),
        r => Ok(r),
    }
}
