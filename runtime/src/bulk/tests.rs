//! The bulk plane end to end over in-memory streams: the coordinator's links on one side, a
//! silo's answering loop (or a hostile peer) on the other.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, DuplexStream};

use super::answer::{answer, AnswerLimits, Holder, HolderRefusal};
use super::frame::{read_head, write_head, BulkMessage};
use super::{BulkError, BulkLinks};
use crate::cluster::handoff::BulkAcceptor;
use crate::identity::{Identity, Role};
use crate::model::Digest;
use crate::protocol::ModelRef;

const T: Duration = Duration::from_secs(5);

fn silo(name: &str) -> Identity {
    Identity {
        name: name.into(),
        role: Role::Silo,
        region: "eu".into(),
    }
}

/// A silo's trainer: the models it was given, and its update for round 7.
#[derive(Default)]
struct Trainer {
    stored: Mutex<Vec<(ModelRef, Vec<f32>)>>,
    update: Vec<f32>,
    compressed: bool,
}

impl Holder for Trainer {
    async fn store(&self, model: ModelRef, values: Vec<f32>) -> Result<(), HolderRefusal> {
        self.stored.lock().unwrap().push((model, values));
        Ok(())
    }
    async fn update(&self, round: u64) -> Result<Arc<Vec<f32>>, HolderRefusal> {
        match round {
            7 if self.compressed => Err(HolderRefusal::AskControl("compressed".into())),
            7 => Ok(Arc::new(self.update.clone())),
            r => Err(HolderRefusal::Refused(format!("no update for round {r}"))),
        }
    }
}

const LIMITS: AnswerLimits = AnswerLimits {
    frame: T,
    max_values: 1 << 20,
};

/// Links `name` into `links`; returns the silo's end and the listener's hold on the link.
fn connect(links: &BulkLinks, name: &str) -> (DuplexStream, tokio::task::JoinHandle<()>) {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let held = links.accept(silo(name), format!("{name}#1"), Box::new(ours));
    (theirs, tokio::spawn(held))
}

fn model_of(values: &[f32]) -> ModelRef {
    ModelRef {
        version: 3,
        digest: Digest::of_f32(values),
    }
}

#[tokio::test]
async fn a_model_goes_down_and_an_update_comes_up_with_its_digest() {
    let links = BulkLinks::default();
    let (end, _held) = connect(&links, "bank-a");
    let trainer = Arc::new(Trainer {
        update: (0..300_000).map(|i| (i % 97) as f32 - 40.0).collect(),
        ..Default::default()
    });
    let t = trainer.clone();
    let silo = tokio::spawn(async move { answer(end, t.as_ref(), LIMITS, "coordinator").await });
    let link = links.link("bank-a").expect("linked");
    let model: Vec<f32> = (0..300_001).map(|i| i as f32 * 0.25).collect();
    link.put_model(model_of(&model), &model, T).await.unwrap();
    let (update, digest) = link.fetch_update(7, 300_000, T).await.unwrap();
    assert_eq!(update, trainer.update);
    assert_eq!(digest, Digest::of_f32(&trainer.update));
    let stored = trainer.stored.lock().unwrap().clone();
    assert_eq!(stored, vec![(model_of(&model), model)]);
    // Both ways counted, for the round's bytes: at least the values each way.
    let c = links.counters_of("bank-a").unwrap();
    assert!(c.sent() >= 300_001 * 4 && c.received() >= 300_000 * 4);
    drop(links);
    drop(link);
    assert!(
        silo.await.unwrap().is_ok(),
        "a closed link ends the silo's loop cleanly"
    );
}

