//! Issue 15, as an attacker would try it against real processes: a consortium member's
//! certificate, or a copy of a silo's kit, must not take over another silo's session.

use std::process::{Child, Command, Stdio};

use crate::common::*;

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_copied_kit_cannot_take_over_a_live_silo() {
    let mut f = Federation::start(Options {
        rounds: 1_000_000,
        ..Default::default()
    });
    f.expect("first commit", |e| e["event"] == "round_committed");
    let addr = f
        .seen()
        .iter()
        .find(|e| e["event"] == "listening")
        .and_then(|e| e["addr"].as_str())
        .unwrap()
        .to_string();
    // A second silo-node with northeast's own kit, retrying fast.
    let _copy = Killed(
        Command::new(bins().silo_node)
            .arg("--kit")
            .arg(f.dir.path().join("certs/northeast"))
            .args(["--coordinator", &addr, "--data"])
            .arg(example("data/northeast.csv"))
            .arg("--schema")
            .arg(example("schema.toml"))
            .args(["--max-backoff-secs", "0.3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let refused = f.expect("the copy refused", |e| {
        e["event"] == "link_refused"
            && e["certificate"]
                .as_str()
                .is_some_and(|c| c.starts_with("northeast"))
    });
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("already connected"),
        "{refused}"
    );
    // The honest northeast keeps its session and keeps training while the copy retries.
    for _ in 0..3 {
        let c = f.expect("a commit", |e| e["event"] == "round_committed");
        assert!(
            c["participants"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == "northeast"),
            "{c}"
        );
    }
    assert!(
        !f.seen()
            .iter()
            .any(|e| e["event"] == "silo_left" && e["silo"] == "northeast"),
        "the honest northeast session was displaced"
    );
}

/// Runs `fedsilo ARGS` to its end (killed after 90 s): success and stderr.
fn run_fedsilo(args: &[&std::ffi::OsStr]) -> (bool, String) {
    run(bins().fedsilo, args)
}

/// Runs `program ARGS` to its end (killed after 90 s): success and stderr.
fn run(program: std::path::PathBuf, args: &[&std::ffi::OsStr]) -> (bool, String) {
    let mut child = Killed(
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "{args:?} did not end");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status.success(), err)
}

