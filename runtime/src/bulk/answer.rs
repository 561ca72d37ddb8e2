//! The dialling side of a bulk link (the silo): answers the coordinator's transfers, one at a
//! time, with what its [`Holder`] keeps.
//!
//! A model that arrives is read straight into its final buffer, hashed frame by frame and kept
//! only if the digest is the one announced; an update is written straight from the buffer the
//! trainer keeps it in. The link idles, without a time limit, between transfers; within one,
//! every frame has `limit` to arrive.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::frame::{read_head, read_values, write_head, write_values, BulkMessage};
use super::BulkError;
pub use crate::protocol::trainer_message::HolderRefusal;
use crate::protocol::ModelRef;

/// What a bulk link reads from and writes to: the silo's trainer.
pub trait Holder: Send + Sync + 'static {
    /// Keeps `values` as `model` (their digest already checked).
    fn store(
        &self,
        model: ModelRef,
        values: Vec<f32>,
    ) -> impl Future<Output = Result<(), HolderRefusal>> + Send;
    /// Round `round`'s update.
    fn update(
        &self,
        round: u64,
    ) -> impl Future<Output = Result<Arc<Vec<f32>>, HolderRefusal>> + Send;
}

/// Limits of the answering side.
#[derive(Debug, Clone, Copy)]
pub struct AnswerLimits {
    /// Time each frame has within a transfer.
    pub frame: Duration,
    /// Largest model accepted, in values.
    pub max_values: u64,
}

/// Answers transfers on `stream` until the link ends (`Ok`: closed between transfers by the
/// other side) or a transfer breaks the protocol (`Err`).
pub async fn answer<S, H>(
    mut stream: S,
    holder: &H,
    limits: AnswerLimits,
    peer: &str,
) -> Result<(), BulkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Holder,
{
    loop {
        let request = match read_head(&mut stream, None, peer).await {
            Ok(r) => r,
            Err(BulkError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let reply = match request {
            BulkMessage::PutModel { model, total } => {
                if total > limits.max_values {
                    // The values would follow; the link cannot be resynchronised.
                    let reason = format!(
                        "a model of {total} values exceeds this silo's limit of {}",
                        limits.max_values
                    );
                    let msg = BulkMessage::Refused {
                        reason: reason.clone(),
                    };
                    let _ = write_head(&mut stream, &msg, limits.frame).await;
                    return Err(BulkError::Refused(reason));
                }
                let mut values = vec![0.0f32; total as usize];
                let digest = read_values(&mut stream, &mut values, limits.frame).await?;
                if digest != model.digest {
                    BulkMessage::Refused {
                        reason: format!(
                            "model v{} does not match its digest {}",
                            model.version,
                            model.digest.short()
                        ),
                    }
                } else {
                    match holder.store(model, values).await {
                        Ok(()) => BulkMessage::Stored,
                        Err(e) => BulkMessage::Refused {
                            reason: e.to_string(),
                        },
                    }
                }
            }
            BulkMessage::FetchUpdate { round, len } => match holder.update(round).await {
                Ok(u) if u.len() as u64 == len => {
                    write_head(&mut stream, &BulkMessage::Update { len }, limits.frame).await?;
                    write_values(&mut stream, &u, limits.frame).await?;
                    continue;
                }
                Ok(u) => BulkMessage::Refused {
                    reason: format!(
                        "round {round}'s update has {} values, {len} were asked for",
                        u.len()
                    ),
                },
                Err(HolderRefusal::AskControl(reason)) => BulkMessage::AskControl { reason },
                Err(HolderRefusal::Refused(reason)) => BulkMessage::Refused { reason },
            },
            other => {
                return Err(BulkError::Unexpected {
                    wanted: "a request",
                    got: other.kind(),
                })
            }
        };
        write_head(&mut stream, &reply, limits.frame).await?;
    }
}
