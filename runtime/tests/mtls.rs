//! The cluster refuses peers it cannot verify and keeps serving the others.
//!
//! One coordinator node (a real ractor_cluster `NodeServer` behind fedsilo's listener) in this
//! process; clients with good and bad credentials connect to it over loopback. Outcomes are
//! observed through the coordinator's peer directory events: no sleeps, every wait bounded.

use std::sync::Arc;
use std::time::Duration;

use fedsilo::certs::CertificateAuthority;
use fedsilo::cluster::{ClusterConfig, ClusterNode, LinkLimits, PeerEvent};
use fedsilo::identity::{Identity, Role};
use fedsilo::tls::NodeCredentials;
use ractor::Actor;
use ractor_cluster::NodeServer;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use time::{Duration as TimeDuration, OffsetDateTime};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod support;
use support::*;

/// A raw TLS client: connects with `client` credentials (or none) and completes the handshake
/// from its side, then writes a byte so the server sees the connection.
async fn raw_tls_attempt(
    addr: std::net::SocketAddr,
    client: Option<&NodeCredentials>,
    roots_from: &CertificateAuthority,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let config = match client {
        Some(c) => c.client_config().unwrap(),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(roots_from.cert_pem().as_bytes()).unwrap())
                .unwrap();
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
            )
        }
    };
    if let Ok(mut tls) = TlsConnector::from(config)
        .connect(ServerName::try_from("coordinator").unwrap(), tcp)
        .await
    {
        let _ = tls.write_all(b"x").await;
        let _ = tls.flush().await;
        // Keep the stream open until the server closes it.
        let mut buf = [0u8; 16];
        let _ = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut tls, &mut buf)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_are_refused_and_good_ones_keep_being_served() {
    let (ca, _) = CertificateAuthority::generate("consortium", 1).unwrap();
    let (other_ca, _) = CertificateAuthority::generate("intruders", 1).unwrap();
    let server = coordinator(&ca, Duration::from_secs(10)).await;
    let addr = server.local_addr().unwrap();
    let mut events = server.directory().subscribe();

    // A good silo links first; it must stay linked through everything below.
    let a = good_silo(&ca, "bank-a", &server).await;
    let bound_a = match next_event(&mut events, |e| matches!(e, PeerEvent::Bound { .. })).await {
        PeerEvent::Bound {
            node_id, identity, ..
        } => {
            assert_eq!(identity, id("bank-a", Role::Silo));
            node_id
        }
        _ => unreachable!(),
    };

    // 1. No client certificate.
    raw_tls_attempt(addr, None, &ca).await;
    let e = next_event(&mut events, |e| matches!(e, PeerEvent::Refused { .. })).await;
    let PeerEvent::Refused { reason, .. } = e else {
        unreachable!()
    };
    assert!(
        reason.to_lowercase().contains("certificate"),
        "no-cert refusal: {reason}"
    );

    // 2. A certificate from another CA.
    let foreign = valid(&other_ca, &id("bank-x", Role::Silo));
    raw_tls_attempt(addr, Some(&foreign), &ca).await;
    let PeerEvent::Refused { reason, .. } =
        next_event(&mut events, |e| matches!(e, PeerEvent::Refused { .. })).await
    else {
        unreachable!()
    };
    assert!(
        reason.contains("TLS handshake failed"),
        "foreign CA refusal: {reason}"
    );

    // 3. An expired certificate from the right CA.
    let now = OffsetDateTime::now_utc();
    let expired = creds(
        &ca,
        &id("bank-old", Role::Silo),
        now - TimeDuration::days(10),
        now - TimeDuration::days(1),
    );
    raw_tls_attempt(addr, Some(&expired), &ca).await;
    let PeerEvent::Refused { reason, .. } =
        next_event(&mut events, |e| matches!(e, PeerEvent::Refused { .. })).await
    else {
        unreachable!()
    };
    assert!(
        reason.to_lowercase().contains("expired"),
        "expired refusal: {reason}"
    );

    // The same refusals seen from a real cluster client: connect() reports the server closed
    // the link before authentication.
    let expired_node = ClusterNode::start(ClusterConfig {
        credentials: expired,
        listen: None,
        limits: LinkLimits::with_handshake_timeout(WAIT),
        crl: None,
        bulk: None,
    })
    .await
    .unwrap();
    let err = expired_node
        .connect(&addr.to_string(), "coordinator", WAIT)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("closed the link") || err.contains("handshake"),
        "{err}"
    );

    // The first silo is still bound, and a new good silo is served.
    assert_eq!(
        server.directory().identity_of(bound_a),
        Some(id("bank-a", Role::Silo))
    );
    let _b = good_silo(&ca, "bank-b", &server).await;
    // The server binds the session when its side of the authentication completes: wait for it.
    next_event(
        &mut events,
        |e| matches!(e, PeerEvent::Bound { identity, .. } if identity.name == "bank-b"),
    )
    .await;
    assert!(server
        .directory()
        .bound_peers()
        .iter()
        .any(|(_, i)| i.name == "bank-b"));
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tcp_peer_does_not_delay_others() {
    let (ca, _) = CertificateAuthority::generate("consortium", 1).unwrap();
    // A long handshake timeout: if handshakes were serial, the good silo would wait 60 s.
    let server = coordinator(&ca, Duration::from_secs(60)).await;
    let addr = server.local_addr().unwrap();
    let _silent: Vec<TcpStream> = futures_connect(addr, 3).await;
    let started = std::time::Instant::now();
    let _a = good_silo(&ca, "bank-a", &server).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "good peer waited {:?} behind silent peers",
        started.elapsed()
    );
}

