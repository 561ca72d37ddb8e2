//! The Trainer actor against raw frames and forged requests.

mod files;
mod pinning;

use super::*;
use crate::data::Dataset;
use fedsilo::compression::Compression;
use fedsilo::data::Schema;
use fedsilo::model::initial_params;
use fedsilo::model::{Digest, ModelSpec};
use fedsilo::protocol::call;
use fedsilo::protocol::{decode, encode, ModelRef, Request, Response, Scaling, TrainPlan};
use fedsilo::tls::NodeCredentials;
use ractor::{Actor, ActorRef};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

async fn trainer() -> ActorRef<TrainerMessage> {
    trainer_with(None).await
}

/// The silo's own DP-SGD (clip 1, noise multiplier 1, no budget), spending into `ledger`.
fn dp_sgd(ledger: std::path::PathBuf) -> super::SiloDpSgd {
    super::SiloDpSgd {
        dp: crate::train::dp_sgd::DpSgd {
            clip: 1.0,
            noise_multiplier: 1.0,
        },
        delta: 1e-5,
        epsilon_budget: None,
        ledger,
    }
}

/// One epoch of plain SGD.
fn plan() -> TrainPlan {
    TrainPlan {
        epochs: 1,
        batch_size: 8,
        learning_rate: 0.1,
        seed: 1,
        noise: None,
        prox_mu: 0.0,
        compression: Compression::None,
        lora: None,
    }
}

/// A logistic model over the test data's one feature, and its reference.
fn tiny_model() -> (ModelSpec, Vec<f32>, ModelRef) {
    let spec = ModelSpec {
        inputs: 1,
        hidden: vec![],
    };
    let p = initial_params(&spec, 1);
    let model = ModelRef {
        version: 0,
        digest: Digest::of_f32(&p),
    };
    (spec, p, model)
}

async fn trainer_with(credentials: Option<NodeCredentials>) -> ActorRef<TrainerMessage> {
    tabular_silo(0.25, credentials, None, None).await
}

/// A tabular silo of 40 rows (`holdout` of them held out), with the silo's own DP-SGD and an
/// external program if given.
async fn tabular_silo(
    holdout: f64,
    credentials: Option<NodeCredentials>,
    dp_sgd: Option<super::SiloDpSgd>,
    external: Option<crate::external::ExternalTrainer>,
) -> ActorRef<TrainerMessage> {
    let args = tabular_args(holdout, credentials, dp_sgd, external);
    Actor::spawn(None, TrainerActor, args).await.unwrap().0
}

/// [`tabular_silo`]'s arguments, before it is started.
fn tabular_args(
    holdout: f64,
    credentials: Option<NodeCredentials>,
    dp_sgd: Option<super::SiloDpSgd>,
    external: Option<crate::external::ExternalTrainer>,
) -> TrainerArgs {
    let schema = Schema::from_toml_str(
        "[target]\ncolumn = \"y\"\npositive = \"1\"\nnegative = [\"0\"]\n[[feature]]\ncolumn = \"a\"\nkind = \"numeric\"\n",
        "s",
    )
    .unwrap();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "a,y").unwrap();
    for i in 0..40 {
        writeln!(f, "{i},{}", i % 2).unwrap();
    }
    let data = Dataset::load(f.path(), &schema, holdout, 1).unwrap();
    TrainerArgs {
        name: "t".into(),
        region: "global".into(),
        data: super::LocalData::Tabular(Arc::new(data)),
        faults: Default::default(),
        dp_sgd,
        credentials,
        external,
        metrics: Arc::default(),
        deploy: None,
        board: std::sync::Arc::new(crate::status::StatusBoard::new("test", None)),
    }
}

/// Sends `values` whole, as model version 0; its reference.
async fn put_model(t: &ActorRef<TrainerMessage>, values: Vec<f32>) -> ModelRef {
    let model = ModelRef {
        version: 0,
        digest: Digest::of_f32(&values),
    };
    let put = Request::PutModel {
        model,
        offset: 0,
        total: values.len() as u64,
        values,
    };
    call(t, &put, Duration::from_secs(5), "t").await.unwrap();
    model
}

