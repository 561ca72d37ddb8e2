//! A stream wrapper that counts the bytes each way, handed to ractor_cluster as an external
//! transport so every link's traffic is measured where it happens.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ractor_cluster::{BoxRead, BoxWrite, ClusterBidiStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Byte counters of one link. Counts are of the cluster frames (TLS plaintext): what the peer
/// sent us (`received`) and what we sent it (`sent`), and when the peer was last heard from
/// (ractor_cluster pings every 1–5 s, so a live peer is never silent for long).
#[derive(Debug)]
pub struct ByteCounters {
    received: AtomicU64,
    sent: AtomicU64,
    /// Milliseconds since [`epoch`] when bytes last arrived (or the link was made).
    last_heard_ms: AtomicU64,
}

/// The process's reference instant for `last_heard_ms`.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl Default for ByteCounters {
    fn default() -> Self {
        Self {
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            last_heard_ms: AtomicU64::new(now_ms()),
        }
    }
}

impl ByteCounters {
    /// How long since the peer last sent a byte (or since the link was made, if it never did).
    pub fn silent_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_heard_ms.load(Ordering::Relaxed)))
    }

    /// Bytes received from the peer so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
    /// Bytes sent to the peer so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// Wraps a stream and adds what passes through to shared [`ByteCounters`].
pub struct CountingStream<S> {
    inner: S,
    counters: Arc<ByteCounters>,
}

impl<S> CountingStream<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, counters: Arc<ByteCounters>) -> Self {
        Self { inner, counters }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.counters
                .received
                .fetch_add(n as u64, Ordering::Relaxed);
            self.counters
                .last_heard_ms
                .store(now_ms(), Ordering::Relaxed);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res {
            self.counters.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        res
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A verified TLS stream (either side) with its label, ready for ractor_cluster.
pub struct LabelledStream<S> {
    /// The stream.
    pub stream: CountingStream<S>,
    /// Unique label of this connection; ractor_cluster reports it as the session's `peer_addr`.
    pub label: String,
}

impl<S> ClusterBidiStream for LabelledStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        let (r, w) = tokio::io::split(self.stream);
        (Box::new(r), Box::new(w))
    }
    fn peer_label(&self) -> Option<String> {
        Some(self.label.clone())
    }
}