async fn futures_connect(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(TcpStream::connect(addr).await.unwrap());
    }
    v
}

/// A raw ractor_cluster node that declares `declared` as its name, linked with `holder`'s
/// certificate: what a consortium member can do with its own kit and ractor_cluster.
async fn impostor(
    ca: &CertificateAuthority,
    server: &ClusterNode,
    declared: &str,
    holder: &Identity,
) -> ractor::ActorRef<ractor_cluster::NodeServerMessage> {
    let (node, _) = Actor::spawn(
        None,
        NodeServer::new(
            0,
            fedsilo::cluster::cookie(),
            declared.into(),
            "host".into(),
            None,
            None,
        ),
        (),
    )
    .await
    .unwrap();
    let kit = valid(ca, holder);
    ractor_cluster::client_connect_enc(
        &node,
        server.local_addr().unwrap(),
        TlsConnector::from(kit.client_config().unwrap()),
        ServerName::try_from("coordinator").unwrap(),
    )
    .await
    .unwrap();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_declaring_another_name_than_its_certificate_is_refused_before_ractor_sees_it() {
    let (ca, _) = CertificateAuthority::generate("consortium", 1).unwrap();
    let server = coordinator(&ca, Duration::from_secs(10)).await;
    let mut events = server.directory().subscribe();
    // A raw ractor_cluster node that calls itself "mallory" but holds bank-a's certificate.
    let mallory = impostor(&ca, &server, "mallory", &id("bank-a", Role::Silo)).await;
    let PeerEvent::Refused {
        reason, identity, ..
    } = next_event(&mut events, |e| matches!(e, PeerEvent::Refused { .. })).await
    else {
        unreachable!()
    };
    assert!(
        reason.contains("mallory") && reason.contains("bank-a"),
        "{reason}"
    );
    assert_eq!(identity, Some(id("bank-a", Role::Silo)));
    // The session never becomes a bound peer.
    assert!(server.directory().bound_peers().is_empty());
    mallory.stop(None);
}

/// The hijack of issue 15: another member's certificate declaring bank-a's name, again and
/// again (each attempt draws a fresh connection id, so about half would win ractor's election
/// if it ever saw them). Then a copy of bank-a's own kit. bank-a's honest session survives all
/// of it, and is the only bank-a session the coordinator has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_certificate_can_displace_a_live_session() {
    let (ca, _) = CertificateAuthority::generate("consortium", 1).unwrap();
    let server = coordinator(&ca, Duration::from_secs(10)).await;
    let mut events = server.directory().subscribe();
    let honest = good_silo(&ca, "bank-a", &server).await;
    let honest_id = match next_event(&mut events, |e| matches!(e, PeerEvent::Bound { .. })).await {
        PeerEvent::Bound { node_id, .. } => node_id,
        _ => unreachable!(),
    };
    let holders = [
        id("bank-b", Role::Silo),
        id("operator", Role::Operator),
        id("bank-a", Role::Silo), // a copied kit
    ];
    for round in 0..12 {
        let holder = &holders[round % holders.len()];
        let node = impostor(&ca, &server, "bank-a", holder).await;
        let PeerEvent::Refused { reason, .. } = next_event(&mut events, |e| {
            matches!(
                e,
                PeerEvent::Refused { .. }
                    | PeerEvent::Disconnected {
                        identity: Some(_),
                        ..
                    }
                    | PeerEvent::Bound { .. }
                    | PeerEvent::Replaced { .. }
            )
        })
        .await
        else {
            panic!("attempt {round} with {holder}'s certificate did something else than be refused")
        };
        if holder.name == "bank-a" {
            assert!(reason.contains("already connected"), "{reason}");
        } else {
            assert!(reason.contains("certificate says"), "{reason}");
        }
        node.stop(None);
    }
    assert_eq!(
        server.directory().identity_of(honest_id),
        Some(id("bank-a", Role::Silo))
    );
    assert_eq!(server.directory().bound_peers().len(), 1);
    drop(honest);
}

