//! The coordinator ↔ regional aggregator conversation (residency).
//!
//! A regional aggregator combines the updates of the silos routed to it, fetching each update
//! over its *own* session with the silo, so the update never passes through a node outside the
//! regions the policy allows. It re-checks every update against the policy with the silo's
//! certificate region and refuses (and records) one that should not have reached it. Only the
//! regional aggregate, and only if it combines at least `residency.min_regional_silos` silos,
//! travels on to the coordinator.

use std::time::Duration;

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{ActorRef, Message, RpcReplyPort};
use serde::{Deserialize, Serialize};

use super::trainer_message::{call_bytes, rpc_from_serialized, rpc_to_serialized};
use super::{decode, encode, ModelRef, TrainReport};
use crate::model::Digest;
use crate::{Error, Result};

/// A regional aggregator node: its certificate name and region, and its actor (remote).
#[derive(Debug, Clone)]
pub struct RegionalHandle {
    /// Name from its verified certificate.
    pub name: String,
    /// Region from its verified certificate.
    pub region: String,
    /// Its regional aggregator actor.
    pub actor: ActorRef<RegionalMessage>,
}

/// A request from the coordinator to a regional aggregator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RegionalRequest {
    /// Open a round.
    Begin {
        /// Round number.
        round: u64,
        /// The base model dispatched.
        base: ModelRef,
        /// Model parameters.
        len: u64,
        /// The policy in force, as text (the aggregator checks it with its own parser).
        policy: String,
        /// The kernel: name, trim, byzantine, keep (as in `[aggregation]`).
        kernel: (String, Option<f64>, Option<usize>, Option<usize>),
        /// Clip each update to this norm first.
        clip_norm: Option<f64>,
    },
    /// Fetch, check and add `silo`'s update, which it reported with `report`.
    Collect {
        /// Round number.
        round: u64,
        /// The silo (certificate name).
        silo: String,
        /// What the silo reported to the coordinator.
        report: TrainReport,
        /// Time left for the fetch, milliseconds.
        timeout_ms: u64,
    },
    /// Close the round: combine what was added.
    Finish {
        /// Round number.
        round: u64,
    },
    /// A chunk of the round's regional aggregate.
    Fetch {
        /// Round number.
        round: u64,
        /// First value.
        offset: u64,
        /// Number of values.
        len: u64,
    },
}

/// A regional aggregator's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RegionalResponse {
    /// `Begin` done.
    Begun,
    /// The update was admitted.
    Collected,
    /// The update was refused (residency or admission), with the reason.
    Refused {
        /// Why.
        reason: String,
    },
    /// The round's regional aggregate is ready.
    Summary {
        /// Silos it combines.
        silos: Vec<String>,
        /// Their total weight (examples).
        weight: f64,
        /// Its digest.
        digest: Digest,
    },
    /// Values of the aggregate.
    Chunk {
        /// The values.
        values: Vec<f32>,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// Messages of the regional aggregator actor. Only `Rpc` crosses the network.
#[derive(Debug)]
pub enum RegionalMessage {
    /// An encoded [`RegionalRequest`]; the reply is an encoded [`RegionalResponse`].
    Rpc {
        /// Encoded request.
        frame: Vec<u8>,
        /// Where the encoded response goes.
        reply: RpcReplyPort<Vec<u8>>,
    },
}

impl Message for RegionalMessage {
    fn serializable() -> bool {
        true
    }
    fn serialize(self) -> std::result::Result<SerializedMessage, BoxedDowncastErr> {
        let RegionalMessage::Rpc { frame, reply } = self;
        Ok(rpc_to_serialized(frame, reply))
    }
    fn deserialize(bytes: SerializedMessage) -> std::result::Result<Self, BoxedDowncastErr> {
        rpc_from_serialized(bytes)
            .map(|(frame, reply)| RegionalMessage::Rpc { frame, reply })
            .ok_or(BoxedDowncastErr)
    }
}

/// Sends `request` to a regional aggregator; a [`RegionalResponse::Error`] becomes an error.
pub async fn call_regional(
    actor: &ActorRef<RegionalMessage>,
    request: &RegionalRequest,
    timeout: Duration,
    peer: &str,
) -> Result<RegionalResponse> {
    let bytes = call_bytes(actor, encode(request), timeout, peer, |frame, reply| {
        RegionalMessage::Rpc { frame, reply }
    })
    .await?;
    match decode::<RegionalResponse>(&bytes, peer)? {
        RegionalResponse::Error { message } => Err(Error::Call {
            peer: peer.to_string(),
            message,
        }),
        r => Ok(r),
    }
}
