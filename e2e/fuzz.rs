//! Fuzzing every parser that reads outside input: no input may panic, hang or kill the actor
//! that reads it.
//!
//! cargo-fuzz needs a nightly toolchain, which this project's machines do not have, so each
//! target is a mutation fuzzer over raw bytes: it starts from the committed corpus
//! (`fuzz/corpus/<target>/`, valid inputs) and applies random bit flips, byte replacements,
//! insertions, deletions, duplications, truncations and splices, seeded (`FEDSILO_FUZZ_SEED`,
//! default fixed) so a failure replays. Each target runs for `FEDSILO_FUZZ_SECS` seconds
//! (default 3: the test command's budget) and prints how many inputs it tried.
//!
//! Targets: `wire` (every message type of the coordinator ↔ silo and regional protocols),
//! `auth_frames` (ractor_cluster name and challenge frames, both directions), `trainer` (raw
//! frames and chunked model transfers sent to a live Trainer actor), `checkpoint`
//! (safetensors), `csv_schema` (schema TOML and CSV data), `config` (federation and policy
//! TOML) and `admin_http` (raw HTTP requests through the admin API's server stack).
//!
//! `cargo test --release -p silo-node --test e2e -- --ignored fuzz::refresh_corpus` rewrites the
//! generated part of the corpus.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use fedsilo::protocol::regional::{RegionalRequest, RegionalResponse};
use fedsilo::protocol::{decode, encode, ModelRef, Request, Response};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// The committed seeds of `target`.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().filter_map(|f| std::fs::read(f).ok()).collect();
    assert!(!seeds.is_empty(), "no corpus for {target}");
    seeds
}

/// One random mutation of a seed (or a splice of two).
fn mutate(seeds: &[Vec<u8>], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut v = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..5) {
        let n = v.len();
        match rng.random_range(0..8) {
            0 if n > 0 => {
                let i = rng.random_range(0..n);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if n > 0 => {
                let i = rng.random_range(0..n);
                v[i] = [0, 0xff, 0x7f, 0x80, b'\n', b'"', b'='][rng.random_range(0..7)];
            }
            2 => {
                let i = rng.random_range(0..=n);
                let k = rng.random_range(1..16);
                let bytes: Vec<u8> = (0..k).map(|_| rng.random()).collect();
                v.splice(i..i, bytes);
            }
            3 if n > 0 => {
                let i = rng.random_range(0..n);
                let j = (i + rng.random_range(1..64)).min(n);
                v.drain(i..j);
            }
            4 if n > 0 => {
                let i = rng.random_range(0..n);
                let j = (i + rng.random_range(1..64)).min(n);
                let dup = v[i..j].to_vec();
                v.splice(j..j, dup);
            }
            5 if n > 0 => v.truncate(rng.random_range(0..n)),
            6 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let cut = rng.random_range(0..=v.len());
                let from = rng.random_range(0..=other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                let k = rng.random_range(0..64);
                v = (0..k).map(|_| rng.random()).collect();
            }
        }
    }
    v
}

