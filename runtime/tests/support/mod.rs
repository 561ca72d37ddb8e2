//! What the in-process TLS and cluster tests share: a consortium's credentials, a coordinator
//! node on a free loopback port, a silo linked to it, and a bounded wait for a peer event.

#![allow(dead_code)] // each test crate uses its own share of it

use std::time::Duration;

use fedsilo::certs::CertificateAuthority;
use fedsilo::cluster::{ClusterConfig, ClusterNode, LinkLimits, PeerEvent};
use fedsilo::identity::{Identity, Role};
use fedsilo::tls::NodeCredentials;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration as TimeDuration, OffsetDateTime};
use tokio::sync::broadcast;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn id(name: &str, role: Role) -> Identity {
    Identity {
        name: name.into(),
        role,
        region: "eu".into(),
    }
}

pub fn creds(
    ca: &CertificateAuthority,
    who: &Identity,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> NodeCredentials {
    let issued = ca.issue_with_validity(who, not_before, not_after).unwrap();
    NodeCredentials::from_parts(
        vec![CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()],
        vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
        &who.name,
    )
    .unwrap()
}

pub fn valid(ca: &CertificateAuthority, who: &Identity) -> NodeCredentials {
    let now = OffsetDateTime::now_utc();
    creds(
        ca,
        who,
        now - TimeDuration::hours(1),
        now + TimeDuration::days(1),
    )
}

pub async fn coordinator(ca: &CertificateAuthority, handshake_timeout: Duration) -> ClusterNode {
    coordinator_with(ca, LinkLimits::with_handshake_timeout(handshake_timeout)).await
}

pub async fn coordinator_with(ca: &CertificateAuthority, limits: LinkLimits) -> ClusterNode {
    ClusterNode::start(ClusterConfig {
        credentials: valid(ca, &id("coordinator", Role::Coordinator)),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        limits,
        crl: None,
        bulk: None,
    })
    .await
    .unwrap()
}

/// Waits for the first event matching `pred`.
pub async fn next_event(
    rx: &mut broadcast::Receiver<PeerEvent>,
    pred: impl Fn(&PeerEvent) -> bool,
) -> PeerEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream closed: {e}"),
            }
        }
    })
    .await
    .expect("expected event did not arrive")
}

pub async fn good_silo(ca: &CertificateAuthority, name: &str, server: &ClusterNode) -> ClusterNode {
    let silo = ClusterNode::start(ClusterConfig {
        credentials: valid(ca, &id(name, Role::Silo)),
        listen: None,
        limits: LinkLimits::with_handshake_timeout(Duration::from_secs(5)),
        crl: None,
        bulk: None,
    })
    .await
    .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let peer = silo
        .connect(&addr, "coordinator", WAIT)
        .await
        .expect("good silo links");
    assert_eq!(peer.role, Role::Coordinator);
    silo
}
