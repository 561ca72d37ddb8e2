//! A process's membership in the cluster: one ractor_cluster `NodeServer`, our TLS listener,
//! and outgoing links, all bound to certificate identities through the [`PeerDirectory`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage,
};
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::auth_frames::ChallengeGuard;
use super::counting_stream::{ByteCounters, CountingStream, LabelledStream};
use super::directory::AuthDecision;
use super::refusal_watch::RefusalWatch;
use super::{PeerDirectory, PeerEvent};
use crate::connection_budget::{ConnectionLimits, Limiter};
use crate::identity::Identity;
use crate::tls::NodeCredentials;
use crate::{Error, Result};

/// Default time a peer has to finish its TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest cluster frame this node accepts. Model tensors travel in chunks well below it.
pub const MAX_FRAME_BYTES: u64 = 64 * 1024 * 1024;

/// Default time a link's peer may be silent before a new link of its identity may replace it.
/// ractor_cluster pings every 1–5 s, so a live peer is never silent that long.
pub const DEFAULT_SILENCE_LIMIT: Duration = Duration::from_secs(15);
/// Default time a link's peer may be silent before the link is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Time limits of the links a [`ClusterNode`] accepts.
#[derive(Debug, Clone)]
pub struct LinkLimits {
    /// How long a peer has from connecting to an authenticated session (TLS handshake, node
    /// name, ractor's challenge).
    pub handshake_timeout: Duration,
    /// A link silent this long is dead: a new link of the same identity replaces it. Until
    /// then a second link of that identity is refused.
    pub silence_limit: Duration,
    /// A link silent this long is closed.
    pub idle_timeout: Duration,
    /// Connections held at once, in total and per peer address (beyond: closed at once).
    pub connections: ConnectionLimits,
}

/// Default connection caps of a cluster listener.
pub const DEFAULT_CONNECTIONS: ConnectionLimits = ConnectionLimits {
    total: 512,
    // Each silo holds two links (cluster and bulk): 64 silos behind one address.
    per_peer: 128,
};

impl Default for LinkLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            silence_limit: DEFAULT_SILENCE_LIMIT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connections: DEFAULT_CONNECTIONS,
        }
    }
}

impl LinkLimits {
    /// The defaults with another handshake timeout.
    pub fn with_handshake_timeout(handshake_timeout: Duration) -> Self {
        Self {
            handshake_timeout,
            ..Self::default()
        }
    }
}

/// How to start a [`ClusterNode`].
#[derive(Clone)]
pub struct ClusterConfig {
    /// This node's credentials; its identity is its node name.
    pub credentials: NodeCredentials,
    /// Where to accept links (`None`: outgoing links only).
    pub listen: Option<SocketAddr>,
    /// Time limits of accepted links.
    pub limits: LinkLimits,
    /// The consortium CA's certificate revocation list, enforced on accepted links
    /// ([`super::revocation`]; `None`: none).
    pub crl: Option<std::path::PathBuf>,
    /// Who takes the bulk data-plane links the listener accepts ([`super::handoff`]; `None`:
    /// they are refused).
    pub bulk: Option<Arc<dyn super::handoff::BulkAcceptor>>,
}

/// A running cluster node.
pub struct ClusterNode {
    server: ActorRef<NodeServerMessage>,
    directory: Arc<PeerDirectory>,
    credentials: NodeCredentials,
    local_addr: Option<SocketAddr>,
    accept_task: Option<JoinHandle<()>>,
    watch_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("identity", self.credentials.identity())
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// Binds ractor sessions to certificate identities as ractor_cluster reports them.
struct IdentityGuard {
    directory: Arc<PeerDirectory>,
}

impl NodeEventSubscription for IdentityGuard {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        self.directory.session_opened(&ses.peer_addr, ses.actor);
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.directory.disconnected(ses.node_id, &ses.peer_addr);
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let declared = ses.peer_name.as_ref().map(|n| n.name.as_str());
        if let AuthDecision::Refuse(reason) =
            self.directory
                .authenticate(ses.node_id, &ses.peer_addr, declared)
        {
            ses.actor.stop(Some(reason));
        }
    }
}