#[tokio::test]
async fn refusals_and_redirections_leave_the_link_usable() {
    let links = BulkLinks::default();
    let (end, _held) = connect(&links, "bank-a");
    let trainer = Arc::new(Trainer {
        update: vec![1.0; 10],
        compressed: true,
        ..Default::default()
    });
    let t = trainer.clone();
    tokio::spawn(async move { answer(end, t.as_ref(), LIMITS, "coordinator").await });
    let link = links.link("bank-a").unwrap();
    // A model whose values are not the digest's is not kept.
    let wrong = ModelRef {
        version: 4,
        digest: Digest::of_f32(&[9.0]),
    };
    let e = link.put_model(wrong, &[1.0, 2.0], T).await.unwrap_err();
    assert!(e.to_string().contains("does not match its digest"), "{e}");
    assert!(trainer.stored.lock().unwrap().is_empty());
    let e = link.fetch_update(7, 10, T).await.unwrap_err();
    assert!(matches!(e, BulkError::AskControl(_)), "{e}");
    let e = link.fetch_update(8, 10, T).await.unwrap_err();
    assert!(e.to_string().contains("no update for round 8"), "{e}");
    // Still the same link, still working.
    let m = [5.0f32; 3];
    links
        .link("bank-a")
        .unwrap()
        .put_model(model_of(&m), &m, T)
        .await
        .unwrap();
    assert_eq!(trainer.stored.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_new_link_replaces_only_its_own_identitys() {
    let links = BulkLinks::default();
    let (_a1, held_a1) = connect(&links, "bank-a");
    let (_b, held_b) = connect(&links, "bank-b");
    let (_a2, _held_a2) = connect(&links, "bank-a");
    // The first link of bank-a is closed and released by the listener; bank-b's stays.
    tokio::time::timeout(T, held_a1).await.unwrap().unwrap();
    assert!(!held_b.is_finished());
    assert!(links.link("bank-b").is_some());
}

/// A hostile silo: reads the request, then answers with `reply` (raw bytes).
async fn hostile(mut end: DuplexStream, reply: Vec<u8>) -> DuplexStream {
    let _ = read_head(&mut end, Some(T), "coordinator").await.unwrap();
    end.write_all(&reply).await.unwrap();
    end
}

async fn head(msg: &BulkMessage) -> Vec<u8> {
    let mut v = Vec::new();
    write_head(&mut v, msg, T).await.unwrap();
    v
}

#[tokio::test]
async fn a_silo_that_lies_or_stalls_loses_its_link_and_nothing_else() {
    // It announces more values than were asked for.
    let links = BulkLinks::default();
    let (end, held) = connect(&links, "bank-a");
    let link = links.link("bank-a").unwrap();
    let silo = tokio::spawn(hostile(
        end,
        head(&BulkMessage::Update { len: 1 << 30 }).await,
    ));
    let e = link.fetch_update(7, 10, T).await.unwrap_err();
    assert!(
        e.to_string().contains("1073741824 values, 10 expected"),
        "{e}"
    );
    assert!(links.link("bank-a").is_none(), "the link is dropped");
    tokio::time::timeout(T, held).await.unwrap().unwrap();
    drop(silo);

    // It announces the update and then sends half of it, and nothing more.
    let (end, held) = connect(&links, "bank-a");
    let link = links.link("bank-a").unwrap();
    let mut reply = head(&BulkMessage::Update { len: 4 }).await;
    reply.extend_from_slice(&16u32.to_le_bytes());
    reply.push(2);
    reply.extend_from_slice(&[0u8; 8]);
    let _silo = tokio::spawn(hostile(end, reply));
    let limit = Duration::from_millis(100);
    let e = link.fetch_update(7, 4, limit).await.unwrap_err();
    assert!(matches!(e, BulkError::Slow { .. }), "{e}");
    assert!(links.link("bank-a").is_none());
    tokio::time::timeout(T, held).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_transfer_abandoned_midway_closes_the_link() {
    let links = BulkLinks::default();
    let (_end, held) = connect(&links, "bank-a");
    let link = links.link("bank-a").unwrap();
    // Nobody answers: the caller gives up (as a round deadline would) before the reply.
    let model = vec![1.0f32; 64];
    let fetch = link.put_model(model_of(&model), &model, Duration::from_secs(3600));
    assert!(tokio::time::timeout(Duration::from_millis(50), fetch)
        .await
        .is_err());
    assert!(
        links.link("bank-a").is_none(),
        "a half-used link is never reused"
    );
    tokio::time::timeout(T, held).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_model_beyond_the_silos_limit_is_refused_before_it_is_read() {
    let (mut coordinator, end) = tokio::io::duplex(1 << 16);
    let trainer = Trainer::default();
    let limits = AnswerLimits {
        frame: T,
        max_values: 8,
    };
    let silo = tokio::spawn(async move { answer(end, &trainer, limits, "coordinator").await });
    let m = ModelRef {
        version: 1,
        digest: Digest::of_f32(&[]),
    };
    write_head(
        &mut coordinator,
        &BulkMessage::PutModel { model: m, total: 9 },
        T,
    )
    .await
    .unwrap();
    match read_head(&mut coordinator, Some(T), "silo").await.unwrap() {
        BulkMessage::Refused { reason } => assert!(reason.contains("limit of 8"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(
        silo.await.unwrap().is_err(),
        "and the link ends: the values would follow"
    );
}

#[tokio::test]
async fn a_busy_link_is_not_waited_for_and_a_closed_one_is_not_reused() {
    let links = BulkLinks::default();
    let (_end, held) = connect(&links, "bank-a");
    let link = links.link("bank-a").unwrap();
    // A transfer in progress (nobody answers it)...
    let model = vec![1.0f32; 64];
    let first = link.put_model(model_of(&model), &model, T);
    let second = async {
        tokio::task::yield_now().await;
        // ...and another one for the same silo (a deployment beside a round): not waited for.
        let e = links
            .link("bank-a")
            .unwrap()
            .put_model(model_of(&model), &model, T)
            .await;
        assert!(matches!(e, Err(BulkError::Busy)), "{e:?}");
    };
    tokio::select! {
        _ = first => panic!("nobody answered"),
        _ = second => {}
    }
    // Closing (a revoked certificate) removes it and closes the connection.
    let (_end, held_b) = connect(&links, "bank-b");
    links.close("bank-b#1");
    assert!(links.link("bank-b").is_none());
    tokio::time::timeout(T, held_b).await.unwrap().unwrap();
    drop(held);
}
