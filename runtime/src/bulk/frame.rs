//! Frames of the bulk data plane: a header of five bytes — the payload's length (u32, little
//! endian) and its kind — then the payload. A [`Kind::Head`] frame carries one encoded
//! [`BulkMessage`] (the wire protocol's codec: magic, version, bincode); [`Kind::Data`] frames
//! carry values as raw little-endian `f32` bytes, read straight into their destination and
//! written straight from their source — no encoding pass, no per-value work, no buffer between
//! the TLS library and the model.
//!
//! Every read is bounded: a head frame by [`MAX_HEAD_BYTES`], a data frame to exactly
//! [`FRAME_VALUES`] values (the last: what the transfer still expects), each frame by a time
//! limit (a slow or endless body ends the transfer, not the process).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::BulkError;
use crate::model::Digest;
use crate::protocol::{decode, encode, ModelRef};

#[cfg(not(target_endian = "little"))]
compile_error!("the bulk data plane sends f32 values as their in-memory (little-endian) bytes");

/// Largest head frame accepted.
pub const MAX_HEAD_BYTES: u32 = 64 * 1024;
/// Values per data frame sent (1 MiB of payload: large enough that framing costs nothing, small
/// enough that a receiver folds or hashes each frame while it is in cache).
pub const FRAME_VALUES: usize = 256 * 1024;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// One encoded [`BulkMessage`].
    Head = 1,
    /// Raw `f32` values.
    Data = 2,
}

/// The messages of the bulk data plane. The side that accepted the link (the coordinator)
/// asks; the side that dialled it (the silo) answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BulkMessage {
    /// The values of `model` follow, `total` of them, in data frames.
    PutModel {
        /// The model (its digest is checked once all values are in).
        model: ModelRef,
        /// Number of values.
        total: u64,
    },
    /// Send round `round`'s update, which has `len` values.
    FetchUpdate {
        /// Round number.
        round: u64,
        /// Values expected.
        len: u64,
    },
    /// Answer to `PutModel`: the model is held.
    Stored,
    /// Answer to `FetchUpdate`: the `len` values follow in data frames.
    Update {
        /// Number of values.
        len: u64,
    },
    /// This is not for the data plane (e.g. a compressed or masked update): ask on the
    /// control plane. Nothing follows.
    AskControl {
        /// Why.
        reason: String,
    },
    /// Refused; nothing follows.
    Refused {
        /// Why.
        reason: String,
    },
}

impl BulkMessage {
    /// The variant's name, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            BulkMessage::PutModel { .. } => "PutModel",
            BulkMessage::FetchUpdate { .. } => "FetchUpdate",
            BulkMessage::Stored => "Stored",
            BulkMessage::Update { .. } => "Update",
            BulkMessage::AskControl { .. } => "AskControl",
            BulkMessage::Refused { .. } => "Refused",
        }
    }
}

async fn within<T>(
    limit: Duration,
    what: &'static str,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, BulkError> {
    match tokio::time::timeout(limit, io).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BulkError::Io(e)),
        Err(_) => Err(BulkError::Slow { what, limit }),
    }
}

