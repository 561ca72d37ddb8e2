//! `GET /metrics` over plain HTTP, on an address the operator chooses (bind it to loopback or
//! a management network: the figures are operational, the endpoint is not authenticated).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;

use super::{FederationMetrics, SiloMetrics};
use crate::cluster::PeerDirectory;

/// What an endpoint exposes.
#[derive(Debug, Clone)]
pub enum Exposition {
    /// The coordinator's metrics and its open sessions' byte counters.
    Coordinator(Arc<FederationMetrics>, Arc<PeerDirectory>),
    /// A silo node's metrics and its session's byte counters.
    Silo(Arc<SiloMetrics>, Arc<PeerDirectory>),
}

impl Exposition {
    /// The text format.
    fn render(&self) -> String {
        let mut out = String::new();
        let (registry, directory) = match self {
            Exposition::Coordinator(m, d) => (m.registry(), d),
            Exposition::Silo(m, d) => (m.registry(), d),
        };
        if let Err(e) = encode(&mut out, registry) {
            tracing::error!("cannot encode metrics: {e}");
        }
        // Byte counters live in the sessions; read at scrape time.
        let (received, sent) = directory.open_session_bytes();
        let body = out.trim_end_matches("# EOF\n").to_string();
        format!(
            "{body}# HELP fedsilo_session_bytes_received Bytes received over the sessions open now.\n# TYPE fedsilo_session_bytes_received gauge\nfedsilo_session_bytes_received {received}\n# HELP fedsilo_session_bytes_sent Bytes sent over the sessions open now.\n# TYPE fedsilo_session_bytes_sent gauge\nfedsilo_session_bytes_sent {sent}\n# EOF\n"
        )
    }
}

/// Binds `addr` and serves `GET /metrics` until the process ends. Returns the bound address
/// (port 0 picks a free one).
pub async fn serve(addr: SocketAddr, what: Exposition) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let what = what.clone();
            async move {
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    what.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics endpoint stopped: {e}");
        }
    });
    Ok(bound)
}