#[test]
fn a_modified_checkpoint_is_never_resumed() {
    let mut f = Federation::start(Options {
        rounds: 3,
        ..Default::default()
    });
    f.finished_ok();
    assert!(f.exit_status().success());
    let state = f.state_dir();
    let v = std::fs::read_to_string(state.join("CURRENT"))
        .unwrap()
        .trim()
        .to_string();
    let file = state.join(format!("models/v{v}.safetensors"));
    let mut bytes = std::fs::read(&file).unwrap();
    let committed = fedsilo::model::Digest::of_bytes(&bytes).hex();
    *bytes.last_mut().unwrap() ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let modified = fedsilo::model::Digest::of_bytes(&bytes).hex();
    let config = f.dir.path().join("federation.toml");
    let (ok, err) = run_fedsilo(&[
        "coordinator".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert!(
        !ok,
        "the coordinator started on a modified checkpoint: {err}"
    );
    assert!(
        err.contains(&format!("v{v}.safetensors"))
            && err.contains(&committed)
            && err.contains(&modified),
        "the error must name the file and both digests: {err}"
    );
    // Nothing was committed on top of it.
    assert_eq!(
        std::fs::read_to_string(state.join("CURRENT"))
            .unwrap()
            .trim(),
        v
    );
}

/// A TLS client of the admin API that trusts the federation's CA and presents no certificate.
fn admin_tls(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// A slow-body attacker from `source`: full headers announcing a 1 MB body, no credentials,
/// then a byte every 5 s for as long as the server keeps the connection. Returns what the
/// server answered first (its status line), or `None` if it closed without answering.
async fn slow_body(
    admin: std::net::SocketAddr,
    source: std::net::IpAddr,
    tls: tokio_rustls::TlsConnector,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    sock.bind(std::net::SocketAddr::new(source, 0)).ok()?;
    let tcp = sock.connect(admin).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("coordinator").unwrap();
    let mut s = tls.connect(name, tcp).await.ok()?;
    s.write_all(
        b"POST /v1/pause HTTP/1.1\r\nhost: coordinator\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n{",
    )
    .await
    .ok()?;
    let mut buf = vec![0u8; 512];
    loop {
        tokio::select! {
            n = s.read(&mut buf) => {
                let n = n.ok()?;
                if n == 0 { return None; }
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                return text.lines().next().map(str::to_string);
            }
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {
                if s.write_all(b" ").await.is_err() { return None; }
            }
        }
    }
}

#[test]
fn slow_bodies_without_credentials_cannot_lock_out_the_operator() {
    fedsilo::tls::install_crypto_provider();
    let keys = tempfile::tempdir().unwrap();
    let tokens = keys.path().join("tokens.toml");
    let (ok, out) = fedsilo(&[
        "admin",
        "token",
        "add",
        "--tokens",
        arg(&tokens),
        "--name",
        "oncall",
        "--scope",
        "read",
    ]);
    assert!(ok, "{out}");
    let token = out
        .lines()
        .find(|l| l.starts_with("fedsilo_"))
        .unwrap()
        .to_string();
    let port = free_port();
    let metrics = free_port();
    let extra = format!(
        "[admin]\nlisten = \"127.0.0.1:{port}\"\ntokens = \"{}\"\n",
        tokens.display()
    );
    let mut f = Federation::start(Options {
        rounds: 1_000_000,
        extra: Box::leak(extra.into_boxed_str()),
        coordinator_args: vec!["--metrics-listen".into(), format!("127.0.0.1:{metrics}")],
        ..Default::default()
    });
    f.expect("first commit", |e| e["event"] == "round_committed");
    let ca = f.dir.path().join("certs/coordinator/ca.pem");
    let admin: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tls = admin_tls(&ca);
        // One attacker on its own: the server answers 401 on the headers, before the body.
        let first = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            slow_body(admin, "127.0.0.3".parse().unwrap(), tls.clone()),
        )
        .await
        .expect("the server waited for the body of an unauthenticated request");
        assert_eq!(
            first.as_deref(),
            Some("HTTP/1.1 401 Unauthorized"),
            "{first:?}"
        );
        // 500 of them at once, from two addresses, held open as long as the server lets them.
        let mut attackers = tokio::task::JoinSet::new();
        for i in 0..500 {
            let source = format!("127.0.0.{}", 3 + i % 2).parse().unwrap();
            let tls = tls.clone();
            attackers.spawn(async move {
                // An attacker still waiting after 60 s is being made to wait for its body.
                tokio::time::timeout(
                    std::time::Duration::from_secs(60),
                    slow_body(admin, source, tls),
                )
                .await
            });
        }
        let client = fedsilo::admin::AdminClient::with_token(
            &format!("https://{admin}"),
            &ca,
            Some(token),
            "coordinator",
        )
        .unwrap();
        let status = client
            .get("/v1/status")
            .await
            .expect("the operator got through");
        assert_eq!(status.status, 200);
        // Every attacker was answered 401 or closed: none is waiting for its body.
        let mut answered = 0;
        while let Some(r) = attackers.join_next().await {
            let answer = r.unwrap().expect("an attacker's connection was held open");
            assert!(
                answer.is_none() || answer.as_deref() == Some("HTTP/1.1 401 Unauthorized"),
                "{answer:?}"
            );
            answered += usize::from(answer.is_some());
        }
        // The refusals are counted where an operator watches.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut m = tokio::net::TcpStream::connect(("127.0.0.1", metrics))
            .await
            .unwrap();
        m.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        m.read_to_string(&mut text).await.unwrap();
        let counted: usize = text
            .lines()
            .find(|l| l.starts_with("fedsilo_admin_refusals_total{status=\"401\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no admin refusal metric: {text}"));
        assert!(
            counted > answered,
            "{counted} counted, {answered} answered 401 (+1 alone)"
        );
    });
}

/// Raises this process's soft open-files limit (the flood below needs ~2,300 sockets).
fn raise_own_limit() {
    fedsilo::connection_budget::raise_open_files_limit().unwrap();
}

/// Idle TCP connections from many loopback addresses until `n` are open (or refused).
async fn idle_flood(target: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for i in 0..n {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        // 40 sources: each stays under the per-peer caps, so the totals and the descriptor
        // budget bound the flood.
        sock.bind(format!("127.0.1.{}:0", 1 + i % 40).parse().unwrap())
            .unwrap();
        if let Ok(s) = sock.connect(target).await {
            held.push(s);
        }
    }
    held
}

