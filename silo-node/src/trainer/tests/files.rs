//! The Trainer actor receiving its model's files from the coordinator.

use super::*;

/// A described model whose pinned file is not in the silo's model directory: the schema check
/// says which file it lacks (by SHA-256) and nothing else; wrong bytes are refused and the
/// file still missing; the right bytes, in chunks, take the file's name; the model is then
/// built on a thread of its own (the schema check says "loading" meanwhile) and trains.
#[tokio::test]
async fn a_model_whose_files_arrive_from_the_coordinator_is_built_and_trains() {
    use crate::model_trainers::external::tests::{init_bow, reviews, SCRIPT};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bow");
    let (_, initial) = init_bow(&out, 8, false);
    // The program reads no file of its own; the manifest pins one anyway, as a vocabulary.
    let vocab = b"great tasty love bad stale awful".to_vec();
    let staged = dir.path().join("vocab.txt");
    std::fs::write(&staged, &vocab).unwrap();
    let sha = fedsilo::model::files::sha256_file(&staged).unwrap();
    let text = std::fs::read_to_string(out.join("manifest.toml")).unwrap()
        + &format!("\n[[asset]]\nname = \"vocab.txt\"\nsha256 = \"{sha}\"\n");
    let manifest = fedsilo::model::manifest::Manifest::parse(&text).unwrap();
    let data = dir.path().join("reviews.csv");
    reviews(&data, false);
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let holdout = crate::model_trainers::Holdout::Fraction {
        fraction: 0.25,
        seed: 1,
    };
    let absent = fedsilo::model::files::absent(&manifest, &models, &["vocab.txt"]).unwrap();
    assert_eq!(absent.len(), 1);
    let external = crate::external::ExternalTrainer {
        program: "python3".into(),
        args: vec![SCRIPT.into()],
        timeout: Duration::from_secs(60),
        workdir: dir.path().into(),
        owner: "t".into(),
    };
    let awaiting = super::AwaitingFiles::new(
        manifest.clone(),
        models.clone(),
        data,
        holdout,
        Some(external),
        15,
        absent,
    );
    let args = TrainerArgs {
        name: "t".into(),
        region: "global".into(),
        data: super::LocalData::Awaiting(Arc::new(awaiting)),
        faults: Default::default(),
        dp_sgd: None,
        credentials: None,
        external: None,
        metrics: Arc::default(),
        deploy: None,
        board: std::sync::Arc::new(crate::status::StatusBoard::new("test", None)),
    };
    let t = Actor::spawn(None, TrainerActor, args).await.unwrap().0;
    let ask = |r: Request| {
        let t = t.clone();
        async move { call(&t, &r, Duration::from_secs(5), "t").await }
    };
    let stats = || async {
        match ask(Request::FeatureStats).await.unwrap() {
            Response::FeatureStats(s) => s,
            other => panic!("{other:?}"),
        }
    };
    let s = stats().await;
    assert_eq!(
        (s.schema_digest, s.missing_files.clone(), s.loading),
        (manifest.digest, vec![sha.clone()], false)
    );
    // Bytes that are not the pinned file.
    let e = ask(Request::PutFile {
        sha256: sha.clone(),
        offset: 0,
        total: 4,
        bytes: b"evil".to_vec(),
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("discarded"), "{e}");
    assert_eq!(stats().await.missing_files, vec![sha.clone()]);
    let put = |offset: usize, end: usize| Request::PutFile {
        sha256: sha.clone(),
        offset: offset as u64,
        total: vocab.len() as u64,
        bytes: vocab[offset..end].to_vec(),
    };
    let r = ask(put(0, 10)).await.unwrap();
    assert_eq!(r, Response::FileChunkStored { received: 10 });
    let r = ask(put(10, vocab.len())).await.unwrap();
    assert_eq!(
        r,
        Response::FileChunkStored {
            received: vocab.len() as u64
        }
    );
    assert_eq!(std::fs::read(models.join("vocab.txt")).unwrap(), vocab);
    // Loading, then ready: the schema check passes with the model's training rows.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let s = stats().await;
        assert!(s.missing_files.is_empty() && s.unusable.is_none(), "{s:?}");
        if !s.loading {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the model never loaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready.rows, 15);
    let e = ask(put(0, 10)).await.unwrap_err().to_string();
    assert!(e.contains("nothing to receive"), "{e}");
    let model = put_model(&t, initial).await;
    let r = ask(Request::Train {
        round: 1,
        base: model,
        spec: fedsilo::model::Architecture::Described(manifest.described()),
        plan: plan(),
        scaling: Scaling {
            mean: vec![],
            std: vec![],
        },
    })
    .await;
    assert!(matches!(r, Ok(Response::Trained(_))), "{r:?}");
}
