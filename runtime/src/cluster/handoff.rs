//! The listener's second protocol: a connection whose client asks, in the TLS handshake, for
//! the application protocol [`BULK_ALPN`] is not a ractor_cluster link but a link of the bulk
//! data plane (`crate::bulk`). It gets every check a cluster link gets — the handshake under
//! the same timeout, the client certificate verified against the consortium CA and the
//! revocation list, the same connection caps — and is then handed, with the certificate's
//! identity, to the node's [`BulkAcceptor`].
//!
//! ALPN rather than a second port: one address to open in a firewall and to configure, and a
//! client that does not ask for it (every cluster link) is unaffected. The cluster module knows
//! only this hand-off, not what the other side does with the stream, so the bulk plane can
//! build on the cluster without a loop between them.

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::identity::Identity;

pub use crate::tls::BULK_ALPN;

/// TCP keepalive on a link that may idle for long (a bulk link between transfers): a peer that
/// vanished without closing it (a machine gone, a NAT that forgot it) is noticed within about
/// a minute. Both ends set it.
pub fn keep_alive(tcp: &tokio::net::TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(30))
        .with_interval(std::time::Duration::from_secs(10))
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&ka) {
        tracing::debug!("TCP keepalive not set: {e}");
    }
}

/// A byte stream (here: a TLS stream whose peer is verified).
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// An accepted bulk link, boxed.
pub type BoxedStream = Box<dyn ByteStream>;

/// Takes the bulk links a listener accepts.
pub trait BulkAcceptor: Send + Sync + 'static {
    /// A link from `identity` (its certificate's), labelled `label` in logs. The future ends
    /// when the link is closed; the listener holds the connection's place among its caps (and
    /// the certificate's among those watched for revocation) until then.
    fn accept(
        &self,
        identity: Identity,
        label: String,
        stream: BoxedStream,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;

    /// Closes the link `label` (its certificate was revoked).
    fn close(&self, label: &str);
}
