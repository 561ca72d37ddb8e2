//! Which verified identity stands behind which ractor session.
//!
//! Lifecycle of a link: the TLS handshake completes and [`PeerDirectory::record_handshake`]
//! files the certificate's identity under the connection's label; ractor_cluster authenticates
//! the session and [`PeerDirectory::authenticate`] compares the name the peer declared with the
//! certificate — equal, the session's node id is bound to the identity; different (or no
//! handshake on record), the session is refused. When the session ends the binding goes.
//! Invariant: a node id is bound only to an identity read from a certificate that TLS verified
//! on that very connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ractor_cluster::NodeId;
use tokio::sync::broadcast;

use super::counting_stream::ByteCounters;
use crate::identity::Identity;

/// Something that happened to a peer link. Subscribe with [`PeerDirectory::subscribe`].
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// A connection was refused before it became a session (TLS failure, timeout, bad cert).
    Refused {
        /// The peer's address.
        peer_addr: String,
        /// Why.
        reason: String,
    },
    /// A session was authenticated and bound to a certificate identity.
    Bound {
        /// ractor_cluster's node id of the session.
        node_id: NodeId,
        /// The connection label.
        label: String,
        /// The verified identity.
        identity: Identity,
    },
    /// A session was dropped because its declared name did not match its certificate.
    Dropped {
        /// The connection label.
        label: String,
        /// Why.
        reason: String,
    },
    /// A session ended (peer gone, link broken, or dropped by us).
    Disconnected {
        /// ractor_cluster's node id of the session.
        node_id: NodeId,
        /// The connection label.
        label: String,
        /// The identity it was bound to, if it had been.
        identity: Option<Identity>,
    },
}

#[derive(Debug, Clone)]
struct Link {
    identity: Identity,
    counters: Arc<ByteCounters>,
}

#[derive(Debug, Default)]
struct Inner {
    handshakes: HashMap<String, Link>,
    bound: HashMap<NodeId, (String, Link)>,
}

/// The directory of verified peers of one node. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct PeerDirectory {
    inner: Mutex<Inner>,
    events: broadcast::Sender<PeerEvent>,
}

impl Default for PeerDirectory {
    fn default() -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Mutex::new(Inner::default()),
            events,
        }
    }
}

/// What [`PeerDirectory::authenticate`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    /// Bound to this identity.
    Accept(Identity),
    /// Refuse the session, for this reason.
    Refuse(String),
}

impl PeerDirectory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means a panic elsewhere while holding it; the map is still consistent
        // (every mutation is a single insert/remove), so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to peer events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    fn emit(&self, e: PeerEvent) {
        let _ = self.events.send(e);
    }

    /// Files the identity a verified TLS handshake produced for the connection `label`.
    pub fn record_handshake(&self, label: &str, identity: Identity, counters: Arc<ByteCounters>) {
        self.lock()
            .handshakes
            .insert(label.to_string(), Link { identity, counters });
    }

    /// Reports a refused connection.
    pub fn refused(&self, peer_addr: &str, reason: &str) {
        tracing::warn!(peer = peer_addr, "refused connection: {reason}");
        self.emit(PeerEvent::Refused {
            peer_addr: peer_addr.to_string(),
            reason: reason.to_string(),
        });
    }

    /// Checks a ractor session's declared node name (`name@host`) against the certificate
    /// identity of its connection, and binds `node_id` on success.
    pub fn authenticate(
        &self,
        node_id: NodeId,
        label: &str,
        declared: Option<&str>,
    ) -> AuthDecision {
        let mut inner = self.lock();
        let Some(link) = inner.handshakes.get(label).cloned() else {
            drop(inner);
            let reason = "no verified TLS handshake on record for this connection".to_string();
            self.emit(PeerEvent::Dropped {
                label: label.to_string(),
                reason: reason.clone(),
            });
            return AuthDecision::Refuse(reason);
        };
        let declared_name = declared.map(|d| d.split('@').next().unwrap_or(d));
        if declared_name != Some(link.identity.name.as_str()) {
            drop(inner);
            let reason = format!(
                "peer declared node name {:?} but its certificate says `{}`",
                declared.unwrap_or("<none>"),
                link.identity.name
            );
            tracing::warn!(label, "dropping session: {reason}");
            self.emit(PeerEvent::Dropped {
                label: label.to_string(),
                reason: reason.clone(),
            });
            return AuthDecision::Refuse(reason);
        }
        let identity = link.identity.clone();
        inner.bound.insert(node_id, (label.to_string(), link));
        drop(inner);
        tracing::info!(node_id, peer = %identity, "peer authenticated");
        self.emit(PeerEvent::Bound {
            node_id,
            label: label.to_string(),
            identity: identity.clone(),
        });
        AuthDecision::Accept(identity)
    }

    /// Forgets a session that ended.
    pub fn disconnected(&self, node_id: NodeId, label: &str) {
        let mut inner = self.lock();
        let identity = match inner.bound.get(&node_id) {
            Some((l, _)) if l == label => {
                inner.bound.remove(&node_id).map(|(_, link)| link.identity)
            }
            _ => None,
        };
        inner.handshakes.remove(label);
        drop(inner);
        if let Some(id) = &identity {
            tracing::info!(node_id, peer = %id, "peer disconnected");
        }
        self.emit(PeerEvent::Disconnected {
            node_id,
            label: label.to_string(),
            identity,
        });
    }

    /// The verified identity bound to `node_id`, if its session is up.
    pub fn identity_of(&self, node_id: NodeId) -> Option<Identity> {
        self.lock()
            .bound
            .get(&node_id)
            .map(|(_, l)| l.identity.clone())
    }

    /// The byte counters of the session bound to `node_id`.
    pub fn counters_of(&self, node_id: NodeId) -> Option<Arc<ByteCounters>> {
        self.lock()
            .bound
            .get(&node_id)
            .map(|(_, l)| l.counters.clone())
    }

    /// Bytes (received, sent) over every session open now.
    pub fn open_session_bytes(&self) -> (u64, u64) {
        self.lock().bound.values().fold((0, 0), |(r, s), (_, l)| {
            (r + l.counters.received(), s + l.counters.sent())
        })
    }

    /// Every bound peer: node id and identity.
    pub fn bound_peers(&self) -> Vec<(NodeId, Identity)> {
        self.lock()
            .bound
            .iter()
            .map(|(id, (_, l))| (*id, l.identity.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;

    fn id(name: &str) -> Identity {
        Identity {
            name: name.into(),
            role: Role::Silo,
            region: "eu".into(),
        }
    }

    #[test]
    fn binds_only_matching_names() {
        let d = PeerDirectory::default();
        d.record_handshake("l1", id("a"), Default::default());
        assert!(matches!(
            d.authenticate(1, "l1", Some("b@host")),
            AuthDecision::Refuse(_)
        ));
        assert!(d.identity_of(1).is_none());
        assert_eq!(
            d.authenticate(1, "l1", Some("a@host")),
            AuthDecision::Accept(id("a"))
        );
        assert_eq!(d.identity_of(1), Some(id("a")));
        d.disconnected(1, "l1");
        assert!(d.identity_of(1).is_none());
    }

    #[test]
    fn a_session_without_handshake_is_refused() {
        let d = PeerDirectory::default();
        assert!(matches!(
            d.authenticate(7, "nope", Some("a@h")),
            AuthDecision::Refuse(_)
        ));
    }
}
