//! The admin API's HTTPS listener: TLS 1.3 with the coordinator's certificate, an optional
//! client certificate (verified against the consortium CA), HTTP/1.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

use super::auth::Peer;
use super::routes::{router, AdminApi};
use crate::identity::Identity;
use crate::tls::NodeCredentials;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` and serves the API until the process ends. Returns the bound address (port 0
/// picks a free one).
pub async fn serve(
    addr: SocketAddr,
    credentials: &NodeCredentials,
    api: AdminApi,
) -> crate::Result<SocketAddr> {
    let config = credentials.admin_server_config()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| crate::Error::Cluster(format!("admin API: cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| crate::Error::Cluster(format!("admin API: {e}")))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let app = router(Arc::new(api));
    tokio::spawn(async move {
        loop {
            let (tcp, from) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!("admin API: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
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
                        // Verified by the handshake; a certificate without fedsilo's identity
                        // fields authenticates nobody.
                        Identity::from_cert_der(der, &from.to_string())
                            .ok()
                            .map(|id| (id, hex::encode(der)))
                    });
                let service = TowerToHyperService::new(app.layer(Extension(Peer { certificate })));
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!("admin API: connection from {from}: {e}");
                }
            });
        }
    });
    Ok(bound)
}