async fn raw(t: &ActorRef<TrainerMessage>, frame: Vec<u8>) -> Response {
    let bytes = t
        .call(
            |reply| TrainerMessage::Rpc { frame, reply },
            Some(Duration::from_secs(5)),
        )
        .await
        .unwrap()
        .unwrap();
    decode(&bytes, "t").unwrap()
}

/// Under secure aggregation a round is keyed once and its update never leaves in the
/// clear, not even after the next round's keys: otherwise the coordinator could sum one
/// update under two sets of masks and subtract, or simply ask for it.
/// The identity scaling of the tiny model's one feature.
fn unit_scaling() -> Scaling {
    Scaling {
        mean: vec![0.0],
        std: vec![1.0],
    }
}

#[tokio::test]
async fn a_securely_aggregated_update_is_keyed_once_and_never_fetched_in_the_clear() {
    fedsilo::tls::install_crypto_provider();
    let (ca, _) = fedsilo::certs::CertificateAuthority::generate("c", 30).unwrap();
    let id = fedsilo::identity::Identity {
        name: "t".into(),
        role: fedsilo::identity::Role::Silo,
        region: "eu".into(),
    };
    let t = trainer_with(Some(ca.credentials(&id, 30).unwrap())).await;
    let ask = |req: Request| {
        let t = t.clone();
        async move { call(&t, &req, Duration::from_secs(5), "t").await }
    };
    assert!(ask(Request::SecAggAdvertise { round: 2 }).await.is_ok());
    for again in [2, 1] {
        let e = ask(Request::SecAggAdvertise { round: again })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("keyed once"), "{e}");
    }
    let (spec, p, _) = tiny_model();
    let model = put_model(&t, p).await;
    let Response::Trained(r) = ask(Request::Train {
        round: 2,
        base: model,
        spec: spec.into(),
        plan: plan(),
        scaling: unit_scaling(),
    })
    .await
    .unwrap() else {
        panic!()
    };
    // Nothing about the update itself is reported.
    assert_eq!((r.update_norm, r.update_digest), (0.0, Digest::of_f32(&[])));
    let fetch = Request::FetchUpdate {
        round: 2,
        offset: 0,
        len: 2,
    };
    for _ in 0..2 {
        let e = ask(fetch.clone()).await.unwrap_err();
        assert!(e.to_string().contains("only masked"), "{e}");
        // The next round's keys do not release it.
        ask(Request::SecAggAdvertise { round: 3 }).await.ok();
    }
}

#[tokio::test]
async fn malformed_and_incompatible_frames_get_an_error_and_the_actor_keeps_serving() {
    let t = trainer().await;
    let Response::Error { message } = raw(&t, b"garbage".to_vec()).await else {
        panic!()
    };
    assert!(message.contains("not a fedsilo frame"), "{message}");
    let mut f = encode(&Request::Ping { seq: 1 });
    f[4] = 99;
    let Response::Error { message } = raw(&t, f).await else {
        panic!()
    };
    assert!(message.contains("version 99"), "{message}");
    let mut f = encode(&Request::Ping { seq: 1 });
    f.truncate(f.len() - 1);
    f.push(0xff);
    assert!(matches!(
        raw(&t, f).await,
        Response::Error { .. } | Response::Pong { .. }
    ));
    assert_eq!(
        raw(&t, encode(&Request::Ping { seq: 9 })).await,
        Response::Pong {
            seq: 9,
            deployed: None
        }
    );
}

