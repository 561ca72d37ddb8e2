//! Which verified identity stands behind which ractor session.
//!
//! Lifecycle of a link on the accepting side: the TLS handshake completes and the listener reads
//! the peer's first cluster frame (its declared node name, [`super::auth_frames`]); then
//! [`PeerDirectory::admit`] decides, under one lock, whether the connection may become a session
//! at all — the declared name must equal the certificate's, and an identity that already has a
//! live link gets no second one ([`admission`]). Only an admitted connection reaches
//! ractor_cluster, so ractor's duplicate-session election can never be used to displace another
//! node's session. When ractor authenticates the session, [`PeerDirectory::authenticate`] checks
//! the name once more and binds the session's node id to the identity. When the session ends
//! the binding goes.
//!
//! Invariants: a node id is bound only to an identity read from a certificate that TLS verified
//! on that very connection; an accepted connection is admitted only while no other live link of
//! its identity is on file (links this node dials are filed without that check: it dials each
//! peer once, by the name TLS verified). A link whose
//! peer has been silent longer than the silence limit is dead (ractor_cluster pings every
//! 1–5 s), and a new link for its identity replaces it: the old session is stopped and a
//! [`PeerEvent::Replaced`] is emitted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::{NodeId, NodeSessionMessage};
use tokio::sync::broadcast;

use super::counting_stream::ByteCounters;
use super::refusal_log::RefusalLog;
use crate::identity::Identity;

/// Something that happened to a peer link. Subscribe with [`PeerDirectory::subscribe`].
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// A connection was refused before it became a session (TLS failure, timeout, bad cert,
    /// a declared name that is not the certificate's, a second link for a live identity).
    Refused {
        /// The peer's address.
        peer_addr: String,
        /// The verified certificate identity, when the refusal came after the TLS handshake.
        identity: Option<Identity>,
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
    /// A dead link (its peer silent beyond the silence limit) was replaced by a new link of the
    /// same identity; the old session is being stopped.
    Replaced {
        /// The old link's label.
        old_label: String,
        /// The new link's label.
        new_label: String,
        /// The identity.
        identity: Identity,
        /// How long the old link's peer had been silent.
        silent_for: Duration,
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
    /// Every link on file, by label: admitted or handshaken, bound or not yet.
    links: HashMap<String, Link>,
    bound: HashMap<NodeId, (String, Link)>,
    /// The ractor session actor of each label, once ractor has opened it.
    sessions: HashMap<String, ActorRef<NodeSessionMessage>>,
}

/// The directory of verified peers of one node. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct PeerDirectory {
    inner: Mutex<Inner>,
    events: broadcast::Sender<PeerEvent>,
    refusals: RefusalLog,
}

impl Default for PeerDirectory {
    fn default() -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Mutex::new(Inner::default()),
            events,
            refusals: RefusalLog::default(),
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

/// Whether a new connection may become a session ([`admission`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// No other link for this identity: go ahead.
    Admit,
    /// The identity's existing link is dead: replace it.
    Replace {
        /// The existing link's label.
        old_label: String,
        /// How long its peer has been silent.
        silent_for: Duration,
    },
    /// Refuse the connection, for this reason.
    Refuse(String),
}

/// The existing link of an identity, as [`admission`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingLink<'a> {
    /// Its label (the peer's address on the accepting side).
    pub label: &'a str,
    /// How long its peer has been silent.
    pub silent_for: Duration,
}

