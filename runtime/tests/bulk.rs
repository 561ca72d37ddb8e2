//! The bulk data plane over real mutual TLS on loopback: a silo's bulk link is checked like a
//! cluster link (the consortium CA, the revocation list) and filed under its certificate's
//! name; a node that serves no bulk plane closes such links; tensors cross it intact.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedsilo::bulk::answer::{answer, AnswerLimits, Holder, HolderRefusal};
use fedsilo::bulk::dial::open;
use fedsilo::bulk::BulkLinks;
use fedsilo::certs::CertificateAuthority;
use fedsilo::cluster::{ClusterConfig, ClusterNode, LinkLimits};
use fedsilo::identity::Role;
use fedsilo::model::Digest;
use fedsilo::protocol::ModelRef;
use time::OffsetDateTime;

mod support;
use support::*;

#[derive(Default)]
struct Trainer {
    stored: Mutex<Vec<ModelRef>>,
}

impl Holder for Trainer {
    async fn store(&self, model: ModelRef, _: Vec<f32>) -> Result<(), HolderRefusal> {
        self.stored.lock().unwrap().push(model);
        Ok(())
    }
    async fn update(&self, round: u64) -> Result<Arc<Vec<f32>>, HolderRefusal> {
        Ok(Arc::new(vec![round as f32; 1000]))
    }
}

const LIMITS: AnswerLimits = AnswerLimits {
    frame: Duration::from_secs(10),
    max_values: 1 << 24,
};

async fn node(
    ca: &CertificateAuthority,
    crl: Option<std::path::PathBuf>,
    bulk: Option<Arc<BulkLinks>>,
) -> ClusterNode {
    ClusterNode::start(ClusterConfig {
        credentials: valid(ca, &id("coordinator", Role::Coordinator)),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        limits: LinkLimits::with_handshake_timeout(Duration::from_secs(5)),
        crl,
        bulk: bulk.map(|b| b as Arc<dyn fedsilo::cluster::handoff::BulkAcceptor>),
    })
    .await
    .unwrap()
}

/// A link the coordinator refused after the handshake (TLS 1.3 tells the client only then):
/// it ends without a transfer.
async fn ends(tls: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) {
    let trainer = Trainer::default();
    let ended = answer(tls, &trainer, LIMITS, "coordinator");
    let _ = tokio::time::timeout(WAIT, ended)
        .await
        .expect("refused link stayed open");
}

/// Waits until `name`'s link is there (`true`) or gone (`false`).
async fn until_linked(links: &BulkLinks, name: &str, linked: bool) {
    let mut changes = links.changes();
    tokio::time::timeout(WAIT, async {
        while links.link(name).is_some() != linked {
            changes.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name}'s bulk link never became {linked}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silo_links_under_its_certificates_name_and_tensors_cross_intact() {
    let (ca, _) = CertificateAuthority::generate("consortium", 1).unwrap();
    let links = Arc::new(BulkLinks::default());
    let server = node(&ca, None, Some(links.clone())).await;
    let addr = server.local_addr().unwrap().to_string();
    let bank_a = valid(&ca, &id("bank-a", Role::Silo));
    let tls = open(&bank_a, &addr, "coordinator").await.unwrap();
    let trainer = Arc::new(Trainer::default());
    let t = trainer.clone();
    let silo = tokio::spawn(async move { answer(tls, t.as_ref(), LIMITS, "coordinator").await });
    until_linked(&links, "bank-a", true).await;
    let link = links.link("bank-a").unwrap();
    let model: Vec<f32> = (0..2_000_000).map(|i| i as f32).collect();
    let m = ModelRef {
        version: 2,
        digest: Digest::of_f32(&model),
    };
    link.put_model(m, &model, WAIT).await.unwrap();
    assert_eq!(*trainer.stored.lock().unwrap(), vec![m]);
    let (u, digest) = link.fetch_update(5, 1000, WAIT).await.unwrap();
    assert_eq!(u, vec![5.0; 1000]);
    assert_eq!(digest, Digest::of_f32(&u));
    silo.abort();

    // A certificate of another CA gets no link.
    let (other, _) = CertificateAuthority::generate("intruders", 1).unwrap();
    let links = Arc::new(BulkLinks::default());
    let server = node(&ca, None, Some(links.clone())).await;
    let addr = server.local_addr().unwrap().to_string();
    let intruder = valid(&other, &id("bank-a", Role::Silo));
    assert!(open(&intruder, &addr, "coordinator").await.is_err());
    assert!(links.link("bank-a").is_none());

    // A consortium certificate of another role, named like a silo, gets no bulk link.
    let aggregator = valid(&ca, &id("bank-a", Role::Aggregator));
    if let Ok(tls) = open(&aggregator, &addr, "coordinator").await {
        ends(tls).await;
    }
    assert!(links.link("bank-a").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_bulk_plane_closes_bulk_links() {
    let (ca, _) = CertificateAuthority::generate("consortium", 1).unwrap();
    let server = node(&ca, None, None).await;
    let addr = server.local_addr().unwrap().to_string();
    let mut events = server.directory().subscribe();
    let bank_a = valid(&ca, &id("bank-a", Role::Silo));
    let tls = open(&bank_a, &addr, "coordinator").await.unwrap();
    let trainer = Trainer::default();
    let ended = tokio::time::timeout(WAIT, answer(tls, &trainer, LIMITS, "coordinator")).await;
    assert!(ended.is_ok(), "the link stayed open");
    let refused = next_event(&mut events, |e| {
        matches!(e, fedsilo::cluster::PeerEvent::Refused { reason, .. } if reason.contains("bulk"))
    })
    .await;
    assert!(
        format!("{refused:?}").contains("does not serve"),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_certificate_closes_its_open_bulk_link() {
    let (ca, _) = CertificateAuthority::generate("consortium", 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let crl = dir.path().join("crl.pem");
    std::fs::write(&crl, ca.revocation_list(&[], 1).unwrap()).unwrap();
    let links = Arc::new(BulkLinks::default());
    let server = node(&ca, Some(crl.clone()), Some(links.clone())).await;
    let addr = server.local_addr().unwrap().to_string();
    let bank_a = valid(&ca, &id("bank-a", Role::Silo));
    let bank_b = valid(&ca, &id("bank-b", Role::Silo));
    let serial_a = fedsilo::identity::revocation::serial_of(bank_a.cert_der()).unwrap();
    let mut silos = Vec::new();
    for creds in [&bank_a, &bank_b] {
        let tls = open(creds, &addr, "coordinator").await.unwrap();
        silos.push(tokio::spawn(async move {
            answer(tls, &Trainer::default(), LIMITS, "coordinator").await
        }));
    }
    until_linked(&links, "bank-a", true).await;
    until_linked(&links, "bank-b", true).await;
    let list = ca.revocation_list(&[(serial_a, OffsetDateTime::now_utc())], 2);
    std::fs::write(&crl, list.unwrap()).unwrap();
    until_linked(&links, "bank-a", false).await;
    // bank-a's silo sees its link end; bank-b's stays.
    tokio::time::timeout(WAIT, silos.remove(0))
        .await
        .unwrap()
        .unwrap()
        .ok();
    assert!(links.link("bank-b").is_some());
    // And it cannot link again: TLS 1.3 tells the client of the refusal only after the
    // handshake, so the link may open on its side, but it is never filed.
    if let Ok(tls) = open(&bank_a, &addr, "coordinator").await {
        ends(tls).await;
    }
    assert!(links.link("bank-a").is_none());
}