impl ClusterNode {
    /// Starts the node server and, if configured, the listener.
    pub async fn start(config: ClusterConfig) -> Result<Self> {
        crate::tls::install_crypto_provider();
        let identity = config.credentials.identity().clone();
        let revocations = Arc::new(super::revocation::Revocations::new(
            config.credentials.clone(),
            config.crl.clone(),
        )?);
        // ractor_cluster always runs a listener of its own; keep it on an ephemeral loopback
        // port behind a TLS configuration no client can complete a handshake with: links come
        // only through our listener, where names are checked before ractor sees them.
        let sealed = TlsAcceptor::from(crate::tls::sealed_server_config()?);
        let node_server = NodeServer::new(
            0,
            cookie(),
            identity.name.clone(),
            "fedsilo".to_string(),
            Some(IncomingEncryptionMode::Tls(sealed)),
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
        .with_max_inbound_frame_size(MAX_FRAME_BYTES);
        let (server, _) = Actor::spawn(None, node_server, ())
            .await
            .map_err(|e| Error::Cluster(format!("starting node server: {e}")))?;
        let directory = Arc::new(PeerDirectory::default());
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "fedsilo.identity".to_string(),
                subscription: Box::new(IdentityGuard {
                    directory: directory.clone(),
                }),
            })
            .map_err(|e| Error::Cluster(format!("subscribing to node events: {e}")))?;
        let (local_addr, accept_task, watch_task) = match config.listen {
            None => (None, None, None),
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Cluster(format!("cannot listen on {addr}: {e}")))?;
                let local = listener
                    .local_addr()
                    .map_err(|e| Error::Cluster(format!("listener address: {e}")))?;
                let limiter = Limiter::new("cluster listener", config.limits.connections);
                let task = tokio::spawn(super::listener::accept_loop(
                    listener,
                    limiter,
                    revocations.clone(),
                    server.clone(),
                    directory.clone(),
                    config.limits.clone(),
                    config.bulk.clone(),
                ));
                let watch = config.crl.is_some().then(|| {
                    tokio::spawn(super::revocation::watch(
                        revocations.clone(),
                        directory.clone(),
                    ))
                });
                tracing::info!(%local, node = %identity, "listening (mTLS, TLS 1.3)");
                (Some(local), Some(task), watch)
            }
        };
        Ok(Self {
            server,
            directory,
            credentials: config.credentials,
            local_addr,
            accept_task,
            watch_task,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        self.credentials.identity()
    }

    /// The directory of verified peers.
    pub fn directory(&self) -> &Arc<PeerDirectory> {
        &self.directory
    }

    /// Opens an mTLS link to the node `expected_name` at `addr` and waits until ractor_cluster
    /// has authenticated it and the directory has bound it to the server's certificate.
    /// Returns the server's identity. Fails with a reason if the server refuses us (in TLS 1.3
    /// the client learns that only when the link closes), on a wrong server certificate, or
    /// after `timeout`.
    pub async fn connect(
        &self,
        addr: &str,
        expected_name: &str,
        timeout: Duration,
    ) -> Result<Identity> {
        // The label of the link once dialled, to clean up after a failure or a timeout.
        let dialled: std::sync::Mutex<Option<String>> = Default::default();
        let work = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| {
                Error::Cluster(format!("cannot reach {expected_name} at {addr}: {e}"))
            })?;
            let _ = tcp.set_nodelay(true);
            let peer = tcp
                .peer_addr()
                .map_err(|e| Error::Cluster(format!("{addr}: {e}")))?;
            let local = tcp
                .local_addr()
                .map_err(|e| Error::Cluster(format!("{addr}: {e}")))?;
            let server_name =
                ServerName::try_from(expected_name.to_string()).map_err(|e| Error::Config {
                    origin: "peer name".into(),
                    message: format!("`{expected_name}` is not a valid node name: {e}"),
                })?;
            let connector = TlsConnector::from(self.credentials.client_config()?);
            let tls = connector.connect(server_name, tcp).await.map_err(|e| {
                let peer = format!("{expected_name} at {addr}");
                match permanent(&e) {
                    Some(reason) => Error::TlsRefused { peer, reason },
                    None => Error::Cluster(format!("TLS handshake with {peer} failed: {e}")),
                }
            })?;
            let identity = {
                let (_, conn) = tls.get_ref();
                let der = conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .ok_or_else(|| Error::Cluster(format!("{addr} sent no certificate")))?;
                Identity::from_cert_der(der, &format!("{expected_name} at {addr}"))?
            };
            let label = format!("{}>{peer}", super::listener::link_label(&local));
            let counters = Arc::new(ByteCounters::default());
            self.directory
                .record_handshake(&label, identity.clone(), counters.clone());
            let mut events = self.directory.subscribe();
            // The server's challenge must name the node its certificate names, before ractor
            // can elect between sessions by that name; its refusal of our certificate is kept.
            let verdict = super::refusal_watch::Verdict::default();
            let watched = RefusalWatch::new(tls, verdict.clone(), permanent);
            let stream = LabelledStream {
                stream: CountingStream::new(ChallengeGuard::new(watched, &identity.name), counters),
                label: label.clone(),
            };
            let refused = || {
                verdict
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .map(|reason| Error::TlsRefused {
                        peer: format!("{expected_name} at {addr}"),
                        reason,
                    })
            };
            *dialled.lock().unwrap_or_else(|p| p.into_inner()) = Some(label.clone());
            self.server
                .cast(NodeServerMessage::ConnectionOpenedExternal {
                    stream: Box::new(stream),
                    is_server: false,
                })
                .map_err(|e| Error::Cluster(format!("node server gone: {e}")))?;
            loop {
                match events.recv().await {
                    Ok(PeerEvent::Bound {
                        label: l, identity, ..
                    }) if l == label => return Ok(identity),
                    Ok(PeerEvent::Dropped { label: l, reason }) if l == label => {
                        return Err(Error::Cluster(format!(
                            "link to {expected_name} dropped: {reason}"
                        )))
                    }
                    Ok(PeerEvent::Disconnected { label: l, .. }) if l == label => {
                        if let Some(e) = refused() {
                            return Err(e);
                        }
                        return Err(Error::Cluster(format!(
                            "{expected_name} at {addr} closed the link before authentication \
                             (does it accept our certificate? is it issued by the same consortium CA and still valid? \
                             is this identity already linked from elsewhere? a second link is refused while the first is alive, \
                             and an old link counts as dead after {:?} of silence)",
                            DEFAULT_SILENCE_LIMIT
                        )));
                    }
                    Err(RecvError::Lagged(_)) if self.directory.is_bound(&label) => {
                        return Ok(identity)
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => {
                        return Err(Error::Cluster("directory closed".into()))
                    }
                }
            }
        };
        let outcome = match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(Error::Cluster(format!(
                "no authenticated link to {expected_name} at {addr} within {timeout:?}"
            ))),
        };
        if outcome.is_err() {
            // A link that did not come up leaves no session, descriptor or entry behind.
            let label = dialled.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(label) = label {
                self.directory.close(&label, "the link did not come up");
            }
        }
        outcome
    }

    /// Stops the listener and the node server (closing every session).
    pub fn shutdown(&mut self) {
        if let Some(t) = self.accept_task.take() {
            t.abort();
        }
        if let Some(t) = self.watch_task.take() {
            t.abort();
        }
        self.server.stop(Some("shutdown".into()));
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The ractor_cluster cookie. It is not a secret in fedsilo — mutual TLS is the access control —
/// but it keeps a fedsilo node from talking to unrelated ractor clusters.
pub fn cookie() -> String {
    format!("fedsilo-{}", crate::protocol::PROTOCOL_VERSION)
}

/// The reason of a handshake failure that retrying cannot cure, if `e` is one: our check of the
/// peer's certificate failed (another CA, another name, expired, revoked, a bad signature), or
/// the peer refused ours with an alert that says so. A refused connection, a reset or a timeout
/// is not one: the peer may come back.
fn permanent(e: &std::io::Error) -> Option<String> {
    use rustls::AlertDescription as A;
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(c) => {
            Some(format!("its certificate is not acceptable ({c:?})"))
        }
        rustls::Error::AlertReceived(
            a @ (A::BadCertificate
            | A::UnknownCA
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::AccessDenied),
        ) => Some(format!("it refused our certificate ({a:?})")),
        _ => None,
    }
}

#[cfg(test)]
mod permanence_tests {
    use super::permanent;

    fn io(e: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn certificate_refusals_are_permanent_and_network_faults_are_not() {
        let wrong_ca = io(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert!(permanent(&wrong_ca).unwrap().contains("UnknownIssuer"));
        let refused = io(rustls::Error::AlertReceived(
            rustls::AlertDescription::UnknownCA,
        ));
        assert!(permanent(&refused)
            .unwrap()
            .contains("refused our certificate"));
        for transient in [
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            std::io::Error::from(std::io::ErrorKind::TimedOut),
            io(rustls::Error::AlertReceived(
                rustls::AlertDescription::InternalError,
            )),
        ] {
            assert_eq!(permanent(&transient), None, "{transient}");
        }
    }
}
