//! The accepting side's bulk links: one per certificate identity, replaced when that identity
//! dials again, and the transfers the coordinator makes over them.
//!
//! A link is used by one transfer at a time. The transfer takes the stream out of its slot and
//! puts it back only when the exchange ended cleanly: a transfer that fails, times out or is
//! abandoned (its future dropped) drops the stream, which closes the connection — the next
//! transfer finds the slot empty and the silo dials again. Nothing half-read is ever reused.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

use super::frame::{
    read_head, read_values, read_values_with, write_head, write_values, BulkMessage,
};
use super::BulkError;
use crate::cluster::counting_stream::{ByteCounters, CountingStream};
use crate::cluster::handoff::{BoxedStream, BulkAcceptor};
use crate::identity::Identity;
use crate::model::Digest;
use crate::protocol::ModelRef;

/// The most a frame may take on the coordinator's side, whatever time the caller has left: a
/// link that died quietly fails its transfer within this, not at the round's deadline.
const FRAME_WAIT: Duration = Duration::from_secs(60);

/// An accepted link's stream; dropping it closes the connection and ends the listener's hold.
struct Held {
    stream: CountingStream<BoxedStream>,
    _closed: oneshot::Sender<()>,
}

/// Where an identity's link lives: empty while a transfer uses it or after one failed.
type Slot = Arc<tokio::sync::Mutex<Option<Held>>>;

#[derive(Default)]
struct Inner {
    /// Counts every link made or lost, for those who wait for one.
    changes: tokio::sync::watch::Sender<u64>,
    /// Each identity's current link: its sequence number, its connection's label, its slot.
    links: HashMap<String, (u64, String, Slot)>,
    /// Bytes each way per identity, over all its links.
    counters: HashMap<String, Arc<ByteCounters>>,
    next: u64,
}

/// The bulk links a node accepted, by identity name.
#[derive(Default)]
pub struct BulkLinks {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for BulkLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.lock().links.keys().cloned().collect();
        f.debug_struct("BulkLinks").field("links", &names).finish()
    }
}

impl BulkLinks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The link of the identity `name`, if it has one.
    pub fn link(&self, name: &str) -> Option<BulkLink> {
        let inner = self.lock();
        let (seq, _, slot) = inner.links.get(name)?;
        Some(BulkLink {
            peer: name.to_string(),
            seq: *seq,
            slot: slot.clone(),
            registry: Arc::downgrade(&self.inner),
        })
    }

    /// Changes whenever a link is made or lost.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lock().changes.subscribe()
    }

    /// Bytes exchanged with `name` over its bulk links so far.
    pub fn counters_of(&self, name: &str) -> Option<Arc<ByteCounters>> {
        self.lock().counters.get(name).cloned()
    }

    /// Keeps `stream` as `identity`'s link (replacing any other); the returned receiver
    /// completes when the link is dropped.
    fn insert(
        &self,
        identity: &Identity,
        label: &str,
        stream: BoxedStream,
    ) -> oneshot::Receiver<()> {
        let (closed_tx, closed) = oneshot::channel();
        let mut inner = self.lock();
        let counters = inner
            .counters
            .entry(identity.name.clone())
            .or_default()
            .clone();
        inner.next += 1;
        let seq = inner.next;
        let held = Held {
            stream: CountingStream::new(stream, counters),
            _closed: closed_tx,
        };
        let slot = Arc::new(tokio::sync::Mutex::new(Some(held)));
        // The old link, if idle, is dropped (closed) here; one in use is dropped by its
        // transfer, which finds itself replaced.
        inner
            .links
            .insert(identity.name.clone(), (seq, label.to_string(), slot));
        inner.changes.send_modify(|n| *n += 1);
        closed
    }
}

impl BulkAcceptor for BulkLinks {
    fn accept(
        &self,
        identity: Identity,
        label: String,
        stream: BoxedStream,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        tracing::debug!(peer = %label, identity = %identity, "bulk link up");
        let closed = self.insert(&identity, &label, stream);
        Box::pin(async move {
            let _ = closed.await;
            tracing::debug!(peer = %label, identity = %identity, "bulk link closed");
        })
    }

    fn close(&self, label: &str) {
        let removed = {
            let mut inner = self.lock();
            let name = inner
                .links
                .iter()
                .find(|(_, (_, l, _))| l == label)
                .map(|(n, _)| n.clone());
            let removed = name.and_then(|n| inner.links.remove(&n));
            inner.changes.send_modify(|n| *n += 1);
            removed
        };
        if let Some((_, _, slot)) = removed {
            tracing::warn!(
                peer = label,
                "closing a bulk link: its certificate was revoked"
            );
            // Idle: closed now. In use: its transfer holds the last reference, and the
            // connection closes when that transfer ends.
            if let Ok(mut s) = slot.try_lock() {
                s.take();
            }
        }
    }
}

/// One identity's bulk link, as a transfer holds it.
#[derive(Clone)]
pub struct BulkLink {
    peer: String,
    seq: u64,
    slot: Slot,
    registry: Weak<Mutex<Inner>>,
}

impl std::fmt::Debug for BulkLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkLink")
            .field("peer", &self.peer)
            .field("seq", &self.seq)
            .finish()
    }
}

