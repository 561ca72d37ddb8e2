//! Chunked transfer of models and a described model's pinned files (coordinator → silo) and
//! updates (silo → coordinator), so no frame exceeds the cluster's frame limit whatever the
//! model size.

use std::time::Duration;

use ractor::ActorRef;

use super::trainer_message::call_bytes;
use super::{call, decode, encode, ModelRef, Request, Response, TrainerMessage};
use crate::{Error, Result};

/// Default number of `f32` values per chunk (4 MiB of payload).
pub const DEFAULT_CHUNK_VALUES: usize = 1 << 20;

/// The error for an answer of another kind than the request calls for.
pub fn unexpected(peer: &str, wanted: &str, got: &Response) -> Error {
    Error::Protocol {
        peer: peer.to_string(),
        message: format!("expected {wanted}, got {}", got.kind()),
    }
}

/// Sends `params` as `model` to a trainer in chunks of `chunk` values.
pub async fn put_model(
    trainer: &ActorRef<TrainerMessage>,
    model: ModelRef,
    params: &[f32],
    chunk: usize,
    timeout: Duration,
    peer: &str,
) -> Result<()> {
    let chunk = chunk.max(1);
    let total = params.len() as u64;
    let mut offset = 0usize;
    loop {
        let end = (offset + chunk).min(params.len());
        let req = Request::PutModel {
            model,
            offset: offset as u64,
            total,
            values: params[offset..end].to_vec(),
        };
        match call(trainer, &req, timeout, peer).await? {
            Response::ModelChunkStored { received } if received == end as u64 => {}
            Response::ModelChunkStored { received } => {
                return Err(Error::Protocol {
                    peer: peer.to_string(),
                    message: format!("silo holds {received} values of the model, expected {end}"),
                })
            }
            other => return Err(unexpected(peer, "ModelChunkStored", &other)),
        }
        offset = end;
        if offset >= params.len() {
            return Ok(());
        }
    }
}

/// Makes sure a trainer holds `model`: asks, and sends it only if it does not.
pub async fn ensure_model(
    trainer: &ActorRef<TrainerMessage>,
    model: ModelRef,
    params: &[f32],
    chunk: usize,
    timeout: Duration,
    peer: &str,
) -> Result<()> {
    match call(trainer, &Request::Holds { model }, timeout, peer).await? {
        Response::Holds { held: true } => Ok(()),
        Response::Holds { held: false } => {
            put_model(trainer, model, params, chunk, timeout, peer).await
        }
        other => Err(unexpected(peer, "Holds", &other)),
    }
}

/// Why a file did not reach a silo: the silo refused it (its digest check, its disk: sending
/// again would not help), or the transfer failed (try again), or the file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileSendError {
    /// The silo refused a chunk; its reason.
    #[error("{0}")]
    Refused(String),
    /// The session failed or timed out.
    #[error(transparent)]
    Transit(Error),
    /// The coordinator's copy could not be read.
    #[error(transparent)]
    Read(Error),
}

/// Sends the file at `path` (`total` bytes, pinned with `sha256`) to a trainer from byte
/// `from` (where a cut transfer stopped; 0 for a whole file) in chunks of
/// [`FILE_CHUNK_BYTES`](crate::model::files::FILE_CHUNK_BYTES), read from disk one at a time.
/// Each chunk must arrive within `timeout`.
pub async fn put_file(
    trainer: &ActorRef<TrainerMessage>,
    sha256: &str,
    path: &std::path::Path,
    (from, total): (u64, u64),
    timeout: Duration,
    peer: &str,
) -> std::result::Result<(), FileSendError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io = |source: std::io::Error| {
        FileSendError::Read(Error::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })
    };
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut offset = if from < total { from } else { 0 };
    file.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(io)?;
    loop {
        let want = (total - offset).min(crate::model::files::FILE_CHUNK_BYTES as u64) as usize;
        let mut bytes = vec![0u8; want];
        file.read_exact(&mut bytes).await.map_err(io)?;
        let req = Request::PutFile {
            sha256: sha256.to_string(),
            offset,
            total,
            bytes,
        };
        let end = offset + want as u64;
        let answer = call_bytes(trainer, encode(&req), timeout, peer, |frame, reply| {
            TrainerMessage::Rpc { frame, reply }
        })
        .await
        .and_then(|b| decode::<Response>(&b, peer))
        .map_err(FileSendError::Transit)?;
        match answer {
            Response::FileChunkStored { received } if received == end => {}
            Response::FileChunkStored { received } => {
                return Err(FileSendError::Refused(format!(
                    "it holds {received} bytes of the file, expected {end}"
                )))
            }
            Response::Error { message } => return Err(FileSendError::Refused(message)),
            other => {
                return Err(FileSendError::Refused(format!(
                    "it answered {} to a chunk of the file",
                    other.kind()
                )))
            }
        }
        offset = end;
        if offset >= total {
            return Ok(());
        }
    }
}

/// Fetches a silo's update of `len` values for `round` in chunks of `chunk` values.
pub async fn fetch_update(
    trainer: &ActorRef<TrainerMessage>,
    round: u64,
    len: usize,
    chunk: usize,
    timeout: Duration,
    peer: &str,
) -> Result<Vec<f32>> {
    let chunk = chunk.max(1);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let want = chunk.min(len - out.len());
        let req = Request::FetchUpdate {
            round,
            offset: out.len() as u64,
            len: want as u64,
        };
        match call(trainer, &req, timeout, peer).await? {
            Response::UpdateChunk { values } if values.len() == want => {
                out.extend_from_slice(&values)
            }
            Response::UpdateChunk { values } => {
                return Err(Error::Protocol {
                    peer: peer.to_string(),
                    message: format!("update chunk has {} values, asked for {want}", values.len()),
                })
            }
            // Decoded as it arrives: the aggregator only ever sees values.
            Response::CompressedChunk(c) => {
                let values = c
                    .decode(out.len() as u64, want)
                    .map_err(|e| Error::Protocol {
                        peer: peer.to_string(),
                        message: format!("compressed update chunk at value {}: {e}", out.len()),
                    })?;
                out.extend_from_slice(&values);
            }
            other => return Err(unexpected(peer, "UpdateChunk", &other)),
        }
    }
    Ok(out)
}