async fn read_header<S: AsyncRead + Unpin>(
    s: &mut S,
    limit: Option<Duration>,
) -> Result<(Kind, u32), BulkError> {
    let mut h = [0u8; 5];
    match limit {
        Some(limit) => {
            within(limit, "a frame header", s.read_exact(&mut h)).await?;
        }
        None => {
            s.read_exact(&mut h).await.map_err(BulkError::Io)?;
        }
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let kind = match h[4] {
        1 => Kind::Head,
        2 => Kind::Data,
        k => return Err(BulkError::Malformed(format!("unknown frame kind {k}"))),
    };
    Ok((kind, len))
}

/// Writes `msg` as a head frame.
pub async fn write_head<S: AsyncWrite + Unpin>(
    s: &mut S,
    msg: &BulkMessage,
    limit: Duration,
) -> Result<(), BulkError> {
    let body = encode(msg);
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.push(Kind::Head as u8);
    frame.extend_from_slice(&body);
    within(limit, "sending a message", async {
        s.write_all(&frame).await?;
        s.flush().await
    })
    .await
}

/// Reads one head frame from `peer`. `limit`: how long it may take (`None`: wait as long as
/// the link lives — a link waits idle between transfers).
pub async fn read_head<S: AsyncRead + Unpin>(
    s: &mut S,
    limit: Option<Duration>,
    peer: &str,
) -> Result<BulkMessage, BulkError> {
    let (kind, len) = read_header(s, limit).await?;
    if kind != Kind::Head {
        return Err(BulkError::Malformed(format!(
            "a data frame of {len} bytes where a message was due"
        )));
    }
    if len > MAX_HEAD_BYTES {
        return Err(BulkError::Malformed(format!(
            "a message of {len} bytes (at most {MAX_HEAD_BYTES})"
        )));
    }
    let mut body = vec![0u8; len as usize];
    within(
        limit.unwrap_or(Duration::from_secs(60)),
        "a message",
        s.read_exact(&mut body),
    )
    .await?;
    decode(&body, peer).map_err(|e| BulkError::Malformed(e.to_string()))
}

/// Writes `values` as data frames of [`FRAME_VALUES`], each within `limit`.
pub async fn write_values<S: AsyncWrite + Unpin>(
    s: &mut S,
    values: &[f32],
    limit: Duration,
) -> Result<(), BulkError> {
    for chunk in values.chunks(FRAME_VALUES) {
        let bytes: &[u8] = bytemuck::cast_slice(chunk);
        let mut header = [0u8; 5];
        header[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        header[4] = Kind::Data as u8;
        within(limit, "sending values", async {
            s.write_all(&header).await?;
            s.write_all(bytes).await
        })
        .await?;
    }
    within(limit, "sending values", s.flush()).await
}

/// Checks a data frame's header against what is still due (`left` bytes); its value count.
fn data_frame(kind: Kind, len: u32, left: usize) -> Result<usize, BulkError> {
    if kind != Kind::Data {
        return Err(BulkError::Malformed(format!(
            "a message where {left} more bytes of values were due"
        )));
    }
    // Every frame is full but the last: a peer cannot make a transfer cost a frame per value.
    let due = left.min(FRAME_VALUES * 4);
    if len as usize != due {
        return Err(BulkError::Malformed(format!(
            "a data frame of {len} bytes where {due} were due ({left} bytes of values left, frames of {} values but the last)",
            FRAME_VALUES
        )));
    }
    Ok(len as usize / 4)
}

/// Reads `total` values in data frames, each within `limit`, handing each frame's values to
/// `sink` as it arrives (one frame's buffer, reused); returns the SHA-256 of their bytes.
pub async fn read_values_with<S: AsyncRead + Unpin>(
    s: &mut S,
    total: usize,
    limit: Duration,
    mut sink: impl FnMut(&[f32]) -> std::io::Result<()>,
) -> Result<Digest, BulkError> {
    let mut hash = Sha256::new();
    let mut buf: Vec<f32> = Vec::new();
    let mut done = 0usize;
    while done < total {
        let (kind, len) = read_header(s, Some(limit)).await?;
        let n = data_frame(kind, len, (total - done) * 4)?;
        buf.resize(n, 0.0);
        let into: &mut [u8] = bytemuck::cast_slice_mut(&mut buf[..]);
        within(limit, "values", s.read_exact(into)).await?;
        hash.update(&*into);
        sink(&buf).map_err(BulkError::Sink)?;
        done += n;
    }
    Ok(Digest(hash.finalize().into()))
}

/// Reads data frames into `dest` until it is full, each frame within `limit`, and returns the
/// SHA-256 of the values' bytes (computed frame by frame, while each is in cache). A frame that
/// is not data, is not whole values, or overruns `dest` is an error.
pub async fn read_values<S: AsyncRead + Unpin>(
    s: &mut S,
    dest: &mut [f32],
    limit: Duration,
) -> Result<Digest, BulkError> {
    let mut hash = Sha256::new();
    let mut filled = 0usize;
    while filled < dest.len() {
        let (kind, len) = read_header(s, Some(limit)).await?;
        let n = data_frame(kind, len, (dest.len() - filled) * 4)?;
        let into: &mut [u8] = bytemuck::cast_slice_mut(&mut dest[filled..filled + n]);
        within(limit, "values", s.read_exact(into)).await?;
        hash.update(&*into);
        filled += n;
    }
    Ok(Digest(hash.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn values_round_trip_with_their_digest() {
        let values: Vec<f32> = (0..(FRAME_VALUES * 2 + 17))
            .map(|i| i as f32 * 0.5)
            .collect();
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let sent = values.clone();
        let writer = tokio::spawn(async move {
            write_head(&mut a, &BulkMessage::Update { len: 3 }, T)
                .await
                .unwrap();
            write_values(&mut a, &sent, T).await.unwrap();
        });
        assert_eq!(
            read_head(&mut b, Some(T), "p").await.unwrap(),
            BulkMessage::Update { len: 3 }
        );
        let mut got = vec![0.0f32; values.len()];
        let digest = read_values(&mut b, &mut got, T).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, values);
        assert_eq!(digest, Digest::of_f32(&values));
    }

    async fn raw(bytes: Vec<u8>) -> tokio::io::DuplexStream {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        a.write_all(&bytes).await.unwrap();
        // `a` is dropped: the reader sees the end after these bytes.
        b
    }

    fn header(len: u32, kind: u8) -> Vec<u8> {
        let mut h = len.to_le_bytes().to_vec();
        h.push(kind);
        h
    }

    #[tokio::test]
    async fn frames_that_overrun_lie_or_are_not_whole_values_are_refused() {
        for (frame, expect) in [
            (header(12, 2), "12 bytes"),       // 3 values where 2 are due
            (header(6, 2), "6 bytes"),         // not whole values
            (header(0, 2), "0 bytes"),         // empty
            (header(8, 1), "a message where"), // a message mid-transfer
            (header(8, 9), "unknown frame kind 9"),
        ] {
            let mut s = raw(frame).await;
            let mut dest = [0.0f32; 2];
            let e = read_values(&mut s, &mut dest, T).await.unwrap_err();
            assert!(e.to_string().contains(expect), "{e}");
        }
        let mut s = raw(header(MAX_HEAD_BYTES + 1, 1)).await;
        let e = read_head(&mut s, Some(T), "p").await.unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        let mut s = raw([header(4, 1), b"FSLO".to_vec()].concat()).await;
        let e = read_head(&mut s, Some(T), "p").await.unwrap_err();
        assert!(e.to_string().contains("not a fedsilo frame"), "{e}");
    }

    #[tokio::test]
    async fn a_body_that_stops_coming_ends_the_transfer_in_time() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&header(8, 2)).await.unwrap();
        a.write_all(&[0u8; 4]).await.unwrap(); // half of it, and then nothing
        let mut dest = [0.0f32; 2];
        let limit = Duration::from_millis(50);
        let e = read_values(&mut b, &mut dest, limit).await.unwrap_err();
        assert!(matches!(e, BulkError::Slow { .. }), "{e}");
        drop(a);
    }

    #[tokio::test]
    async fn a_cut_link_is_an_error_not_a_hang() {
        let mut s = raw(header(8, 2)).await;
        let mut dest = [0.0f32; 2];
        let e = read_values(&mut s, &mut dest, T).await.unwrap_err();
        assert!(matches!(e, BulkError::Io(_)), "{e}");
    }
}