#[tokio::test]
async fn models_are_checked_chunk_by_chunk_and_against_their_digest() {
    let t = trainer().await;
    let (spec, p, model) = tiny_model();
    let put = |offset: u64, values: Vec<f32>, model: ModelRef| Request::PutModel {
        model,
        offset,
        total: p.len() as u64,
        values,
    };
    // A chunk that does not start at 0 without a first chunk.
    let e = call(&t, &put(1, vec![0.0], model), Duration::from_secs(5), "t")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("never came"), "{e}");
    // Wrong digest.
    let wrong = ModelRef {
        version: 0,
        digest: Digest::of_f32(&[1.0]),
    };
    let e = call(&t, &put(0, p.clone(), wrong), Duration::from_secs(5), "t")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not match its digest"), "{e}");
    // Training from a model never received.
    let scaling = unit_scaling();
    let plan = plan();
    let train = Request::Train {
        round: 1,
        base: model,
        spec: spec.clone().into(),
        plan,
        scaling: scaling.clone(),
    };
    let e = call(&t, &train, Duration::from_secs(5), "t")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not received"), "{e}");
    // The right model, then training works and the update can be fetched.
    call(&t, &put(0, p.clone(), model), Duration::from_secs(5), "t")
        .await
        .unwrap();
    let Response::Trained(r) = call(&t, &train, Duration::from_secs(5), "t").await.unwrap() else {
        panic!()
    };
    assert_eq!(r.examples, 30);
    let Response::UpdateChunk { values } = call(
        &t,
        &Request::FetchUpdate {
            round: 1,
            offset: 0,
            len: 2,
        },
        Duration::from_secs(5),
        "t",
    )
    .await
    .unwrap() else {
        panic!()
    };
    assert_eq!(Digest::of_f32(&values), r.update_digest);
    // A spec that does not fit the silo's schema.
    let bad = Request::Evaluate {
        model,
        spec: ModelSpec {
            inputs: 5,
            hidden: vec![],
        }
        .into(),
        scaling,
        personalize: None,
        lora: None,
        business: None,
    };
    let e = call(&t, &bad, Duration::from_secs(5), "t")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("inputs"), "{e}");
}

/// A described model's trainer stand-in: two values, each round adds one to each.
#[derive(Debug)]
struct Plus1(fedsilo::model::manifest::Manifest);

impl crate::model_trainers::DescribedTrainer for Plus1 {
    fn manifest(&self) -> &fedsilo::model::manifest::Manifest {
        &self.0
    }
    fn unusable(&self) -> Option<String> {
        None
    }
}

impl crate::model_trainers::ModelTrainer for Plus1 {
    fn train_rows(&self) -> usize {
        7
    }
    fn train(
        &self,
        base: &[f32],
        _: &TrainPlan,
        _: u64,
        _: Option<crate::train::dp_sgd::DpSgd>,
    ) -> Result<crate::model_trainers::Fitted, crate::model_trainers::TrainError> {
        Ok(crate::model_trainers::Fitted {
            update: vec![1.0; base.len()],
            loss: 0.5,
            examples: 7,
        })
    }
    fn evaluate(
        &self,
        params: &[f32],
    ) -> Result<fedsilo::protocol::EvalMetrics, crate::model_trainers::TrainError> {
        Ok(fedsilo::protocol::EvalMetrics {
            examples: 3,
            loss: params[0] as f64,
            accuracy: Some(params[1] as f64),
            r2: None,
            mae: None,
            auc: Some(0.75),
            personalized: None,
            business: None,
        })
    }
    fn predict(
        &self,
        _: &[f32],
        _: &std::path::Path,
    ) -> Result<Vec<Vec<f32>>, crate::model_trainers::TrainError> {
        Ok(vec![])
    }
    /// The head is the second value; fine-tuning adds ten to it.
    fn personalise(
        &self,
        params: &[f32],
        own: Option<&[f32]>,
        p: &fedsilo::protocol::Personalize,
    ) -> Result<Option<crate::model_trainers::Personalised>, crate::model_trainers::TrainError>
    {
        if p.epochs == 99 {
            return Err(crate::model_trainers::TrainError::Unsupported(
                "99 epochs".into(),
            ));
        }
        let head = own.map_or(params[1], |h| h[0]) + 10.0;
        Ok(Some(crate::model_trainers::Personalised {
            params: vec![params[0], head],
            head: vec![head],
        }))
    }
}

