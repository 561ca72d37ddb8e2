//! The node name a connecting peer declares, read from its first cluster frame *before*
//! ractor_cluster sees the session.
//!
//! ractor_cluster elects between two authenticated sessions that declare the same node name
//! (it keeps the one with the smallest client-chosen connection id) before any subscriber hears
//! of either. Checking the declared name when `node_session_authenticated` fires is therefore
//! too late: by then a certificate holder declaring someone else's name has already displaced
//! that node's honest session. So the listener reads the client's first frame itself — in the
//! ractor_cluster protocol it is always `NetworkMessage { auth: AuthenticationMessage { name } }`
//! (a `u64` big-endian length, then protobuf), and the server's handshake accepts a name only in
//! its first state — compares the name with the certificate, and only then hands ractor a
//! [`Replay`] stream that yields the consumed bytes first.
//!
//! Only the fields fedsilo reads are declared below; prost skips the rest. The frame is bounded
//! ([`MAX_NAME_FRAME_BYTES`]) and decoding never panics, whatever the bytes.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Largest first frame accepted. A name message is a few dozen bytes.
pub const MAX_NAME_FRAME_BYTES: u64 = 4096;

/// What went wrong reading a peer's first frame.
#[derive(Debug, thiserror::Error)]
pub enum FirstFrameError {
    /// The connection failed or closed before a whole frame arrived.
    #[error("connection ended before the node name arrived: {0}")]
    Io(#[from] std::io::Error),
    /// The announced frame length is beyond what a name message can be.
    #[error(
        "first frame announces {0} bytes (a node name message is at most {MAX_NAME_FRAME_BYTES})"
    )]
    TooLarge(u64),
    /// The bytes are not protobuf.
    #[error("first frame is not a cluster message: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// A well-formed frame that is not the authentication name message.
    #[error("first frame is not the node name announcement")]
    NotAName,
}

/// The name and connection id a peer declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredName {
    /// The full declared name, `node@host`.
    pub full: String,
    /// The client-chosen connection id (ractor's duplicate-election nonce).
    pub connection_id: u64,
}

impl DeclaredName {
    /// The node part of `node@host`.
    pub fn node(&self) -> &str {
        self.full.split('@').next().unwrap_or(&self.full)
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct NetworkMessage {
    #[prost(message, optional, tag = "1")]
    auth: Option<AuthenticationMessage>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AuthenticationMessage {
    #[prost(message, optional, tag = "1")]
    name: Option<NameMessage>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NameMessage {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint64, tag = "4")]
    connection_id: u64,
}

/// Decodes a first frame's payload (without its length prefix).
pub fn parse_name_frame(payload: &[u8]) -> Result<DeclaredName, FirstFrameError> {
    let msg = <NetworkMessage as prost::Message>::decode(payload)?;
    let name = msg
        .auth
        .and_then(|a| a.name)
        .ok_or(FirstFrameError::NotAName)?;
    if name.name.is_empty() {
        return Err(FirstFrameError::NotAName);
    }
    Ok(DeclaredName {
        full: name.name,
        connection_id: name.connection_id,
    })
}

/// Encodes a first frame as a ractor_cluster client sends it (length prefix included). For
/// tests and fuzz corpora.
pub fn encode_name_frame(full: &str, connection_id: u64) -> Vec<u8> {
    let msg = NetworkMessage {
        auth: Some(AuthenticationMessage {
            name: Some(NameMessage {
                name: full.to_string(),
                connection_id,
            }),
        }),
    };
    let payload = prost::Message::encode_to_vec(&msg);
    let mut out = (payload.len() as u64).to_be_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Reads the first frame from `stream` and returns the declared name with the raw bytes read
/// (to be replayed to ractor_cluster). Bounded by [`MAX_NAME_FRAME_BYTES`]; the caller bounds
/// the time.
pub async fn read_declared_name<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(DeclaredName, Vec<u8>), FirstFrameError> {
    let mut len = [0u8; 8];
    stream.read_exact(&mut len).await?;
    let n = u64::from_be_bytes(len);
    if n > MAX_NAME_FRAME_BYTES {
        return Err(FirstFrameError::TooLarge(n));
    }
    let mut raw = len.to_vec();
    raw.resize(8 + n as usize, 0);
    stream.read_exact(&mut raw[8..]).await?;
    let declared = parse_name_frame(&raw[8..])?;
    Ok((declared, raw))
}

/// A stream that yields `prefix` before reading from `inner`; writes go straight to `inner`.
pub struct Replay<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Replay<S> {
    /// Replays `prefix`, then reads `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_name_and_replays_every_byte() {
        let mut wire = encode_name_frame("bank-a@host", 42);
        wire.extend_from_slice(b"rest of the session");
        let mut src = &wire[..];
        let (declared, raw) = read_declared_name(&mut src).await.unwrap();
        assert_eq!(declared.full, "bank-a@host");
        assert_eq!(declared.node(), "bank-a");
        assert_eq!(declared.connection_id, 42);
        let mut replay = Replay::new(raw, src);
        let mut all = Vec::new();
        replay.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, wire);
    }

    #[tokio::test]
    async fn an_oversized_or_foreign_first_frame_is_refused() {
        let mut big = (MAX_NAME_FRAME_BYTES + 1).to_be_bytes().to_vec();
        big.extend_from_slice(&[0; 16]);
        assert!(matches!(
            read_declared_name(&mut &big[..]).await,
            Err(FirstFrameError::TooLarge(_))
        ));
        // A well-formed message with another field (a node message, tag 2) is not a name.
        let other = [0, 0, 0, 0, 0, 0, 0, 2, 0x12, 0x00];
        assert!(matches!(
            read_declared_name(&mut &other[..]).await,
            Err(FirstFrameError::NotAName)
        ));
        // Garbage is an error, not a panic.
        let junk = [0, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(read_declared_name(&mut &junk[..]).await.is_err());
        // A stream that ends early.
        assert!(matches!(
            read_declared_name(&mut &[0u8, 0, 0][..]).await,
            Err(FirstFrameError::Io(_))
        ));
    }
}
