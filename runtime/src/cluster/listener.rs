//! Our own accept loop: one task per connection, the TLS handshake under a timeout, the peer's
//! certificate read into an identity, its declared node name read from its first frame and
//! admitted by the [`PeerDirectory`], and only then the stream handed to ractor_cluster. The
//! same task then watches the link: a session that does not authenticate in time, or whose
//! peer falls silent beyond the idle timeout, is closed. A connection beyond the listener's
//! caps or the process's descriptor budget ([`crate::connection_budget`]) is closed at once.
//!
//! This replaces ractor_cluster's built-in listener, which handshakes inline (one silent TCP
//! peer would block every other incoming connection) and never looks at who the peer is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use tokio::net::{TcpListener, TcpStream};

use super::auth_frames::{read_declared_name, Replay};
use super::counting_stream::{ByteCounters, CountingStream, LabelledStream};
use super::directory::Admission;
use super::handoff::{BulkAcceptor, BULK_ALPN};
use super::node::LinkLimits;
use super::revocation::Revocations;
use super::PeerDirectory;
use crate::connection_budget::{accept_admitted, Limiter};
use crate::identity::Identity;

/// Accepts connections on `listener` until the task is aborted.
pub async fn accept_loop(
    listener: TcpListener,
    limiter: Arc<Limiter>,
    revocations: Arc<Revocations>,
    server: ActorRef<NodeServerMessage>,
    directory: Arc<PeerDirectory>,
    limits: LinkLimits,
    bulk: Option<Arc<dyn BulkAcceptor>>,
) {
    loop {
        let (stream, peer, permit) = accept_admitted(&listener, &limiter, |peer, refusal| {
            directory.refused(&peer.to_string(), None, &refusal.to_string())
        })
        .await;
        let revocations = revocations.clone();
        let server = server.clone();
        let directory = directory.clone();
        let limits = limits.clone();
        let bulk = bulk.clone();
        tokio::spawn(async move {
            handshake(stream, peer, &revocations, server, directory, limits, bulk).await;
            drop(permit);
        });
    }
}

/// A label no other link of this process has had or will have: the peer's address and a
/// sequence number (addresses are reused; a late event about an old link must not touch a new
/// one).
pub fn link_label(addr: &SocketAddr) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{addr}#{n}")
}

/// One accepted connection, from TCP to the end of its session; its certificate is tracked
/// for revocation while it lasts.
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    revocations: &Revocations,
    server: ActorRef<NodeServerMessage>,
    directory: Arc<PeerDirectory>,
    limits: LinkLimits,
    bulk: Option<Arc<dyn BulkAcceptor>>,
) {
    let peer_addr = link_label(&peer);
    link(
        stream,
        &peer_addr,
        revocations,
        server,
        directory,
        limits,
        bulk,
    )
    .await;
    revocations.forget(&peer_addr);
}