#[test]
fn descriptor_floods_refuse_connections_never_a_commit() {
    raise_own_limit();
    let metrics = free_port();
    let mut f = Federation::start(Options {
        rounds: 1_000_000,
        coordinator_args: vec!["--metrics-listen".into(), format!("127.0.0.1:{metrics}")],
        ..Default::default()
    });
    f.expect("first commit", |e| e["event"] == "round_committed");
    let pid = f.coordinator().pid();
    // Fewer descriptors than the red team's 1024, so that the process's descriptor budget, not
    // only the listeners' caps (64 metrics + 512 cluster), has to hold the line.
    let ok = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=400:400"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "prlimit failed");
    let cluster: std::net::SocketAddr = f
        .seen()
        .iter()
        .find(|e| e["event"] == "listening")
        .and_then(|e| e["addr"].as_str())
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let held = rt.block_on(async {
        let mut a = idle_flood(format!("127.0.0.1:{metrics}").parse().unwrap(), 1100).await;
        a.extend(idle_flood(cluster, 1100).await);
        a
    });
    assert!(held.len() >= 1100, "the flood itself could not connect");
    // Rounds keep committing (each commit opens files: checkpoint, journal, CURRENT).
    let before = f.committed().len();
    for _ in 0..3 {
        f.expect("a commit during the flood", |e| {
            e["event"] == "round_committed"
        });
    }
    assert!(f.committed().len() >= before + 3);
    assert!(
        f.coordinator()
            .wait_exit(std::time::Duration::ZERO)
            .is_err(),
        "the coordinator exited"
    );
    drop(held);
}

/// `data/{silo}.csv` of the churn example with its label column rewritten by `f`.
fn relabelled(
    dir: &std::path::Path,
    silo: &str,
    f: impl Fn(usize, &str) -> String,
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(example(&format!("data/{silo}.csv"))).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let col = header.split(',').position(|c| c == "churn").unwrap();
    let mut out = format!("{header}\n");
    for (i, line) in lines.enumerate() {
        let mut cells: Vec<String> = line.split(',').map(String::from).collect();
        cells[col] = f(i, &cells[col]);
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    let path = dir.join(format!("{silo}.csv"));
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn a_label_the_schema_does_not_declare_stops_the_silo_naming_file_line_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = fedsilo(&[
        "certs",
        "init",
        "--out",
        arg(&dir.path().join("certs")),
        "--coordinator",
        "coordinator",
        "--silo",
        "west",
    ]);
    assert!(ok, "{out}");
    // One label capitalised on data line 10 (file line 11).
    let data = relabelled(dir.path(), "west", |i, v| {
        if i == 9 {
            "Yes".into()
        } else {
            v.to_string()
        }
    });
    let (ok, err) = run_silo(&[
        "--kit".as_ref(),
        dir.path().join("certs/west").as_os_str(),
        "--coordinator".as_ref(),
        "127.0.0.1:9".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--schema".as_ref(),
        example("schema.toml").as_os_str(),
        "--once".as_ref(),
    ]);
    assert!(!ok, "the silo started on a label it had to guess: {err}");
    assert!(
        err.contains("west.csv")
            && err.contains("line 11")
            && err.contains("`Yes`")
            && err.contains("positive \"yes\"; negative \"no\""),
        "{err}"
    );
}

/// Runs `silo-node ARGS` to its end (killed after 90 s): success and stderr.
fn run_silo(args: &[&std::ffi::OsStr]) -> (bool, String) {
    run(bins().silo_node, args)
}

#[test]
fn a_silo_whose_training_split_has_one_class_is_left_out_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let only_no = relabelled(dir.path(), "west", |_, _| "no".into());
    // West alone first: the others start once it is blocked, so the rounds cannot finish
    // before the coordinator has heard from it.
    let mut f = Federation::start(Options {
        min_silos: 2,
        quorum: 2,
        rounds: 2,
        data: vec![("west", only_no)],
        held_back: vec!["northeast", "midwest"],
        ..Default::default()
    });
    let blocked = f.expect("west blocked", |e| {
        e["event"] == "silo_blocked" && e["silo"] == "west"
    });
    f.start_held_back().unwrap();
    let reason = blocked["reason"].as_str().unwrap();
    assert!(
        reason.contains("single class") && reason.contains("negative (no)"),
        "{reason}"
    );
    for round in f.finished_ok() {
        assert!(
            !round["participants"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == "west"),
            "{round}"
        );
    }
}

