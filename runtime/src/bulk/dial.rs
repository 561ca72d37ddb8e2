//! The silo's side of making bulk links: dial the coordinator's cluster address asking for
//! [`BULK_ALPN`], verify the server's certificate as the cluster link does, answer transfers
//! until the link ends, and dial again — with a growing pause after failures, so a coordinator
//! that is down is not hammered.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::answer::{answer, AnswerLimits, Holder};
use crate::tls::{NodeCredentials, BULK_ALPN};
use crate::{Error, Result};

/// First pause after a failed dial; it doubles up to the caller's maximum.
const FIRST_PAUSE: Duration = Duration::from_millis(200);
/// A link that lived this long was healthy: the next failure starts from [`FIRST_PAUSE`].
const HEALTHY: Duration = Duration::from_secs(5);
/// Time to connect and finish the TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Opens one bulk link to `server_name` at `addr`.
pub async fn open(
    credentials: &NodeCredentials,
    addr: &str,
    server_name: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let work = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| {
            Error::Cluster(format!(
                "bulk link: cannot reach {server_name} at {addr}: {e}"
            ))
        })?;
        let _ = tcp.set_nodelay(true);
        crate::cluster::handoff::keep_alive(&tcp);
        let name = ServerName::try_from(server_name.to_string()).map_err(|e| Error::Config {
            origin: "peer name".into(),
            message: format!("`{server_name}` is not a valid node name: {e}"),
        })?;
        let connector = TlsConnector::from(credentials.bulk_client_config()?);
        let tls = connector.connect(name, tcp).await.map_err(|e| {
            Error::Cluster(format!(
                "bulk link: TLS handshake with {server_name} at {addr} failed: {e}"
            ))
        })?;
        if tls.get_ref().1.alpn_protocol() != Some(BULK_ALPN) {
            return Err(Error::Cluster(format!(
                "bulk link: {server_name} at {addr} does not serve the bulk data plane"
            )));
        }
        Ok(tls)
    };
    tokio::time::timeout(HANDSHAKE, work)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Cluster(format!(
                "bulk link: no handshake with {server_name} at {addr} within {HANDSHAKE:?}"
            )))
        })
}

/// Keeps a bulk link to `server_name` at `addr` and answers its transfers with `holder`, until
/// the task is aborted. Failures are logged at debug level (the cluster link's own log says
/// whether the coordinator is reachable); transfers fall back to the control plane meanwhile.
pub async fn keep_dialled<H: Holder>(
    credentials: NodeCredentials,
    addr: String,
    server_name: String,
    holder: Arc<H>,
    limits: AnswerLimits,
    max_pause: Duration,
) {
    let mut pause = FIRST_PAUSE;
    loop {
        let started = tokio::time::Instant::now();
        match open(&credentials, &addr, &server_name).await {
            Ok(tls) => {
                tracing::info!(coordinator = %server_name, "bulk data plane linked");
                match answer(tls, holder.as_ref(), limits, &server_name).await {
                    Ok(()) => tracing::debug!(coordinator = %server_name, "bulk link closed"),
                    Err(e) => tracing::info!(coordinator = %server_name, "bulk link ended: {e}"),
                }
            }
            Err(e) => tracing::debug!("{e}"),
        }
        if started.elapsed() >= HEALTHY {
            pause = FIRST_PAUSE;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(max_pause.max(FIRST_PAUSE));
    }
}