/// A trainer holding [`Plus1`] for a two-value manifest (with the silo's own DP-SGD if `dp`),
/// and the manifest.
async fn described_trainer(
    dp: Option<super::SiloDpSgd>,
) -> (ActorRef<TrainerMessage>, fedsilo::model::manifest::Manifest) {
    let manifest = fedsilo::model::manifest::Manifest::parse(
        "architecture = \"x\"\n[task]\nkind = \"binary\"\nclasses = [\"n\", \"p\"]\n[data]\nlabel = \"y\"\n[[trainable]]\nname = \"w\"\nshape = [2]\n",
    )
    .unwrap();
    let args = TrainerArgs {
        name: "t".into(),
        region: "global".into(),
        data: super::LocalData::Described(Arc::new(Plus1(manifest.clone()))),
        faults: Default::default(),
        dp_sgd: dp,
        credentials: None,
        external: None,
        metrics: Arc::default(),
        deploy: None,
        board: std::sync::Arc::new(crate::status::StatusBoard::new("test", None)),
    };
    (
        Actor::spawn(None, TrainerActor, args).await.unwrap().0,
        manifest,
    )
}

/// A silo that trains a described model answers through its trainer, and refuses the MLP
/// and any other manifest; a tabular silo refuses a described model.
#[tokio::test]
async fn a_described_model_goes_to_its_trainer_and_nothing_else_does() {
    let (t, manifest) = described_trainer(None).await;
    let described = manifest.described();
    let ask = |req: Request| {
        let t = t.clone();
        async move { call(&t, &req, Duration::from_secs(5), "t").await }
    };
    let Response::FeatureStats(st) = ask(Request::FeatureStats).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        (st.schema_digest, st.rows, st.count.len()),
        (manifest.digest, 7, 0)
    );
    let model = put_model(&t, vec![0.25, -1.0]).await;
    let none = Scaling {
        mean: vec![],
        std: vec![],
    };
    let train = |spec: fedsilo::model::Architecture| Request::Train {
        round: 1,
        base: model,
        spec,
        plan: plan(),
        scaling: none.clone(),
    };
    let mut other = described.clone();
    other.manifest = Digest::of_bytes(b"another manifest");
    let (mlp, _, _) = tiny_model();
    for wrong in [fedsilo::model::Architecture::Described(other), mlp.into()] {
        let e = ask(train(wrong)).await.unwrap_err().to_string();
        assert!(e.contains("this silo was started for the `x` model"), "{e}");
    }
    let Response::Trained(r) = ask(train(described.clone().into())).await.unwrap() else {
        panic!()
    };
    assert_eq!((r.examples, r.update_len), (7, 2));
    let Response::UpdateChunk { values } = ask(Request::FetchUpdate {
        round: 1,
        offset: 0,
        len: 2,
    })
    .await
    .unwrap() else {
        panic!()
    };
    assert_eq!(values, vec![1.0, 1.0]);
    let Response::Evaluated(m) = ask(Request::Evaluate {
        model,
        spec: described.clone().into(),
        scaling: none.clone(),
        personalize: None,
        lora: None,
        business: None,
    })
    .await
    .unwrap() else {
        panic!()
    };
    assert_eq!((m.auc, m.loss), (Some(0.75), 0.25));
    // A tabular silo refuses the described model.
    let tabular = trainer().await;
    let e = call(
        &tabular,
        &train(described.into()),
        Duration::from_secs(5),
        "t",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("tabular data under a schema"), "{e}");
}

/// A plan the described model's trainer would refuse is refused before the silo's own DP-SGD
/// charges its ledger: a hostile coordinator cannot spend a silo's budget with rounds that
/// never train.
#[tokio::test]
async fn a_refused_plan_spends_no_privacy_budget() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    let (t, manifest) = described_trainer(Some(dp_sgd(ledger.clone()))).await;
    let ask = |req: Request| {
        let t = t.clone();
        async move { call(&t, &req, Duration::from_secs(5), "t").await }
    };
    let model = put_model(&t, vec![0.0, 0.0]).await;
    let train = |plan: TrainPlan, round: u64| Request::Train {
        round,
        base: model,
        spec: manifest.described().into(),
        plan,
        scaling: Scaling {
            mean: vec![],
            std: vec![],
        },
    };
    let charges = || {
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("dp-sgd"))
            .count()
    };
    for bad in [
        TrainPlan {
            epochs: 0,
            ..plan()
        },
        TrainPlan {
            learning_rate: f32::NAN,
            ..plan()
        },
        TrainPlan {
            prox_mu: -1.0,
            ..plan()
        },
    ] {
        let e = ask(train(bad, 1)).await.unwrap_err().to_string();
        assert!(e.contains("a positive learning rate"), "{e}");
    }
    assert_eq!(charges(), 0);
    assert!(matches!(
        ask(train(plan(), 1)).await.unwrap(),
        Response::Trained(_)
    ));
    assert_eq!(charges(), 1);
}