fn budget() -> Duration {
    let secs = std::env::var("FEDSILO_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs.clamp(0.1, 3600.0))
}

fn rng() -> ChaCha8Rng {
    let seed = std::env::var("FEDSILO_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    ChaCha8Rng::seed_from_u64(seed)
}

/// Runs `one` on mutated inputs of `target` until the time budget is spent; prints the count.
fn fuzz(target: &str, mut one: impl FnMut(&[u8])) {
    let seeds = corpus(target);
    let mut rng = rng();
    let started = Instant::now();
    let mut n = 0u64;
    for s in &seeds {
        one(s);
        n += 1;
    }
    while started.elapsed() < budget() {
        let input = mutate(&seeds, &mut rng);
        one(&input);
        n += 1;
    }
    println!(
        "fuzz target {target}: {n} executions in {:.1} s, no panic",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn wire() {
    fuzz("wire", |b| {
        let _ = decode::<Request>(b, "fuzz");
        let _ = decode::<Response>(b, "fuzz");
        let _ = decode::<RegionalRequest>(b, "fuzz");
        let _ = decode::<RegionalResponse>(b, "fuzz");
    });
}

#[test]
fn auth_frames() {
    use fedsilo::cluster::auth_frames::{classify, read_declared_name, ChallengeGuard};
    use tokio::io::AsyncReadExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    fuzz("auth_frames", |b| {
        if b.len() > 8 {
            let _ = classify(&b[8..]);
        }
        rt.block_on(async {
            let _ = read_declared_name(&mut &b[..]).await;
            let mut out = Vec::new();
            let _ = ChallengeGuard::new(b, "coordinator")
                .read_to_end(&mut out)
                .await;
        });
    });
}

#[test]
fn checkpoint() {
    fuzz("checkpoint", |b| {
        let _ = fedsilo::model::checkpoint::Checkpoint::from_bytes(b, "fuzz");
        let _ = fedsilo::model::tensor_file::TensorSet::from_bytes(b, "fuzz");
    });
}

#[test]
fn csv_schema() {
    let schema = fedsilo::data::Schema::load(&crate::common::example("schema.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.csv");
    let schemas = corpus("schema");
    let mut rng = rng();
    fuzz("csv", |b| {
        std::fs::write(&path, b).unwrap();
        let _ = silo_node::data::Dataset::load(&path, &schema, 0.25, 1);
        let text = String::from_utf8_lossy(&mutate(&schemas, &mut rng)).to_string();
        let _ = fedsilo::data::Schema::from_toml_str(&text, "fuzz");
    });
}

#[test]
fn config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("federation.toml");
    let policies = corpus("policy");
    let mut rng = rng();
    fuzz("federation", |b| {
        std::fs::write(&path, b).unwrap();
        if let Ok(cfg) = fedsilo::federation::FederationConfig::load(&path) {
            let _ = cfg.validate("fuzz");
        }
        let text = String::from_utf8_lossy(&mutate(&policies, &mut rng)).to_string();
        if let Ok(p) = fedsilo_policies::Policy::from_toml_str(&text, "fuzz") {
            let _ = Instant::now() + p.rounds.deadline() + p.rounds.grace();
            let _ = fedsilo_policies::explain::summary(&p);
        }
    });
}

/// A live Trainer actor answers whatever frames arrive — random bytes, mutated requests,
/// chunk sequences with any offsets and totals — and keeps answering pings.
#[test]
fn trainer() {
    use fedsilo::protocol::TrainerMessage;
    use ractor::Actor;
    use silo_node::trainer::{TrainerActor, TrainerArgs};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let schema = fedsilo::data::Schema::load(&crate::common::example("schema.toml")).unwrap();
    let data =
        silo_node::data::Dataset::load(&crate::common::example("data/west.csv"), &schema, 0.2, 1)
            .unwrap();
    let t = rt.block_on(async {
        Actor::spawn(
            None,
            TrainerActor,
            TrainerArgs {
                name: "fuzz".into(),
                region: "global".into(),
                data: silo_node::trainer::LocalData::Tabular(Arc::new(data)),
                faults: Default::default(),
                dp_sgd: None,
                credentials: None,
                external: None,
                metrics: Arc::default(),
                deploy: None,
                board: std::sync::Arc::new(silo_node::status::StatusBoard::new("test", None)),
            },
        )
        .await
        .unwrap()
        .0
    });
    // The reply's bytes, or why there was none.
    let call = |frame: Vec<u8>| -> Result<Vec<u8>, String> {
        rt.block_on(async {
            match t
                .call(
                    |reply| TrainerMessage::Rpc { frame, reply },
                    Some(Duration::from_secs(10)),
                )
                .await
            {
                Ok(ractor::rpc::CallResult::Success(bytes)) => Ok(bytes),
                other => Err(format!("{other:?}")),
            }
        })
    };
    let mut rng = rng();
    fuzz("trainer", |b| {
        let answered = call(b.to_vec());
        assert!(
            answered.is_ok(),
            "the trainer did not answer a frame: {answered:?}"
        );
        // A chunk sequence with random offsets, totals and lengths.
        let total = rng.random_range(0..64u64);
        let model = ModelRef {
            version: rng.random_range(0..3),
            digest: fedsilo::model::Digest::of_f32(&[]),
        };
        for _ in 0..rng.random_range(1..4) {
            let offset = rng.random_range(0..=total + 2);
            let len = rng.random_range(0..8);
            let values: Vec<f32> = (0..len).map(|_| rng.random()).collect();
            let r = call(encode(&Request::PutModel {
                model,
                offset,
                total,
                values,
            }));
            assert!(r.is_ok(), "the trainer did not answer a chunk: {r:?}");
        }
    });
    let bytes = call(encode(&Request::Ping { seq: 7 })).expect("the trainer stopped answering");
    assert!(matches!(
        decode::<Response>(&bytes, "t"),
        Ok(Response::Pong {
            seq: 7,
            deployed: None
        })
    ));
}

/// Raw HTTP bytes through the admin API's server stack (hyper's HTTP/1 parser, the router, the
/// credential check, the body reader), without credentials and with a read-scoped token.
#[test]
fn admin_http() {
    use fedsilo::admin::auth::Peer;
    use fedsilo::admin::routes::{router, AdminApi};
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let (ok, out) = crate::common::fedsilo(&[
        "admin",
        "token",
        "add",
        "--tokens",
        crate::common::arg(&tokens),
        "--name",
        "fuzz",
        "--scope",
        "read",
    ]);
    assert!(ok, "{out}");
    let app = rt.block_on(async {
        // A coordinator that never answers: the fuzzed requests never reach it (no credentials,
        // or a read scope whose GETs are answered from the published status and the files).
        let (nobody, _) = ractor::Actor::spawn(None, Silent, ()).await.unwrap();
        let (_tx, status) = tokio::sync::watch::channel(Default::default());
        let api = AdminApi {
            control: fedsilo::control::FederationControl::new(nobody, status),
            registry: Arc::new(fedsilo::registry::Registry::open(dir.path()).unwrap()),
            state_dir: dir.path().to_path_buf(),
            tokens: Some(fedsilo::admin::tokens::TokenFile::open(&tokens).unwrap()),
            refusals: Default::default(),
            metrics: None,
            exposition: None,
        };
        router(Arc::new(api)).layer(axum::Extension(Peer::default()))
    });
    // The corpus names the read token `fedsilo_x`; the real one is put in its place.
    let token = out
        .lines()
        .find(|l| l.starts_with("fedsilo_"))
        .unwrap()
        .to_string();
    fuzz("admin_http", |b| {
        let app = app.clone();
        let b = replace(b, b"fedsilo_x", token.as_bytes());
        rt.block_on(async move {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let serve = tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(server), TowerToHyperService::new(app))
                    .await;
            });
            let _ = client.write_all(&b).await;
            let _ = client.shutdown().await;
            let mut out = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out)).await;
            serve.abort();
            if let Err(e) = serve.await {
                assert!(e.is_cancelled(), "the admin server panicked on {b:?}: {e}");
            }
        });
    });
}