/// The admission rule, pure: a connection whose certificate says `cert_name` and whose first
/// frame declared the node name `declared` may become a session if the names are equal and the
/// identity has no other link, or only one silent for at least `silence_limit`.
pub fn admission(
    cert_name: &str,
    declared: &str,
    existing: Option<ExistingLink<'_>>,
    silence_limit: Duration,
) -> Admission {
    if declared != cert_name {
        return Admission::Refuse(format!(
            "peer declared node name `{declared}` but its certificate says `{cert_name}`"
        ));
    }
    match existing {
        None => Admission::Admit,
        Some(e) if e.silent_for >= silence_limit => Admission::Replace {
            old_label: e.label.to_string(),
            silent_for: e.silent_for,
        },
        Some(e) => Admission::Refuse(format!(
            "`{cert_name}` is already connected (from {}, last heard {:.1} s ago); a second \
             session for the same certificate is refused while the first is alive (a link \
             silent for {:.0} s may be replaced)",
            e.label,
            e.silent_for.as_secs_f64(),
            silence_limit.as_secs_f64()
        )),
    }
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

    /// Files the identity a verified TLS handshake produced for the connection `label`, with no
    /// admission check: for links this node dialled itself (the server's name was checked by
    /// TLS against the name dialled).
    pub fn record_handshake(&self, label: &str, identity: Identity, counters: Arc<ByteCounters>) {
        self.lock()
            .links
            .insert(label.to_string(), Link { identity, counters });
    }

    /// Decides whether the accepted connection `label`, whose verified certificate says
    /// `identity` and whose first frame declared `declared` (the node part of `node@host`), may
    /// become a session ([`admission`]); on admission files it, atomically with the decision.
    /// On `Replace` the old link is forgotten, its session (if ractor opened one) is stopped,
    /// and [`PeerEvent::Replaced`] is emitted. A refusal is logged and emitted.
    pub fn admit(
        &self,
        label: &str,
        identity: &Identity,
        declared: &str,
        counters: Arc<ByteCounters>,
        silence_limit: Duration,
    ) -> Admission {
        let mut inner = self.lock();
        let existing = inner
            .links
            .iter()
            .find(|(l, link)| l.as_str() != label && link.identity.name == identity.name)
            .map(|(l, link)| (l.clone(), link.counters.silent_for()));
        let decision = admission(
            &identity.name,
            declared,
            existing.as_ref().map(|(l, silent_for)| ExistingLink {
                label: l,
                silent_for: *silent_for,
            }),
            silence_limit,
        );
        let mut stop = None;
        match &decision {
            Admission::Refuse(_) => {}
            Admission::Admit => {}
            Admission::Replace { old_label, .. } => {
                inner.links.remove(old_label);
                stop = inner.sessions.remove(old_label);
            }
        }
        if !matches!(decision, Admission::Refuse(_)) {
            inner.links.insert(
                label.to_string(),
                Link {
                    identity: identity.clone(),
                    counters,
                },
            );
        }
        drop(inner);
        match &decision {
            Admission::Refuse(reason) => self.refused(label, Some(identity), reason),
            Admission::Admit => {}
            Admission::Replace {
                old_label,
                silent_for,
            } => {
                tracing::warn!(
                    peer = %identity,
                    old = %old_label,
                    new = %label,
                    "replacing a dead link: its peer was silent for {:.1} s",
                    silent_for.as_secs_f64()
                );
                if let Some(actor) = stop {
                    actor.stop(Some("replaced by a new link of the same identity".into()));
                }
                self.emit(PeerEvent::Replaced {
                    old_label: old_label.clone(),
                    new_label: label.to_string(),
                    identity: identity.clone(),
                    silent_for: *silent_for,
                });
            }
        }
        decision
    }

    /// Reports a refused connection: logged (rate-limited) with the peer's address and, when
    /// known, its certificate identity, and emitted as [`PeerEvent::Refused`].
    pub fn refused(&self, peer_addr: &str, identity: Option<&Identity>, reason: &str) {
        self.refusals.warn(peer_addr, identity, reason);
        self.emit(PeerEvent::Refused {
            peer_addr: peer_addr.to_string(),
            identity: identity.cloned(),
            reason: reason.to_string(),
        });
    }

    /// How many refusals were logged or suppressed so far.
    pub fn refusal_count(&self) -> u64 {
        self.refusals.total()
    }

    /// Records the ractor session actor ractor_cluster opened for the connection `label`, so a
    /// dead or unauthenticated session can be stopped.
    pub fn session_opened(&self, label: &str, actor: ActorRef<NodeSessionMessage>) {
        let mut inner = self.lock();
        if inner.links.contains_key(label) {
            inner.sessions.insert(label.to_string(), actor);
        } else {
            // Replaced or refused between admission and ractor opening it.
            drop(inner);
            actor.stop(Some("link no longer admitted".into()));
        }
    }

    /// Stops the session of `label` (if ractor opened one) and forgets its link.
    pub fn close(&self, label: &str, reason: &str) {
        let actor = {
            let mut inner = self.lock();
            inner.links.remove(label);
            inner.sessions.remove(label)
        };
        if let Some(actor) = actor {
            actor.stop(Some(reason.to_string()));
        }
    }

    /// Whether `label` has been bound to a session.
    pub fn is_bound(&self, label: &str) -> bool {
        self.lock().bound.values().any(|(l, _)| l == label)
    }

    /// How long the peer of `label` has been silent, if the link is on file.
    pub fn silent_for(&self, label: &str) -> Option<Duration> {
        self.lock()
            .links
            .get(label)
            .map(|l| l.counters.silent_for())
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
        let Some(link) = inner.links.get(label).cloned() else {
            drop(inner);
            let reason = "no admitted TLS link on record for this connection".to_string();
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
        inner.links.remove(label);
        inner.sessions.remove(label);
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

    /// Forgets a link whose stream never reached ractor (the node server was gone).
    pub fn forget(&self, label: &str) {
        let mut inner = self.lock();
        inner.links.remove(label);
        inner.sessions.remove(label);
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
    fn admission_binds_the_declared_name_to_the_certificate() {
        let limit = Duration::from_secs(15);
        assert_eq!(admission("a", "a", None, limit), Admission::Admit);
        let Admission::Refuse(r) = admission("mallory", "a", None, limit) else {
            panic!("a foreign name must be refused")
        };
        assert!(r.contains("`a`") && r.contains("`mallory`"), "{r}");
    }

    #[test]
    fn a_live_identity_keeps_its_link_and_a_dead_one_is_replaced() {
        let limit = Duration::from_secs(15);
        let alive = ExistingLink {
            label: "127.0.0.1:1",
            silent_for: Duration::from_secs(3),
        };
        let Admission::Refuse(r) = admission("a", "a", Some(alive), limit) else {
            panic!("a second link for a live identity must be refused")
        };
        assert!(
            r.contains("already connected") && r.contains("127.0.0.1:1"),
            "{r}"
        );
        let dead = ExistingLink {
            label: "127.0.0.1:1",
            silent_for: limit,
        };
        assert_eq!(
            admission("a", "a", Some(dead), limit),
            Admission::Replace {
                old_label: "127.0.0.1:1".into(),
                silent_for: limit
            }
        );
        // A foreign name is refused even when the real holder's link is dead.
        let dead = ExistingLink {
            label: "127.0.0.1:1",
            silent_for: limit * 2,
        };
        assert!(matches!(
            admission("b", "a", Some(dead), limit),
            Admission::Refuse(_)
        ));
    }

    #[test]
    fn admit_is_one_decision_per_identity() {
        let d = PeerDirectory::default();
        let limit = Duration::from_secs(15);
        assert_eq!(
            d.admit("l1", &id("a"), "a", Default::default(), limit),
            Admission::Admit
        );
        // The first link is fresh (just heard from): a second is refused, a third too.
        assert!(matches!(
            d.admit("l2", &id("a"), "a", Default::default(), limit),
            Admission::Refuse(_)
        ));
        // Another identity is unaffected.
        assert_eq!(
            d.admit("l3", &id("b"), "b", Default::default(), limit),
            Admission::Admit
        );
        // With no silence tolerated, the first link counts as dead and is replaced.
        assert!(matches!(
            d.admit("l4", &id("a"), "a", Default::default(), Duration::ZERO),
            Admission::Replace { ref old_label, .. } if old_label == "l1"
        ));
        assert!(d.silent_for("l1").is_none());
        assert!(d.silent_for("l4").is_some());
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