/// Personalisation of a described model: the trainer's head is fine-tuned on each candidate
/// scored, becomes the silo's own only once a round trains from that candidate, and a silo
/// under its own DP-SGD does not personalise.
#[tokio::test]
async fn a_described_models_personal_head_is_kept_once_its_candidate_is_trained_from() {
    let dir = tempfile::tempdir().unwrap();
    for dp in [false, true] {
        let (t, manifest) =
            described_trainer(dp.then(|| dp_sgd(dir.path().join("ledger.jsonl")))).await;
        let spec: fedsilo::model::Architecture = manifest.described().into();
        let ask = |req: Request| {
            let t = t.clone();
            async move { call(&t, &req, Duration::from_secs(5), "t").await }
        };
        let model = put_model(&t, vec![0.25, -1.0]).await;
        let none = Scaling {
            mean: vec![],
            std: vec![],
        };
        let evaluate = || Request::Evaluate {
            model,
            spec: spec.clone(),
            scaling: none.clone(),
            personalize: Some(fedsilo::protocol::Personalize {
                epochs: 1,
                batch_size: 4,
                learning_rate: 0.1,
                seed: 1,
            }),
            lora: None,
            business: None,
        };
        let personal = |r: Response| match r {
            Response::Evaluated(m) => {
                assert_eq!(m.accuracy, Some(-1.0), "the global model is scored as sent");
                m.personalized.and_then(|p| p.accuracy)
            }
            other => panic!("{other:?}"),
        };
        let first = personal(ask(evaluate()).await.unwrap());
        let again = personal(ask(evaluate()).await.unwrap());
        ask(Request::Train {
            round: 1,
            base: model,
            spec: spec.clone(),
            plan: plan(),
            scaling: none.clone(),
        })
        .await
        .unwrap();
        let adopted = personal(ask(evaluate()).await.unwrap());
        // A personalisation that fails costs its own figures, not the global score.
        let Request::Evaluate { personalize, .. } = evaluate() else {
            unreachable!()
        };
        let failing = Request::Evaluate {
            model,
            spec: spec.clone(),
            scaling: none.clone(),
            personalize: personalize.map(|p| fedsilo::protocol::Personalize { epochs: 99, ..p }),
            lora: None,
            business: None,
        };
        assert_eq!(personal(ask(failing).await.unwrap()), None);
        if dp {
            assert_eq!((first, again, adopted), (None, None, None));
        } else {
            assert_eq!(
                (first, again, adopted),
                (Some(9.0), Some(9.0), Some(19.0)),
                "the head from the global model until its candidate is trained from, then the silo's"
            );
        }
    }
}

