//! The admin API's HTTPS listener: TLS 1.3 with the coordinator's certificate, an optional
//! client certificate (verified against the consortium CA), HTTP/1.1. Bounded against
//! connections that never authenticate: at most 128 at once and 32 per peer address (more are
//! closed at once, as when the process's descriptor budget is spent), each with 10 s to finish
//! its TLS handshake and 10 s to send a request's headers (also between requests: an idle
//! connection is closed). Credentials are checked on the headers, before any body is read,
//! and a body must arrive whole within 10 s ([`super::routes`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use super::auth::Peer;
use super::routes::{router, AdminApi};
use crate::connection_budget::{accept_admitted, ConnectionLimits, Limiter};
use crate::identity::Identity;
use crate::tls::NodeCredentials;

/// How long a client may take to finish the TLS handshake, and to send a request's headers.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once, in total and per peer address.
pub const CONNECTIONS: ConnectionLimits = ConnectionLimits {
    total: 128,
    per_peer: 32,
};

/// The bound listener, not serving yet (bind before starting anything that needs it).
#[derive(Debug)]
pub struct AdminListener {
    listener: TcpListener,
}

impl AdminListener {
    /// Binds `addr` (port 0 picks a free one).
    pub async fn bind(addr: SocketAddr) -> crate::Result<Self> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            crate::Error::Cluster(format!("admin API: cannot listen on {addr}: {e}"))
        })?;
        Ok(Self { listener })
    }

    /// The bound address.
    pub fn local_addr(&self) -> crate::Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| crate::Error::Cluster(format!("admin API: {e}")))
    }

    /// Serves the API until the returned task is aborted.
    pub fn serve(
        self,
        credentials: &NodeCredentials,
        api: AdminApi,
    ) -> crate::Result<tokio::task::JoinHandle<()>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(credentials.admin_server_config()?);
        let api = Arc::new(api);
        let app = router(api.clone());
        let limiter = Limiter::new("admin API", CONNECTIONS);
        let listener = self.listener;
        Ok(tokio::spawn(async move {
            loop {
                let (tcp, from, slot) = accept_admitted(&listener, &limiter, |peer, refusal| {
                    api.refusals
                        .warn(&peer.to_string(), None, &refusal.to_string())
                })
                .await;
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    serve_connection(acceptor, app, tcp, from).await;
                });
            }
        }))
    }
}

async fn serve_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    tcp: tokio::net::TcpStream,
    from: SocketAddr,
) {
    let tls = match tokio::time::timeout(CLIENT_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!("admin API: TLS handshake with {from} failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!("admin API: {from} did not finish the TLS handshake");
            return;
        }
    };
    let certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|der| {
            // Verified by the handshake; a certificate without fedsilo's identity fields
            // authenticates nobody.
            Identity::from_cert_der(der, &from.to_string())
                .ok()
                .map(|id| (id, hex::encode(der)))
        });
    let service = TowerToHyperService::new(app.layer(Extension(Peer {
        certificate,
        addr: from.to_string(),
    })));
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!("admin API: connection from {from}: {e}");
    }
}