/// A TCP relay between a client and the coordinator that can be frozen: what a silo whose
/// process or network froze looks like from the coordinator (the socket stays open, nothing
/// arrives).
async fn freezable_relay(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, Arc<tokio::sync::Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let freeze = Arc::new(tokio::sync::Notify::new());
    let f = freeze.clone();
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut upstream = TcpStream::connect(target).await.unwrap();
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            _ = f.notified() => {
                // Frozen: hold both sockets open, move no byte, until the test ends.
                std::future::pending::<()>().await;
            }
        }
    });
    (addr, freeze)
}

/// A link whose peer went silent (frozen, partitioned) is dead once the silence limit passes:
/// the same identity may then link again, replacing it, and the replacement is announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_link_may_be_replaced_by_its_own_identity() {
    let (ca, _) = CertificateAuthority::generate("consortium", 1).unwrap();
    let limits = LinkLimits {
        handshake_timeout: Duration::from_secs(10),
        silence_limit: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(3600),
        ..LinkLimits::default()
    };
    let server = coordinator_with(&ca, limits).await;
    let mut events = server.directory().subscribe();
    let (relay, freeze) = freezable_relay(server.local_addr().unwrap()).await;
    let first = ClusterNode::start(ClusterConfig {
        credentials: valid(&ca, &id("bank-a", Role::Silo)),
        listen: None,
        limits: LinkLimits::default(),
        crl: None,
        bulk: None,
    })
    .await
    .unwrap();
    first
        .connect(&relay.to_string(), "coordinator", WAIT)
        .await
        .unwrap();
    let PeerEvent::Bound { label: old, .. } =
        next_event(&mut events, |e| matches!(e, PeerEvent::Bound { .. })).await
    else {
        unreachable!()
    };
    freeze.notify_one();
    // The restarted silo links directly. Until the old link has been silent 2 s it is refused;
    // then it replaces the old one.
    let second = ClusterNode::start(ClusterConfig {
        credentials: valid(&ca, &id("bank-a", Role::Silo)),
        listen: None,
        limits: LinkLimits::default(),
        crl: None,
        bulk: None,
    })
    .await
    .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let linked = tokio::time::timeout(WAIT, async {
        loop {
            if second.connect(&addr, "coordinator", WAIT).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(linked.is_ok(), "the restarted silo never linked");
    let PeerEvent::Replaced {
        old_label,
        identity,
        silent_for,
        ..
    } = next_event(&mut events, |e| matches!(e, PeerEvent::Replaced { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(old_label, old);
    assert_eq!(identity.name, "bank-a");
    assert!(silent_for >= Duration::from_secs(2), "{silent_for:?}");
    // The old session is closed; one bank-a session remains.
    next_event(
        &mut events,
        |e| matches!(e, PeerEvent::Disconnected { label, .. } if *label == old),
    )
    .await;
    // The new session binds its identity after its handshake: wait for that, not a moment.
    let one = tokio::time::timeout(WAIT, async {
        while server.directory().bound_peers().len() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let peers = server.directory().bound_peers();
    assert!(one.is_ok(), "{peers:?}");
}

/// A raw TLS client holding `holder`'s certificate that writes `frames` and keeps the stream
/// open until the server closes it.
async fn raw_frames(
    server: &ClusterNode,
    ca: &CertificateAuthority,
    holder: &Identity,
    frames: Vec<u8>,
) -> tokio::task::JoinHandle<()> {
    let tcp = TcpStream::connect(server.local_addr().unwrap())
        .await
        .unwrap();
    let kit = valid(ca, holder);
    let mut tls = TlsConnector::from(kit.client_config().unwrap())
        .connect(ServerName::try_from("coordinator").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(&frames).await.unwrap();
    tls.flush().await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        while let Ok(Ok(n)) =
            tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut tls, &mut buf)).await
        {
            if n == 0 {
                break;
            }
        }
    })
}

/// The review's bypass of a first-frame check: a frame that carries bank-b's name *and* a node
/// message (ractor keeps the last `oneof` variant, so it would still wait for a name), then a
/// name frame for bank-a with connection id 1. And the same with an honest first frame: ractor
/// accepts a name only once. bank-a's session survives both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_smuggled_past_the_first_frame_displaces_nobody() {
    use fedsilo::cluster::auth_frames::encode_name_frame;
    let (ca, _) = CertificateAuthority::generate("consortium", 1).unwrap();
    let server = coordinator(&ca, Duration::from_secs(10)).await;
    let mut events = server.directory().subscribe();
    let honest = good_silo(&ca, "bank-a", &server).await;
    let PeerEvent::Bound {
        node_id: honest_id,
        label: honest_label,
        ..
    } = next_event(&mut events, |e| matches!(e, PeerEvent::Bound { .. })).await
    else {
        unreachable!()
    };
    let bank_b = id("bank-b", Role::Silo);
    // 1. An ambiguous first frame.
    let mut first = encode_name_frame("bank-b@fedsilo", 7);
    first.extend_from_slice(&[0x12, 0x00]);
    let len = (first.len() - 8) as u64;
    first[..8].copy_from_slice(&len.to_be_bytes());
    first.extend(encode_name_frame("bank-a@fedsilo", 1));
    let a = raw_frames(&server, &ca, &bank_b, first).await;
    let PeerEvent::Refused { reason, .. } =
        next_event(&mut events, |e| matches!(e, PeerEvent::Refused { .. })).await
    else {
        unreachable!()
    };
    assert!(reason.contains("not exactly a node name"), "{reason}");
    a.await.unwrap();
    // 2. An honest first frame, then a second name.
    let mut frames = encode_name_frame("bank-b@fedsilo", 7);
    frames.extend(encode_name_frame("bank-a@fedsilo", 1));
    let b = raw_frames(&server, &ca, &bank_b, frames).await;
    // ractor refuses the second name and closes that session; it never binds.
    b.await.unwrap();
    assert_eq!(
        server.directory().identity_of(honest_id),
        Some(id("bank-a", Role::Silo))
    );
    assert_eq!(server.directory().bound_peers().len(), 1);
    // The honest session was never disconnected meanwhile.
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(&e, PeerEvent::Disconnected { label, .. } if *label == honest_label),
            "the honest session was displaced: {e:?}"
        );
    }
    drop(honest);
}

/// A server (here: a ractor node holding an aggregator's certificate) that calls itself
/// `coordinator` in its challenge is refused by the dialling silo before ractor can elect
/// between it and the silo's real coordinator link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialled_server_claiming_another_name_is_refused() {
    let (ca, _) = CertificateAuthority::generate("consortium", 1).unwrap();
    let server = coordinator(&ca, Duration::from_secs(10)).await;
    let silo = good_silo(&ca, "bank-a", &server).await;
    let coord = silo
        .directory()
        .bound_peers()
        .into_iter()
        .find(|(_, i)| i.name == "coordinator")
        .map(|(n, _)| n)
        .expect("the silo's coordinator link");
    // The impostor: a ractor NodeServer named `coordinator`, serving the aggregator's
    // certificate on its own listener.
    let agg = valid(&ca, &id("agg-eu", Role::Aggregator));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (impostor, _) = Actor::spawn(
        None,
        NodeServer::new(
            port,
            fedsilo::cluster::cookie(),
            "coordinator".into(),
            "fedsilo".into(),
            Some(ractor_cluster::IncomingEncryptionMode::Tls(
                tokio_rustls::TlsAcceptor::from(agg.server_config().unwrap()),
            )),
            None,
        )
        .with_listen_addr(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        (),
    )
    .await
    .unwrap();
    let err = tokio::time::timeout(WAIT, async {
        loop {
            match silo
                .connect(
                    &format!("127.0.0.1:{port}"),
                    "agg-eu",
                    Duration::from_secs(5),
                )
                .await
            {
                // The listener may not be up yet.
                Err(e) if e.to_string().contains("cannot reach") => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => return other,
            }
        }
    })
    .await
    .expect("no answer from the impostor");
    assert!(err.is_err(), "linked to an impostor: {err:?}");
    // The silo's coordinator link is untouched.
    assert_eq!(
        silo.directory().identity_of(coord).map(|i| i.name),
        Some("coordinator".to_string())
    );
    impostor.stop(None);
}

/// A link whose peer certificate can never be accepted — another consortium's CA, another node
/// name — ends at once with a reason that says retrying would not help, instead of retrying
/// for ever; an unreachable address keeps being retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_refused_for_good_ends_the_link_with_one_clear_error() {
    use fedsilo::cluster::link::keep_linked;
    let (ca, _) = CertificateAuthority::generate("consortium", 1).unwrap();
    let (other, _) = CertificateAuthority::generate("another-consortium", 1).unwrap();
    let server = coordinator(&ca, Duration::from_secs(10)).await;
    let addr = server.local_addr().unwrap().to_string();
    let node = |ca: &CertificateAuthority| {
        ClusterNode::start(ClusterConfig {
            credentials: valid(ca, &id("bank-a", Role::Silo)),
            listen: None,
            limits: LinkLimits::with_handshake_timeout(Duration::from_secs(5)),
            crl: None,
            bulk: None,
        })
    };
    let foreign = node(&other).await.unwrap();
    let local = node(&ca).await.unwrap();
    for (silo, name, why) in [
        (&foreign, "coordinator", "UnknownIssuer"),
        (&local, "someone-else", "NotValidForName"),
    ] {
        let ended = tokio::time::timeout(
            WAIT,
            keep_linked(
                silo,
                &addr,
                name,
                Role::Coordinator,
                false,
                Duration::from_secs(60),
            ),
        )
        .await
        .expect("it kept retrying");
        let e = ended.unwrap_err();
        assert!(
            matches!(e, fedsilo::Error::TlsRefused { .. }) && e.to_string().contains(why),
            "{e}"
        );
        assert!(e.to_string().contains("Retrying would not help"), "{e}");
    }
    // Nothing listening: transient, retried (still trying when the timeout cuts it).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let retried = tokio::time::timeout(
        Duration::from_millis(800),
        keep_linked(
            &local,
            &closed.to_string(),
            "coordinator",
            Role::Coordinator,
            false,
            Duration::from_millis(100),
        ),
    )
    .await;
    assert!(
        retried.is_err(),
        "gave up on an unreachable peer: {retried:?}"
    );
}