/// A tabular silo says it is a central hold-out before anything about the request's model, and
/// refuses its own DP-SGD with an external program before the ledger is charged.
#[tokio::test]
async fn a_tabular_silo_refuses_in_order_and_charges_nothing_for_a_refused_round() {
    let ask = |t: ActorRef<TrainerMessage>, req: Request| async move {
        call(&t, &req, Duration::from_secs(5), "t").await
    };
    let (spec, p, model) = tiny_model();
    let none = unit_scaling();
    let train = |spec: ModelSpec| Request::Train {
        round: 1,
        base: model,
        spec: spec.into(),
        plan: plan(),
        scaling: none.clone(),
    };
    let holdout = tabular_silo(1.0, None, None, None).await;
    let wrong = ModelSpec {
        inputs: 5,
        hidden: vec![],
    };
    let e = ask(holdout, train(wrong)).await.unwrap_err().to_string();
    assert!(e.contains("central hold-out"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    let silo = tabular_silo(
        0.25,
        None,
        Some(dp_sgd(ledger.clone())),
        Some(crate::external::ExternalTrainer {
            program: "/bin/false".into(),
            args: vec![],
            timeout: Duration::from_secs(5),
            workdir: dir.path().into(),
            owner: "t".into(),
        }),
    )
    .await;
    put_model(&silo, p).await;
    let e = ask(silo, train(spec)).await.unwrap_err().to_string();
    assert!(e.contains("fedsilo's own trainer"), "{e}");
    let spent = std::fs::read_to_string(&ledger).unwrap_or_default();
    assert_eq!(spent.lines().count(), 0, "{spent}");
}

/// A coordinator cannot keep a silo busy without end: a round of more passes over its data
/// than a silo makes for one request is refused, and so is a local baseline whose rounds ×
/// epochs are; the silo trains a round of ordinary size afterwards.
#[tokio::test]
async fn a_request_for_endless_training_is_refused() {
    let t = trainer().await;
    let (spec, p, _) = tiny_model();
    let model = put_model(&t, p).await;
    let scaling = unit_scaling();
    let train = |epochs: u32| Request::Train {
        round: 1,
        base: model,
        spec: spec.clone().into(),
        plan: TrainPlan { epochs, ..plan() },
        scaling: scaling.clone(),
    };
    let e = call(&t, &train(4_000_000_000), Duration::from_secs(5), "t")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a round of 4000000000 passes") && e.contains("at most 10000"),
        "{e}"
    );
    let baseline = Request::LocalBaseline {
        initial: model,
        spec: spec.clone().into(),
        plan: TrainPlan {
            epochs: 1000,
            ..plan()
        },
        rounds: 11,
        business: None,
    };
    let e = call(&t, &baseline, Duration::from_secs(5), "t")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("a local baseline of 11000 passes"), "{e}");
    let ok = call(&t, &train(1), Duration::from_secs(5), "t").await;
    assert!(matches!(ok, Ok(Response::Trained(_))), "{ok:?}");
}

/// A deployment is taken only from the coordinator's latest order for this silo: a note for
/// other silos, or an older one a peer kept and replays, is refused; the heartbeat then says
/// what is deployed.
#[tokio::test]
async fn a_replayed_or_misdirected_deployment_note_is_refused() {
    use fedsilo::deploy::{DeployStore, DeploymentNote, SignedNote, Target};
    let (ca, _) = fedsilo::certs::CertificateAuthority::generate("t", 1).unwrap();
    let who = fedsilo::identity::Identity {
        name: "coordinator".into(),
        role: fedsilo::identity::Role::Coordinator,
        region: "global".into(),
    };
    fedsilo::tls::install_crypto_provider();
    let coordinator = ca.credentials(&who, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = tabular_args(0.25, None, None, None);
    args.deploy = Some(DeployStore::new(
        dir.path(),
        fedsilo::identity::signature::CaCheck::new(coordinator.roots()),
        "coordinator",
    ));
    let t = Actor::spawn(None, TrainerActor, args).await.unwrap().0;
    let (spec, p, _) = tiny_model();
    let model = put_model(&t, p.clone()).await;
    let note = |deployment: u64, target: Target| Request::Deploy {
        note: SignedNote::sign(
            &DeploymentNote {
                deployment,
                version: model.version,
                digest: model.digest,
                values: p.len() as u64,
                spec: spec.clone().into(),
                scaling: Scaling {
                    mean: vec![0.0],
                    std: vec![1.0],
                },
                ordered_by: "alice".into(),
                signed_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64,
                target,
            },
            &coordinator,
        )
        .unwrap(),
    };
    let ask = |r: Request| {
        let t = t.clone();
        async move { raw(&t, encode(&r)).await }
    };
    assert_eq!(
        ask(note(2, Target::All)).await,
        Response::Deployed { model }
    );
    let Response::Error { message } = ask(note(1, Target::All)).await else {
        panic!("an older note was taken");
    };
    assert!(message.contains("older than deployment 2"), "{message}");
    let elsewhere = Target::Silos {
        silos: vec!["other".into()],
    };
    let Response::Error { message } = ask(note(3, elsewhere)).await else {
        panic!("a note for another silo was taken");
    };
    assert!(message.contains("not this silo"), "{message}");
    assert_eq!(
        ask(Request::Ping { seq: 4 }).await,
        Response::Pong {
            seq: 4,
            deployed: Some(model)
        }
    );
}