/// Four regions, one of which poisons every update; the default policy. Returns the final
/// weighted held-out AUC and what the attacker's updates met in each committed round.
fn poisoned_run(attack: Option<&str>, policy_extra: &str) -> (f64, Vec<bool>) {
    let west = match attack {
        Some(a) => vec!["--attack".to_string(), a.to_string()],
        None => vec![],
    };
    let mut f = Federation::start(Options {
        silos: vec![
            ("northeast", vec![]),
            ("midwest", vec![]),
            ("south", vec![]),
            ("west", west),
        ],
        min_silos: 4,
        quorum: 3,
        rounds: 10,
        policy_extra: policy_extra.into(),
        ..Default::default()
    });
    let rounds = f.finished_ok();
    let refused_each_round = rounds
        .iter()
        .map(|r| {
            !r["participants"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == "west")
        })
        .collect();
    (weighted_score(rounds.last().unwrap()), refused_each_round)
}

/// The default policy resists one poisoning silo of four: its −10× and +10× updates are
/// refused by the cohort norm bound in every round, and the model trains as if it were not
/// there. The explicit opt-out shows what the bound prevents. Figures for docs/security.md.
#[test]
fn the_default_policy_resists_one_poisoning_silo_of_four() {
    let (clean, admitted) = poisoned_run(None, "");
    println!("default policy, no attack: final weighted AUC {clean:.3}");
    assert!(
        admitted.iter().all(|r| !r),
        "an honest west was refused: {admitted:?}"
    );
    for attack in ["sign-flip", "scale"] {
        let (auc, refused) = poisoned_run(Some(attack), "");
        println!("default policy, west {attack}: final weighted AUC {auc:.3}");
        assert!(
            refused.iter().all(|r| *r),
            "{attack}: west was admitted in a round: {refused:?}"
        );
        assert!(
            auc > clean - 0.03,
            "{attack}: AUC {auc:.3} under the default policy, clean {clean:.3}"
        );
    }
    let (auc, refused) = poisoned_run(Some("sign-flip"), "[admission]\nmax_norm_ratio = 0\n");
    println!("max_norm_ratio = 0 (opt-out), west sign-flip: final weighted AUC {auc:.3}");
    assert!(
        refused.iter().all(|r| !r),
        "with the bound off, west is admitted"
    );
    assert!(
        auc < clean - 0.1,
        "the opt-out should show the attack's effect: AUC {auc:.3}, clean {clean:.3}"
    );
}

/// Two runs of the same federation, one with the silos' answers arriving in another order
/// (delays), commit the same checkpoints, byte for byte.
#[test]
fn the_same_federation_commits_the_same_digests_whatever_the_arrival_order() {
    let digests = |delays: [u64; 3]| {
        let names = ["northeast", "midwest", "west"];
        let mut f = Federation::start(Options {
            silos: names
                .iter()
                .zip(delays)
                .map(|(n, d)| (*n, vec!["--train-delay-ms".to_string(), d.to_string()]))
                .collect(),
            rounds: 4,
            ..Default::default()
        });
        f.finished_ok()
            .iter()
            .map(|r| r["digest"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let a = digests([0, 150, 300]);
    let b = digests([300, 150, 0]);
    assert_eq!(a.len(), 4);
    assert_eq!(a, b, "the committed digests depend on the arrival order");
}

/// The crash window between the journal and the logs, made exactly: a finished run's last
/// commit is cut from `rounds.jsonl` and `events.jsonl` (as if the coordinator had been killed
/// right after journaling it). The next start publishes it to both, once; a second start adds
/// nothing.
#[test]
fn a_commit_the_logs_never_heard_of_is_published_once_at_the_next_start() {
    let mut f = Federation::start(Options {
        rounds: 3,
        ..Default::default()
    });
    let last = f.finished_ok().last().unwrap()["version"].as_u64().unwrap();
    assert!(f.exit_status().success());
    let state = f.state_dir();
    let drop_last = |file: &str, is_it: &dyn Fn(&serde_json::Value) -> bool| {
        let text = std::fs::read_to_string(state.join(file)).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                !serde_json::from_str::<serde_json::Value>(l)
                    .is_ok_and(|v| is_it(&v) && v["version"].as_u64() == Some(last))
            })
            .collect();
        std::fs::write(state.join(file), kept.join("\n") + "\n").unwrap();
    };
    drop_last("rounds.jsonl", &|_| true);
    drop_last("events.jsonl", &|v| v["event"] == "round_committed");
    let count = |file: &str, is_it: &dyn Fn(&serde_json::Value) -> bool| {
        std::fs::read_to_string(state.join(file))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| is_it(v) && v["version"].as_u64() == Some(last))
            .count()
    };
    assert_eq!(count("rounds.jsonl", &|_| true), 0);
    let config = f.dir.path().join("federation.toml");
    for start in 0..2 {
        // Every round is done: the coordinator resumes, repairs and finishes.
        let (ok, err) = run_fedsilo(&[
            "coordinator".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ]);
        assert!(ok, "start {start}: {err}");
        assert_eq!(count("rounds.jsonl", &|_| true), 1, "start {start}");
        assert_eq!(
            count("events.jsonl", &|v| v["event"] == "round_committed"),
            1,
            "start {start}"
        );
    }
}

