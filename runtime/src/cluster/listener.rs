//! Our own accept loop: one task per connection, the TLS handshake under a timeout, the peer's
//! certificate read into an identity, and only then the stream handed to ractor_cluster.
//!
//! This replaces ractor_cluster's built-in listener, which handshakes inline (one silent TCP
//! peer would block every other incoming connection) and never looks at who the peer is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::NodeServerMessage;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::counting_stream::{ByteCounters, CountingStream, LabelledStream};
use super::PeerDirectory;
use crate::identity::Identity;

/// Accepts connections on `listener` until the task is aborted.
pub async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    server: ActorRef<NodeServerMessage>,
    directory: Arc<PeerDirectory>,
    handshake_timeout: Duration,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let acceptor = acceptor.clone();
                let server = server.clone();
                let directory = directory.clone();
                tokio::spawn(async move {
                    handshake(stream, peer, acceptor, server, directory, handshake_timeout).await
                });
            }
            Err(e) => {
                // Typically EMFILE; keep the loop alive but do not spin.
                tracing::error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    server: ActorRef<NodeServerMessage>,
    directory: Arc<PeerDirectory>,
    timeout: Duration,
) {
    let peer_addr = peer.to_string();
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Err(_) => {
            directory.refused(
                &peer_addr,
                &format!("TLS handshake not completed within {timeout:?}"),
            );
            return;
        }
        Ok(Err(e)) => {
            directory.refused(&peer_addr, &format!("TLS handshake failed: {e}"));
            return;
        }
        Ok(Ok(tls)) => tls,
    };
    let identity = {
        let (_, conn) = tls.get_ref();
        match conn.peer_certificates().and_then(|c| c.first()) {
            None => Err("no client certificate".to_string()),
            Some(der) => Identity::from_cert_der(der, &format!("peer {peer_addr}"))
                .map_err(|e| e.to_string()),
        }
    };
    let identity = match identity {
        Ok(id) => id,
        Err(reason) => {
            directory.refused(&peer_addr, &reason);
            return;
        }
    };
    tracing::debug!(peer = %peer_addr, identity = %identity, "TLS handshake complete");
    let counters = Arc::new(ByteCounters::default());
    directory.record_handshake(&peer_addr, identity, counters.clone());
    let stream = LabelledStream {
        stream: CountingStream::new(tls, counters),
        label: peer_addr.clone(),
    };
    if let Err(e) = server.cast(NodeServerMessage::ConnectionOpenedExternal {
        stream: Box::new(stream),
        is_server: true,
    }) {
        tracing::error!(peer = %peer_addr, "node server gone: {e}");
    }
}
