//! `GET /metrics` over plain HTTP, on a loopback address only.
//!
//! The endpoint is not authenticated, and what it shows (silo names, refusals, round timings)
//! is for the operators of this host, so [`serve`] refuses any other address
//! ([`MetricsError::NotLoopback`]). A Prometheus on another host scrapes the coordinator's
//! admin API instead (`GET /metrics`, HTTPS, a `read` token or an operator certificate: see
//! `docs/operations.md`), or a local agent forwards what it scrapes here.
//!
//! Bounded like every listener of the process: at most 64 connections, 16 per peer address,
//! within the descriptor budget ([`crate::connection_budget`]); a connection has 10 s to send a
//! request's headers, also between requests, so an idle one is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::text::encode;

use super::{FederationMetrics, SiloMetrics};
use crate::cluster::refusal_log::RefusalLog;
use crate::cluster::PeerDirectory;
use crate::connection_budget::{accept_admitted, ConnectionLimits, Limiter};

/// What an endpoint exposes.
#[derive(Debug, Clone)]
pub enum Exposition {
    /// The coordinator's metrics and its open sessions' byte counters.
    Coordinator(Arc<FederationMetrics>, Arc<PeerDirectory>),
    /// A silo node's metrics and its session's byte counters.
    Silo(Arc<SiloMetrics>, Arc<PeerDirectory>),
}

/// Why metrics cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address is not a loopback address.
    #[error("{0} is not a loopback address: the plain-HTTP metrics endpoint is unauthenticated, so it binds to 127.0.0.1 or [::1] only (remote scrapers use the admin API's authenticated GET /metrics)")]
    NotLoopback(SocketAddr),
    /// The address cannot be bound.
    #[error("cannot bind {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Checks that `addr` may serve the unauthenticated endpoint (a loopback address).
pub fn check_listen(addr: SocketAddr) -> Result<(), MetricsError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(MetricsError::NotLoopback(addr))
    }
}

impl Exposition {
    /// The OpenMetrics text format's content type.
    pub const CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// The text format.
    pub fn render(&self) -> String {
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
        let refused = directory.refusal_count();
        let body = out.trim_end_matches("# EOF\n").to_string();
        format!(
            "{body}# HELP fedsilo_link_refusals Cluster connections refused (TLS, certificate, declared name, duplicate identity).\n# TYPE fedsilo_link_refusals counter\nfedsilo_link_refusals_total {refused}\n# HELP fedsilo_session_bytes_received Bytes received over the sessions open now.\n# TYPE fedsilo_session_bytes_received gauge\nfedsilo_session_bytes_received {received}\n# HELP fedsilo_session_bytes_sent Bytes sent over the sessions open now.\n# TYPE fedsilo_session_bytes_sent gauge\nfedsilo_session_bytes_sent {sent}\n# EOF\n"
        )
    }
}

/// Binds `addr` (a loopback address, see [`check_listen`]) and serves `GET /metrics` until the
/// process ends. Returns the bound address (port 0 picks a free one).
pub async fn serve(addr: SocketAddr, what: Exposition) -> Result<SocketAddr, MetricsError> {
    check_listen(addr)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| MetricsError::Bind(addr, e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| MetricsError::Bind(addr, e))?;
    let app: Router = Router::new().route(
        "/metrics",
        get(move || {
            let what = what.clone();
            async move { ([(CONTENT_TYPE, Exposition::CONTENT_TYPE)], what.render()) }
        }),
    );
    let limiter = Limiter::new("metrics endpoint", CONNECTIONS);
    let refusals = Arc::new(RefusalLog::default());
    tokio::spawn(async move {
        loop {
            let (tcp, _, permit) = accept_admitted(&listener, &limiter, |peer, refusal| {
                refusals.warn(&peer.to_string(), None, &refusal.to_string())
            })
            .await;
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(CLIENT_TIMEOUT)
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

/// Time a client has to send a request's headers (also between requests).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections at once, in total and per peer address.
const CONNECTIONS: ConnectionLimits = ConnectionLimits {
    total: 64,
    per_peer: 16,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_serve_the_unauthenticated_endpoint() {
        for ok in ["127.0.0.1:9464", "127.0.0.2:0", "[::1]:9464"] {
            assert!(check_listen(ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for refused in [
            "0.0.0.0:9464",
            "[::]:9464",
            "10.0.0.5:9464",
            "192.168.1.2:0",
        ] {
            let e = check_listen(refused.parse().unwrap()).unwrap_err();
            assert!(matches!(e, MetricsError::NotLoopback(_)), "{refused}");
            assert!(e.to_string().contains("admin API"), "{e}");
        }
    }
}
