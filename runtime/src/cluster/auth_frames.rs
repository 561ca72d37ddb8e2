//! The node names peers declare in ractor_cluster's authentication frames, checked against
//! their certificates *before* ractor_cluster acts on them.
//!
//! ractor_cluster elects between two authenticated sessions that declare the same node name
//! (it keeps the one with the smallest connection id) before any subscriber hears of either.
//! Checking the declared name when `node_session_authenticated` fires is therefore too late: by
//! then a certificate holder declaring someone else's name has already displaced that node's
//! honest session. So fedsilo reads the names itself, on both ends of a link:
//!
//! - **accepting** — the client's first frame, which in the ractor_cluster protocol is always
//!   `NetworkMessage { auth: AuthenticationMessage { name } }` (a `u64` big-endian length, then
//!   protobuf). The listener reads it ([`read_declared_name`]), compares the name with the
//!   certificate and only then hands ractor a [`Replay`] stream that yields those bytes first.
//!   The server's handshake accepts a name only in its first state, so no later frame can
//!   rename the session.
//! - **dialling** — the server's challenge, which carries its name. [`ChallengeGuard`] reads the
//!   server's frames until that challenge and fails the stream if the name is not the
//!   certificate's.
//!
//! Both ends are strict about protobuf's `oneof`: ractor keeps the *last* variant a frame
//! carries, so a frame carrying a name and anything else (`auth` then `node`, `name` then
//! `server_challenge`) is refused, never read two ways. Frames are bounded
//! ([`MAX_AUTH_FRAME_BYTES`]) and decoding never panics, whatever the bytes.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Largest authentication frame accepted. A name message or a challenge is a few dozen bytes.
pub const MAX_AUTH_FRAME_BYTES: u64 = 4096;

/// What went wrong reading a peer's authentication frames.
#[derive(Debug, thiserror::Error)]
pub enum AuthFrameError {
    /// The connection failed or closed before a whole frame arrived.
    #[error("connection ended before the node name arrived: {0}")]
    Io(#[from] std::io::Error),
    /// The announced frame length is beyond what an authentication frame can be.
    #[error("an authentication frame announces {0} bytes (at most {MAX_AUTH_FRAME_BYTES})")]
    TooLarge(u64),
    /// The bytes are not protobuf.
    #[error("the frame is not a cluster message: {0}")]
    Malformed(#[from] prost::DecodeError),
    /// A well-formed frame that is not the one expected (or carries more than one message).
    #[error("the first frame is not exactly a node name announcement")]
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
        node_part(&self.full)
    }
}

/// The node part of `node@host`.
pub fn node_part(full: &str) -> &str {
    full.split('@').next().unwrap_or(full)
}

// The wire messages, with every `oneof` variant declared (as opaque bytes where fedsilo does not
// read it), so that a frame carrying two variants can be told from one carrying one.
#[derive(Clone, PartialEq, prost::Message)]
struct NetworkMessage {
    #[prost(message, optional, tag = "1")]
    auth: Option<AuthenticationMessage>,
    #[prost(bytes = "vec", optional, tag = "2")]
    node: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    control: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AuthenticationMessage {
    #[prost(message, optional, tag = "1")]
    name: Option<NameMessage>,
    #[prost(bytes = "vec", optional, tag = "2")]
    server_status: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "3")]
    client_status: Option<Vec<u8>>,
    #[prost(message, optional, tag = "4")]
    server_challenge: Option<Challenge>,
    #[prost(bytes = "vec", optional, tag = "5")]
    client_challenge: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "6")]
    server_ack: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NameMessage {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint64, tag = "4")]
    connection_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Challenge {
    #[prost(string, tag = "1")]
    name: String,
}

/// What one frame is, read strictly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFrame {
    /// Exactly a name announcement (client → server).
    Name(DeclaredName),
    /// Exactly a server challenge, with the server's full name (server → client).
    Challenge(String),
    /// Exactly one other authentication message.
    OtherAuth,
    /// Exactly one non-authentication message (node or control), or an empty one.
    NotAuth,
    /// More than one variant: ractor would read the last one, fedsilo refuses it.
    Ambiguous,
}

/// Classifies a frame's payload (without its length prefix).
pub fn classify(payload: &[u8]) -> Result<AuthFrame, AuthFrameError> {
    let msg = <NetworkMessage as prost::Message>::decode(payload)?;
    let outer = [
        msg.auth.is_some(),
        msg.node.is_some(),
        msg.control.is_some(),
    ];
    match (outer.iter().filter(|x| **x).count(), msg.auth) {
        (0, _) => Ok(AuthFrame::NotAuth),
        (1, None) => Ok(AuthFrame::NotAuth),
        (1, Some(a)) => {
            let inner = [
                a.name.is_some(),
                a.server_status.is_some(),
                a.client_status.is_some(),
                a.server_challenge.is_some(),
                a.client_challenge.is_some(),
                a.server_ack.is_some(),
            ];
            if inner.iter().filter(|x| **x).count() != 1 {
                return Ok(AuthFrame::Ambiguous);
            }
            Ok(match (a.name, a.server_challenge) {
                (Some(n), _) => AuthFrame::Name(DeclaredName {
                    full: n.name,
                    connection_id: n.connection_id,
                }),
                (_, Some(c)) => AuthFrame::Challenge(c.name),
                _ => AuthFrame::OtherAuth,
            })
        }
        _ => Ok(AuthFrame::Ambiguous),
    }
}