impl BulkLink {
    /// The identity at the other end.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Takes the link's stream for one exchange, waiting at most `limit` for the link to be
    /// free.
    async fn lease(&self, _limit: Duration) -> Result<Lease<'_>, BulkError> {
        // A link busy with another transfer (a deployment beside a round) is not waited for:
        // the transfer takes the control plane instead.
        let Ok(mut slot) = self.slot.try_lock() else {
            return Err(BulkError::Busy);
        };
        match slot.take() {
            Some(held) => Ok(Lease {
                slot,
                held: Some(held),
                link: self,
            }),
            None => {
                self.forget();
                Err(BulkError::Closed)
            }
        }
    }

    /// Whether this is still its identity's link (not replaced, closed or forgotten).
    fn current(&self) -> bool {
        self.registry.upgrade().is_some_and(|reg| {
            let inner = reg.lock().unwrap_or_else(|p| p.into_inner());
            inner
                .links
                .get(&self.peer)
                .is_some_and(|(s, _, _)| *s == self.seq)
        })
    }

    /// Removes this link from the registry, unless a newer one replaced it.
    fn forget(&self) {
        if let Some(reg) = self.registry.upgrade() {
            let mut inner = reg.lock().unwrap_or_else(|p| p.into_inner());
            if inner
                .links
                .get(&self.peer)
                .is_some_and(|(s, _, _)| *s == self.seq)
            {
                inner.links.remove(&self.peer);
                inner.changes.send_modify(|n| *n += 1);
            }
        }
    }

    /// Sends `values` as `model`; each frame within `limit`. `Ok` once the silo holds it.
    pub async fn put_model(
        &self,
        model: ModelRef,
        values: &[f32],
        limit: Duration,
    ) -> Result<(), BulkError> {
        let limit = limit.min(FRAME_WAIT);
        let mut lease = self.lease(limit).await?;
        let s = lease.stream();
        let out = async {
            let total = values.len() as u64;
            write_head(s, &BulkMessage::PutModel { model, total }, limit).await?;
            write_values(s, values, limit).await?;
            match read_head(s, Some(limit), &self.peer).await? {
                BulkMessage::Stored => Ok(()),
                BulkMessage::Refused { reason } => Err(BulkError::Refused(reason)),
                other => Err(BulkError::Unexpected {
                    wanted: "Stored",
                    got: other.kind(),
                }),
            }
        }
        .await;
        lease.end(out)
    }

    /// Fetches round `round`'s update of `len` values; each frame within `limit`. Returns the
    /// values and the SHA-256 of their bytes, computed as they arrived.
    pub async fn fetch_update(
        &self,
        round: u64,
        len: usize,
        limit: Duration,
    ) -> Result<(Vec<f32>, Digest), BulkError> {
        let limit = limit.min(FRAME_WAIT);
        let mut lease = self.lease(limit).await?;
        let s = lease.stream();
        let out = async {
            ask_update(s, round, len, limit, &self.peer).await?;
            let mut values = vec![0.0f32; len];
            let digest = read_values(s, &mut values, limit).await?;
            Ok((values, digest))
        }
        .await;
        lease.end(out)
    }
}

impl BulkLink {
    /// [`BulkLink::fetch_update`], handing each frame's values to `sink` as it arrives instead
    /// of keeping them (an update spilled to disk never sits whole in memory). Returns the
    /// SHA-256 of the values' bytes.
    pub async fn fetch_update_with(
        &self,
        round: u64,
        len: usize,
        limit: Duration,
        sink: impl FnMut(&[f32]) -> std::io::Result<()>,
    ) -> Result<Digest, BulkError> {
        let limit = limit.min(FRAME_WAIT);
        let mut lease = self.lease(limit).await?;
        let s = lease.stream();
        let out = async {
            ask_update(s, round, len, limit, &self.peer).await?;
            read_values_with(s, len, limit, sink).await
        }
        .await;
        lease.end(out)
    }
}

/// Asks for round `round`'s update of `len` values; `Ok` once the peer announced exactly that
/// (the values follow).
async fn ask_update(
    s: &mut CountingStream<BoxedStream>,
    round: u64,
    len: usize,
    limit: Duration,
    peer: &str,
) -> Result<(), BulkError> {
    let req = BulkMessage::FetchUpdate {
        round,
        len: len as u64,
    };
    write_head(s, &req, limit).await?;
    match read_head(s, Some(limit), peer).await? {
        BulkMessage::Update { len: n } if n == len as u64 => Ok(()),
        BulkMessage::Update { len: n } => Err(BulkError::Malformed(format!(
            "an update of {n} values, {len} expected"
        ))),
        BulkMessage::Refused { reason } => Err(BulkError::Refused(reason)),
        BulkMessage::AskControl { reason } => Err(BulkError::AskControl(reason)),
        other => Err(BulkError::Unexpected {
            wanted: "Update",
            got: other.kind(),
        }),
    }
}

/// A link's stream taken for one exchange. Given back by [`Lease::end`] only if the exchange
/// ended cleanly; dropped otherwise — also when the exchange's future is dropped midway —
/// which closes the connection and removes the link.
struct Lease<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<Held>>,
    held: Option<Held>,
    link: &'a BulkLink,
}

impl Lease<'_> {
    fn stream(&mut self) -> &mut CountingStream<BoxedStream> {
        match &mut self.held {
            Some(h) => &mut h.stream,
            // `held` is taken only by `end` and `drop`, which consume the lease.
            None => unreachable!("a lease holds its stream until it ends"),
        }
    }

    /// Ends the exchange with `out`: a refusal or a redirection is a clean end; anything else
    /// leaves the stream mid-message, and it is dropped.
    fn end<T>(mut self, out: Result<T, BulkError>) -> Result<T, BulkError> {
        let clean = matches!(
            out,
            Ok(_) | Err(BulkError::Refused(_)) | Err(BulkError::AskControl(_))
        );
        // Put back only into a link still filed: one revoked or replaced meanwhile is closed.
        if clean && self.link.current() {
            *self.slot = self.held.take();
        } else {
            self.held.take();
            self.link.forget();
        }
        out
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.held.take().is_some() {
            self.link.forget();
        }
    }
}