/// A silo that claims 100× the examples it trained on (to outweigh the others) is refused:
/// no update may claim more examples than the training rows its silo reported at its schema
/// check.
#[test]
fn example_counts_are_bounded_by_what_the_silo_reported() {
    let mut f = Federation::start(Options {
        silos: vec![
            ("northeast", vec![]),
            ("midwest", vec![]),
            ("west", vec!["--attack".into(), "inflate".into()]),
        ],
        min_silos: 3,
        quorum: 2,
        rounds: 2,
        ..Default::default()
    });
    let refused = f.expect("west refused", |e| {
        e["event"] == "update_refused" && e["silo"] == "west"
    });
    let reason = refused["reason"].as_str().unwrap();
    assert!(
        reason.contains("examples") && reason.contains("schema check"),
        "{reason}"
    );
    for r in f.finished_ok() {
        assert!(
            !r["participants"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == "west"),
            "{r}"
        );
    }
}

#[test]
fn the_unauthenticated_metrics_endpoints_bind_to_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let fed = dir.path().join("federation.toml");
    let base = std::fs::read_to_string(example("federation.toml"))
        .unwrap()
        .replace("schema.toml", example("schema.toml").to_str().unwrap());
    // In the file: named with the key, before anything listens.
    std::fs::write(
        &fed,
        base.replace("[network]\n", "[network]\nmetrics_listen = \"0.0.0.0:0\"\n"),
    )
    .unwrap();
    assert!(base.contains("[network]\n"));
    let (ok, err) = run_fedsilo(&["coordinator".as_ref(), "--config".as_ref(), fed.as_os_str()]);
    assert!(!ok, "the coordinator served metrics on 0.0.0.0");
    assert!(
        err.contains("`network.metrics_listen` = 0.0.0.0:0")
            && err.contains("not a loopback address")
            && err.contains("admin API"),
        "{err}"
    );
    // On the command line, to the coordinator and to a silo.
    std::fs::write(&fed, &base).unwrap();
    let (ok, err) = run_fedsilo(&[
        "coordinator".as_ref(),
        "--config".as_ref(),
        fed.as_os_str(),
        "--metrics-listen".as_ref(),
        "[::]:0".as_ref(),
    ]);
    assert!(
        !ok && err.contains("[::]:0 is not a loopback address"),
        "{err}"
    );
    let certs = dir.path().join("certs");
    let (ok, out) = fedsilo(&[
        "certs",
        "init",
        "--out",
        arg(&certs),
        "--consortium",
        "t",
        "--coordinator",
        "coordinator:us",
        "--silo",
        "west:us-west",
    ]);
    assert!(ok, "{out}");
    let (ok, err) = run_silo(&[
        "--kit".as_ref(),
        certs.join("west").as_os_str(),
        "--coordinator".as_ref(),
        "127.0.0.1:1".as_ref(),
        "--data".as_ref(),
        example("data/west.csv").as_os_str(),
        "--schema".as_ref(),
        example("schema.toml").as_os_str(),
        "--metrics-listen".as_ref(),
        "10.1.2.3:9465".as_ref(),
        "--once".as_ref(),
    ]);
    assert!(
        !ok && err.contains("--metrics-listen") && err.contains("10.1.2.3:9465 is not a loopback"),
        "{err}"
    );
}