/// Decodes a first frame's payload (without its length prefix): exactly a non-empty name.
pub fn parse_name_frame(payload: &[u8]) -> Result<DeclaredName, AuthFrameError> {
    match classify(payload)? {
        AuthFrame::Name(d) if !d.full.is_empty() => Ok(d),
        _ => Err(AuthFrameError::NotAName),
    }
}

fn frame(msg: &NetworkMessage) -> Vec<u8> {
    let payload = prost::Message::encode_to_vec(msg);
    let mut out = (payload.len() as u64).to_be_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Encodes a first frame as a ractor_cluster client sends it (length prefix included). For
/// tests and fuzz corpora.
pub fn encode_name_frame(full: &str, connection_id: u64) -> Vec<u8> {
    frame(&NetworkMessage {
        auth: Some(AuthenticationMessage {
            name: Some(NameMessage {
                name: full.to_string(),
                connection_id,
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Encodes a server challenge frame carrying `full` (length prefix included). For tests.
pub fn encode_challenge_frame(full: &str) -> Vec<u8> {
    frame(&NetworkMessage {
        auth: Some(AuthenticationMessage {
            server_challenge: Some(Challenge {
                name: full.to_string(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Reads the first frame from `stream` and returns the declared name with the raw bytes read
/// (to be replayed to ractor_cluster). Bounded by [`MAX_AUTH_FRAME_BYTES`]; the caller bounds
/// the time.
pub async fn read_declared_name<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(DeclaredName, Vec<u8>), AuthFrameError> {
    let mut len = [0u8; 8];
    stream.read_exact(&mut len).await?;
    let n = u64::from_be_bytes(len);
    if n > MAX_AUTH_FRAME_BYTES {
        return Err(AuthFrameError::TooLarge(n));
    }
    let mut raw = len.to_vec();
    raw.resize(8 + n as usize, 0);
    stream.read_exact(&mut raw[8..]).await?;
    let declared = parse_name_frame(&raw[8..])?;
    Ok((declared, raw))
}

/// Writes go straight to the wrapped stream: the readers here (and
/// [`super::refusal_watch::RefusalWatch`]) only look at what comes in.
macro_rules! write_through {
    ($t:ident) => {
        impl<S: AsyncWrite + Unpin> AsyncWrite for $t<S> {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write(cx, buf)
            }
            fn poll_flush(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.inner).poll_flush(cx)
            }
            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}
pub(super) use write_through;

/// Bytes already read from the wire and checked, waiting to be handed on.
#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    pos: usize,
}

impl Pending {
    /// Hands on as much as fits; whether anything was pending.
    fn serve(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.pos >= self.bytes.len() {
            return false;
        }
        let n = buf.remaining().min(self.bytes.len() - self.pos);
        buf.put_slice(&self.bytes[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.bytes.len() {
            self.bytes = Vec::new();
            self.pos = 0;
        }
        true
    }
}

/// A stream that yields `prefix` before reading from `inner`; writes go straight to `inner`.
pub struct Replay<S> {
    prefix: Pending,
    inner: S,
}

impl<S> Replay<S> {
    /// Replays `prefix`, then reads `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix: Pending {
                bytes: prefix,
                pos: 0,
            },
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
        if self.prefix.serve(buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

write_through!(Replay);

/// The read half of a link this node dialled: passes the server's frames on unchanged, but
/// reads each one until the server's challenge, and fails the stream (so ractor_cluster closes
/// the session before it authenticates) if the challenge names another node than `expected`,
/// the name in the server's verified certificate, or if any frame before it is ambiguous or
/// oversized.
pub struct ChallengeGuard<S> {
    inner: S,
    expected: String,
    /// Bytes of frames already checked, not yet handed on.
    ready: Pending,
    /// Bytes of the frame being read.
    partial: Vec<u8>,
    passthrough: bool,
}

impl<S> ChallengeGuard<S> {
    /// Guards `inner`, expecting the server to be the node `expected`.
    pub fn new(inner: S, expected: &str) -> Self {
        Self {
            inner,
            expected: expected.to_string(),
            ready: Pending::default(),
            partial: Vec::new(),
            passthrough: false,
        }
    }

    /// Checks the whole frames in `partial`; moves them to `ready`.
    fn check_frames(&mut self) -> std::io::Result<()> {
        let refuse = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
        while !self.passthrough && self.partial.len() >= 8 {
            let mut len = [0u8; 8];
            len.copy_from_slice(&self.partial[..8]);
            let n = u64::from_be_bytes(len);
            if n > MAX_AUTH_FRAME_BYTES {
                return Err(refuse(AuthFrameError::TooLarge(n).to_string()));
            }
            let end = 8 + n as usize;
            if self.partial.len() < end {
                return Ok(());
            }
            let kind = classify(&self.partial[8..end]).map_err(|e| refuse(e.to_string()))?;
            match kind {
                AuthFrame::Challenge(full) => {
                    if node_part(&full) != self.expected {
                        return Err(refuse(format!(
                            "the server declared node name `{full}` but its certificate says `{}`",
                            self.expected
                        )));
                    }
                    self.passthrough = true;
                }
                AuthFrame::Ambiguous | AuthFrame::Name(_) => {
                    return Err(refuse(
                        "the server sent an ambiguous authentication frame".to_string(),
                    ))
                }
                AuthFrame::OtherAuth | AuthFrame::NotAuth => {}
            }
            let rest = self.partial.split_off(end);
            let checked = std::mem::replace(&mut self.partial, rest);
            self.ready.bytes.extend_from_slice(&checked);
        }
        if self.passthrough {
            // Whatever follows the challenge is no longer inspected.
            let rest = std::mem::take(&mut self.partial);
            self.ready.bytes.extend_from_slice(&rest);
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ChallengeGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if self.ready.serve(buf) {
                return Poll::Ready(Ok(()));
            }
            if self.passthrough {
                return Pin::new(&mut self.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let got = rb.filled().len();
                    if got == 0 {
                        return Poll::Ready(Ok(())); // end of stream
                    }
                    let filled = rb.filled().to_vec();
                    self.partial.extend_from_slice(&filled);
                    if let Err(e) = self.check_frames() {
                        tracing::warn!("closing a link before authentication: {e}");
                        return Poll::Ready(Err(e));
                    }
                }
            }
        }
    }
}

write_through!(ChallengeGuard);

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
        let mut big = (MAX_AUTH_FRAME_BYTES + 1).to_be_bytes().to_vec();
        big.extend_from_slice(&[0; 16]);
        assert!(matches!(
            read_declared_name(&mut &big[..]).await,
            Err(AuthFrameError::TooLarge(_))
        ));
        // A well-formed message with another field (a node message, tag 2) is not a name.
        let other = [0, 0, 0, 0, 0, 0, 0, 2, 0x12, 0x00];
        assert!(matches!(
            read_declared_name(&mut &other[..]).await,
            Err(AuthFrameError::NotAName)
        ));
        // A name followed by a node message in the same frame: ractor would read the node
        // message (the last oneof variant) and still wait for a name. Refused.
        let mut two = encode_name_frame("bank-b@x", 9);
        two.extend_from_slice(&[0x12, 0x00]);
        let len = (two.len() - 8) as u64;
        two[..8].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            read_declared_name(&mut &two[..]).await,
            Err(AuthFrameError::NotAName)
        ));
        // A name and a challenge inside one authentication message: refused too.
        let mut both = encode_name_frame("bank-b@x", 9);
        let challenge = encode_challenge_frame("bank-a@x");
        both.extend_from_slice(&challenge[8..]);
        let len = (both.len() - 8) as u64;
        both[..8].copy_from_slice(&len.to_be_bytes());
        assert!(read_declared_name(&mut &both[..]).await.is_err());
        // Garbage is an error, not a panic.
        let junk = [0, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(read_declared_name(&mut &junk[..]).await.is_err());
        // A stream that ends early.
        assert!(matches!(
            read_declared_name(&mut &[0u8, 0, 0][..]).await,
            Err(AuthFrameError::Io(_))
        ));
    }
}

#[cfg(test)]
mod guard_tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn status_frame() -> Vec<u8> {
        // auth { server_status { status: OK } }: an empty ServerStatus message.
        vec![0, 0, 0, 0, 0, 0, 0, 4, 0x0a, 0x02, 0x12, 0x00]
    }

    #[tokio::test]
    async fn the_server_named_in_its_certificate_passes_every_byte() {
        let mut wire = status_frame();
        wire.extend(encode_challenge_frame("coordinator@fedsilo"));
        wire.extend_from_slice(b"then anything at all, unchecked");
        let mut g = ChallengeGuard::new(&wire[..], "coordinator");
        let mut all = Vec::new();
        g.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, wire);
    }

    #[tokio::test]
    async fn a_server_claiming_another_name_fails_the_stream() {
        let mut wire = status_frame();
        wire.extend(encode_challenge_frame("coordinator@fedsilo"));
        let mut g = ChallengeGuard::new(&wire[..], "agg-eu");
        let mut all = Vec::new();
        let e = g.read_to_end(&mut all).await.unwrap_err();
        assert!(e.to_string().contains("`coordinator@fedsilo`"), "{e}");
        // Nothing of the challenge was handed on.
        assert!(status_frame().starts_with(&all), "{all:?}");
    }

    #[tokio::test]
    async fn an_oversized_frame_before_the_challenge_fails_the_stream() {
        let mut wire = (MAX_AUTH_FRAME_BYTES + 1).to_be_bytes().to_vec();
        wire.extend(vec![0u8; 64]);
        let mut g = ChallengeGuard::new(&wire[..], "coordinator");
        let mut all = Vec::new();
        assert!(g.read_to_end(&mut all).await.is_err());
    }
}