async fn link(
    stream: TcpStream,
    peer_addr: &str,
    revocations: &Revocations,
    server: ActorRef<NodeServerMessage>,
    directory: Arc<PeerDirectory>,
    limits: LinkLimits,
    bulk: Option<Arc<dyn BulkAcceptor>>,
) {
    let acceptor = revocations.acceptor();
    let peer_addr = peer_addr.to_string();
    let _ = stream.set_nodelay(true);
    super::handoff::keep_alive(&stream);
    let timeout = limits.handshake_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Err(_) => {
            directory.refused(
                &peer_addr,
                None,
                &format!("TLS handshake not completed within {timeout:?}"),
            );
            return;
        }
        Ok(Err(e)) => {
            directory.refused(&peer_addr, None, &format!("TLS handshake failed: {e}"));
            return;
        }
        Ok(Ok(tls)) => tls,
    };
    let identity = {
        let (_, conn) = tls.get_ref();
        match conn.peer_certificates().and_then(|c| c.first()) {
            None => Err("no client certificate".to_string()),
            Some(der) if !revocations.track(&peer_addr, der) => {
                Err("certificate revoked (certificate revocation list)".to_string())
            }
            Some(der) => Identity::from_cert_der(der, &format!("peer {peer_addr}"))
                .map_err(|e| e.to_string()),
        }
    };
    let identity = match identity {
        Ok(id) => id,
        Err(reason) => {
            directory.refused(&peer_addr, None, &reason);
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(BULK_ALPN) {
        // A link of the bulk data plane: verified like any other, then handed off; it holds
        // its place among the connection caps until it closes.
        match bulk {
            Some(_) if identity.role != crate::identity::Role::Silo => directory.refused(
                &peer_addr,
                Some(&identity),
                "asked for the bulk data plane, which is for silos",
            ),
            Some(acceptor) => {
                let mut revoked = revocations.revoked();
                // Revoked between the handshake and the subscription: not filed at all.
                if !revocations.is_tracked(&peer_addr) {
                    return;
                }
                let held = acceptor.accept(identity, peer_addr.clone(), Box::new(tls));
                tokio::pin!(held);
                loop {
                    tokio::select! {
                        _ = &mut held => break,
                        label = revoked.recv() => match label {
                            Ok(l) if l == peer_addr => acceptor.close(&peer_addr),
                            Ok(_) => {}
                            // Missed notices: ask the list itself.
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                if !revocations.is_tracked(&peer_addr) {
                                    acceptor.close(&peer_addr);
                                }
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                (&mut held).await;
                                break;
                            }
                        },
                    }
                }
            }
            None => directory.refused(
                &peer_addr,
                Some(&identity),
                "asked for the bulk data plane, which this node does not serve",
            ),
        }
        return;
    }
    // The declared name, before ractor_cluster can elect between sessions that share it.
    let (declared, first_frame) =
        match tokio::time::timeout_at(deadline, read_declared_name(&mut tls)).await {
            Err(_) => {
                directory.refused(
                    &peer_addr,
                    Some(&identity),
                    &format!("no node name announced within {timeout:?} of connecting"),
                );
                return;
            }
            Ok(Err(e)) => {
                directory.refused(&peer_addr, Some(&identity), &e.to_string());
                return;
            }
            Ok(Ok(d)) => d,
        };
    tracing::debug!(peer = %peer_addr, identity = %identity, declared = %declared.full, "TLS handshake complete");
    let counters = Arc::new(ByteCounters::default());
    let mut events = directory.subscribe();
    let admitted = directory.admit(
        &peer_addr,
        &identity,
        declared.node(),
        counters.clone(),
        limits.silence_limit,
    );
    match admitted {
        Admission::Refuse(_) => return,
        Admission::Admit => {}
        Admission::Replace { old_label, .. } => {
            // The old session must be gone before ractor sees the new one, or its election
            // could keep the old one by connection id. Bounded: a session that does not stop
            // in time is left to ractor.
            let gone = async {
                while directory.is_bound(&old_label) {
                    match events.recv().await {
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(5), gone).await;
        }
    }
    drop(events);
    let stream = LabelledStream {
        stream: CountingStream::new(Replay::new(first_frame, tls), counters),
        label: peer_addr.clone(),
    };
    if let Err(e) = server.cast(NodeServerMessage::ConnectionOpenedExternal {
        stream: Box::new(stream),
        is_server: true,
    }) {
        tracing::error!(peer = %peer_addr, "node server gone: {e}");
        directory.forget(&peer_addr);
        return;
    }
    supervise(&peer_addr, &directory, deadline, &limits).await;
}

/// Watches an admitted link until it is gone: one that is not bound to a session by `deadline`
/// (the handshake deadline), or whose peer stays silent beyond the idle timeout, is closed.
async fn supervise(
    label: &str,
    directory: &PeerDirectory,
    deadline: tokio::time::Instant,
    limits: &LinkLimits,
) {
    let tick = (limits.silence_limit.min(limits.handshake_timeout) / 4)
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        tokio::time::sleep(tick).await;
        let Some(silent_for) = directory.silent_for(label) else {
            return; // disconnected, replaced or forgotten
        };
        if !directory.is_bound(label) {
            if tokio::time::Instant::now() >= deadline {
                directory.close(
                    label,
                    "the session did not authenticate within the handshake timeout",
                );
                return;
            }
        } else if silent_for >= limits.idle_timeout {
            tracing::warn!(
                peer = label,
                "closing a link silent for {:.1} s",
                silent_for.as_secs_f64()
            );
            directory.close(label, "peer silent beyond the idle timeout");
            return;
        }
    }
}
