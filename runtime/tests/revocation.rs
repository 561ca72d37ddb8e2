//! Revocation on a real cluster node: the consortium CA's revocation list refuses a
//! certificate at the handshake and closes its open link when the list changes; a list from
//! another CA is not taken. One coordinator node in this process, silos over loopback.

use std::time::Duration;

use fedsilo::certs::CertificateAuthority;
use fedsilo::cluster::{ClusterConfig, ClusterNode, LinkLimits, PeerEvent};
use fedsilo::identity::Role;
use fedsilo::tls::NodeCredentials;
use time::OffsetDateTime;

mod support;
use support::*;

/// Whether a session of `name` is bound at `server`.
fn bound(server: &ClusterNode, name: &str) -> bool {
    server
        .directory()
        .bound_peers()
        .iter()
        .any(|(_, i)| i.name == name)
}

/// Revocation: a certificate the consortium CA's revocation list names is refused at the
/// handshake — the silo hears `certificate_revoked` and stops for good — and a silo revoked
/// while linked is dropped within seconds of the list changing, while the others stay. A new
/// list that cannot be used leaves the last good one in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_and_its_open_link_closed() {
    use fedsilo::cluster::link::keep_linked;
    let (ca, _) = CertificateAuthority::generate("consortium", 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let crl = dir.path().join("crl.pem");
    std::fs::write(&crl, ca.revocation_list(&[], 1).unwrap()).unwrap();
    let server = ClusterNode::start(ClusterConfig {
        credentials: valid(&ca, &id("coordinator", Role::Coordinator)),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        limits: LinkLimits::with_handshake_timeout(Duration::from_secs(10)),
        crl: Some(crl.clone()),
        bulk: None,
    })
    .await
    .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let mut events = server.directory().subscribe();
    let bank_a = valid(&ca, &id("bank-a", Role::Silo));
    let serial_a = fedsilo::identity::revocation::serial_of(bank_a.cert_der()).unwrap();
    let node_of = |creds: NodeCredentials| {
        ClusterNode::start(ClusterConfig {
            credentials: creds,
            listen: None,
            limits: LinkLimits::with_handshake_timeout(Duration::from_secs(5)),
            crl: None,
            bulk: None,
        })
    };
    let a = node_of(bank_a).await.unwrap();
    a.connect(&addr, "coordinator", WAIT).await.expect("links");
    let b = good_silo(&ca, "bank-b", &server).await;
    for _ in 0..2 {
        next_event(&mut events, |e| matches!(e, PeerEvent::Bound { .. })).await;
    }

    // A list that is not the CA's (another CA signed it): reported, the last good one stays.
    let (other, _) = CertificateAuthority::generate("intruders", 1).unwrap();
    let forged = other.revocation_list(&[(serial_a.clone(), OffsetDateTime::now_utc())], 9);
    std::fs::write(&crl, forged.unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(bound(&server, "bank-a"));

    // bank-a revoked: its open link is closed; bank-b's is not.
    let list = ca.revocation_list(&[(serial_a, OffsetDateTime::now_utc())], 2);
    std::fs::write(&crl, list.unwrap()).unwrap();
    let closed = next_event(
        &mut events,
        |e| matches!(e, PeerEvent::Refused { reason, .. } if reason.contains("revoked")),
    )
    .await;
    let PeerEvent::Refused { reason, .. } = closed else {
        unreachable!()
    };
    assert!(reason.contains("certificate revoked"), "{reason}");
    tokio::time::timeout(WAIT, async {
        while bound(&server, "bank-a") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the revoked silo's session stayed");
    assert!(bound(&server, "bank-b"));

    // Linking again: refused at the handshake, and the silo stops for good.
    let ended = tokio::time::timeout(
        WAIT,
        keep_linked(
            &a,
            &addr,
            "coordinator",
            Role::Coordinator,
            false,
            Duration::from_secs(60),
        ),
    )
    .await
    .expect("the revoked silo kept retrying");
    let e = ended.unwrap_err().to_string();
    assert!(e.contains("CertificateRevoked"), "{e}");
    drop(b);
}