/// `b` with every `from` replaced by `to`.
fn replace(b: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// An actor that ignores every coordinator message.
struct Silent;

impl ractor::Actor for Silent {
    type Msg = fedsilo::coordinator::CoordinatorMessage;
    type State = ();
    type Arguments = ();
    async fn pre_start(
        &self,
        _: ractor::ActorRef<Self::Msg>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }
}

/// Rewrites the generated seeds of the corpus from valid inputs made here.
#[test]
#[ignore]
fn refresh_corpus() {
    use fedsilo::cluster::auth_frames::{encode_challenge_frame, encode_name_frame};
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = corpus_dir(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };
    let model = ModelRef {
        version: 3,
        digest: fedsilo::model::Digest::of_f32(&[1.0, 2.0]),
    };
    write("wire", "ping.bin", &encode(&Request::Ping { seq: 1 }));
    write("wire", "feature_stats.bin", &encode(&Request::FeatureStats));
    write(
        "wire",
        "put_model.bin",
        &encode(&Request::PutModel {
            model,
            offset: 0,
            total: 2,
            values: vec![1.0, 2.0],
        }),
    );
    write(
        "wire",
        "fetch_update.bin",
        &encode(&Request::FetchUpdate {
            round: 2,
            offset: 0,
            len: 2,
        }),
    );
    write(
        "wire",
        "pong.bin",
        &encode(&Response::Pong {
            seq: 1,
            deployed: None,
        }),
    );
    write(
        "wire",
        "error.bin",
        &encode(&Response::Error {
            message: "no".into(),
        }),
    );
    write(
        "wire",
        "regional_finish.bin",
        &encode(&RegionalRequest::Finish { round: 4 }),
    );
    for f in std::fs::read_dir(corpus_dir("wire")).unwrap().flatten() {
        write(
            "trainer",
            &f.file_name().to_string_lossy(),
            &std::fs::read(f.path()).unwrap(),
        );
    }
    write(
        "auth_frames",
        "name.bin",
        &encode_name_frame("bank-a@fedsilo", 42),
    );
    write(
        "auth_frames",
        "challenge.bin",
        &encode_challenge_frame("coordinator@fedsilo"),
    );
    let spec = fedsilo::model::ModelSpec {
        inputs: 3,
        hidden: vec![2],
    };
    let ckpt = fedsilo::model::checkpoint::Checkpoint {
        params: fedsilo::model::initial_params(&spec, 1),
        spec: spec.into(),
        scaling: fedsilo::protocol::Scaling {
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
        },
        metadata: [("fedsilo.version".to_string(), "1".to_string())]
            .into_iter()
            .collect(),
    };
    write(
        "checkpoint",
        "mlp-3-2-1.safetensors",
        &ckpt.to_bytes().unwrap(),
    );
    let west = std::fs::read_to_string(crate::common::example("data/west.csv")).unwrap();
    let head: Vec<&str> = west.lines().take(30).collect();
    write("csv", "west-head.csv", (head.join("\n") + "\n").as_bytes());
    for (name, path) in [
        ("churn.toml", crate::common::example("schema.toml")),
        (
            "loans.toml",
            crate::common::example_in("loans", "schema.toml"),
        ),
    ] {
        write("schema", name, &std::fs::read(path).unwrap());
    }
    for (name, path) in [
        ("churn.toml", crate::common::example("policy.toml")),
        ("dp.toml", crate::common::example("policy-dp.toml")),
        ("secagg.toml", crate::common::example("policy-secagg.toml")),
        (
            "approval.toml",
            crate::common::example("policy-approval.toml"),
        ),
        (
            "cross_bank.toml",
            crate::common::example_in("cross_bank", "policy.toml"),
        ),
    ] {
        write("policy", name, &std::fs::read(path).unwrap());
    }
    for (name, path) in [
        ("churn.toml", crate::common::example("federation.toml")),
        (
            "churn-lora.toml",
            crate::common::example("federation-lora.toml"),
        ),
        (
            "loans.toml",
            crate::common::example_in("loans", "federation.toml"),
        ),
    ] {
        write("federation", name, &std::fs::read(path).unwrap());
    }
    write(
        "admin_http",
        "status.http",
        b"GET /v1/status HTTP/1.1\r\nhost: coordinator\r\n\r\n",
    );
    write(
        "admin_http",
        "approve.http",
        b"POST /v1/candidates/3/approve HTTP/1.1\r\nhost: coordinator\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n{\"reason\": \"ok\"}\n",
    );
    write(
        "admin_http",
        "rounds.http",
        b"GET /v1/rounds?limit=5 HTTP/1.1\r\nhost: coordinator\r\nauthorization: Bearer fedsilo_x\r\n\r\nGET /v1/audit HTTP/1.1\r\nhost: c\r\n\r\n",
    );
}
