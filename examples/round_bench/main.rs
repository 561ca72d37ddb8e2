//! # The round benchmark: where a federated round's time, bytes, memory and CPU go
//!
//! A real federation per size — `fedsilo coordinator` and N `silo-node` processes over mutual
//! TLS on loopback — training the churn schema's MLP with its hidden width chosen for the
//! parameter count, one SGD step per round on a 32-row split, with federated evaluation every
//! round. It prints, per size, the median round (commit to commit), its phases, the bytes each
//! silo sends and receives per round against the model's size, the coordinator's and the
//! largest silo's peak memory, and CPU seconds per round.
//!
//! The machines this runs on are noisy, so every time is also given as a ratio to a reference
//! measured in the same run: SHA-256 over the model's bytes once (`ref`), the least a round can
//! cost per copy of the model it touches.
//!
//! ```text
//! scripts/bench-rounds.sh                       # 10k, 1M, 10M parameters, 4 silos
//! SIZES=10k,1m SILOS=16 ROUNDS=12 scripts/bench-rounds.sh
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;
use testkit::sandbox::{Binaries, FederationFile, Sandbox, SandboxSpec, SiloSpec};

/// The churn data each silo's 32 rows come from, in turn.
const SOURCES: [&str; 4] = ["northeast", "midwest", "south", "west"];

fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1_000),
        Some('m') => (&s[..s.len() - 1], 1_000_000),
        _ => (s.as_str(), 1),
    };
    let n: f64 = num
        .parse()
        .with_context(|| format!("size {s:?}: like 10k or 1m"))?;
    Ok((n * mult as f64) as u64)
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// Peak resident memory (VmHWM) and CPU seconds (user + system) of a process, while it lives.
fn sample(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some((hwm * 1024, ticks / 100.0))
}

/// The last sample of each process, taken every 20 ms until `stop`.
fn watch(
    pids: Vec<(String, u32)>,
    stop: Arc<AtomicBool>,
) -> Arc<Mutex<BTreeMap<String, (u64, f64)>>> {
    let last = Arc::new(Mutex::new(BTreeMap::new()));
    let out = last.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for (name, pid) in &pids {
                if let Some(s) = sample(*pid) {
                    last.lock().unwrap().insert(name.clone(), s);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One federation at `params` parameters with `silos` silos for `rounds` rounds.
fn run(
    bins: &Binaries,
    work: &Path,
    params: u64,
    silos: usize,
    rounds: u64,
) -> anyhow::Result<Vec<String>> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/churn");
    let dir = work.join(format!("p{params}-s{silos}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // 22 encoded inputs: params = 22·w + w + w + 1 with one hidden layer; layers are at most
    // 2^20 wide, so larger models take two of width w: params = w² + 25·w + 1.
    let width = ((params.saturating_sub(1)) / 24).max(1) as usize;
    let hidden = if width <= 1 << 20 {
        vec![width]
    } else {
        let w = ((-25.0 + (625.0 + 4.0 * (params as f64 - 1.0)).sqrt()) / 2.0).floor() as usize;
        vec![w, w]
    };
    let mut specs = vec![];
    for i in 0..silos {
        let src = std::fs::read_to_string(here.join(format!("data/{}.csv", SOURCES[i % 4])))?;
        let rows: Vec<&str> = src.lines().take(33).collect();
        let data = dir.join(format!("s{i:03}.csv"));
        std::fs::write(&data, rows.join("\n") + "\n")?;
        specs.push(SiloSpec {
            name: format!("s{i:03}"),
            data,
            ..Default::default()
        });
    }
    let mut fed = FederationFile::new(&here.join("schema.toml"));
    fed.rounds = rounds;
    fed.hidden = hidden;
    fed.epochs = 1;
    fed.wait_for_silos_secs = 300.0;
    fed.heartbeat_timeout_secs = 60.0;
    // All silos dial from 127.0.0.1, two links each.
    fed.network_extra = format!(
        "connections_per_address = {}\nconnections_total = {}\n",
        (2 * silos + 16).max(128),
        (2 * silos + 64).max(512)
    );
    let policy = format!(
        "[rounds]\ndeadline_secs = 600\ngrace_secs = 5\n[participation]\nmin_silos = {silos}\nquorum = {silos}\n"
    );
    let mut sb = Sandbox::start_spec(SandboxSpec {
        bins,
        dir: &dir,
        federation_toml: &fed.render(),
        policy_toml: &policy,
        schema: &here.join("schema.toml"),
        silos: specs,
        silo_args: &["--once"],
        aggregators: vec![],
        coordinator_args: vec![],
    })?;
    sb.timeout = Duration::from_secs(1800);
    let mut pids = vec![("coordinator".to_string(), sb.coordinator().pid())];
    for i in 0..silos {
        let name = format!("s{i:03}");
        pids.push((name.clone(), sb.silo(&name).pid()));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let samples = watch(pids, stop.clone());
    let done = sb.expect("finished", |e| e["event"] == "finished")?;
    stop.store(true, Ordering::Relaxed);
    if !done["error"].is_null() || done["rounds_committed"] != rounds {
        bail!("the federation did not commit {rounds} rounds: {done}");
    }
    let lines: Vec<Value> = std::fs::read_to_string(dir.join("state/rounds.jsonl"))?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    // The first rounds warm up (connections, first transfer of the base): left out.
    let steady: Vec<&Value> = lines.iter().skip(2).collect();
    let f = |r: &Value, k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let phase = |k: &str| {
        median(
            steady
                .iter()
                .map(|r| r["phases"][k].as_f64().unwrap_or(0.0))
                .collect(),
        )
    };
    let period = median(steady.iter().map(|r| f(r, "period_seconds")).collect());
    let per_silo = |k: &str| {
        median(
            steady
                .iter()
                .map(|r| {
                    let m = r[k]
                        .as_object()
                        .map_or(0.0, |m| m.values().filter_map(Value::as_f64).sum());
                    m / silos as f64
                })
                .collect(),
        )
    };
    let model = lines[0]["update_bytes"].as_f64().unwrap_or(0.0);
    // The reference: SHA-256 over the model's bytes, once (median of 5).
    let bytes = vec![0x5au8; model as usize];
    let reference = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(fedsilo::model::Digest::of_bytes(&bytes));
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let s = samples.lock().unwrap().clone();
    let (coord_mem, coord_cpu) = s.get("coordinator").copied().unwrap_or_default();
    let silo_mem = s
        .iter()
        .filter(|(k, _)| *k != "coordinator")
        .map(|(_, v)| v.0)
        .max()
        .unwrap_or(0);
    let silo_cpu: f64 = s
        .iter()
        .filter(|(k, _)| *k != "coordinator")
        .map(|(_, v)| v.1)
        .sum();
    let mb = |b: f64| b / 1e6;
    Ok(vec![
        format!("{params}"),
        format!("{silos}"),
        format!("{:.1} ms ({:.0}× ref)", period * 1e3, period / reference),
        format!(
            "{:.1} / {:.1} / {:.1} / {:.1} / {:.1}",
            phase("collect") * 1e3,
            phase("train") * 1e3,
            phase("aggregate") * 1e3,
            phase("validate") * 1e3,
            phase("commit") * 1e3
        ),
        format!(
            "{:.2} / {:.2}",
            per_silo("bytes_from_silos") / model,
            per_silo("bytes_to_silos") / model
        ),
        {
            // Issue 20's bound: twice the model plus 64 MB, whatever the number of silos.
            let bound = 2.0 * model + 64.0 * 1024.0 * 1024.0;
            format!(
                "{:.1} MB ({:.1}× model; bound {:.0} MB: {})",
                mb(coord_mem as f64),
                coord_mem as f64 / model,
                mb(bound),
                if (coord_mem as f64) <= bound {
                    "within"
                } else {
                    "EXCEEDED"
                }
            )
        },
        format!("{:.1} MB", mb(silo_mem as f64)),
        format!(
            "{:.3} / {:.3}",
            coord_cpu / rounds as f64,
            silo_cpu / rounds as f64
        ),
        format!("{:.2} ms", reference * 1e3),
    ])
}

fn main() -> anyhow::Result<()> {
    let sizes: Vec<u64> = env_or("SIZES", "10k,1m,10m")
        .split(',')
        .map(parse_size)
        .collect::<anyhow::Result<_>>()?;
    let silos: Vec<usize> = env_or("SILOS", "4")
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("SILOS: {s:?} is not a number"))
        })
        .collect::<anyhow::Result<_>>()?;
    let rounds: u64 = env_or("ROUNDS", "12").parse().context("ROUNDS: a number")?;
    if rounds < 4 {
        bail!("ROUNDS = {rounds}: at least 4 (the first two are left out as warm-up)");
    }
    let bins = Binaries::beside_example()?;
    let work: PathBuf = std::env::var_os("WORK_DIR").map_or_else(
        || std::env::temp_dir().join("fedsilo-round-bench"),
        PathBuf::from,
    );
    println!(
        "| parameters | silos | median round, commit to commit | collect / train / aggregate / validate / commit, ms | bytes up / down per silo per round, × model | coordinator peak | largest silo peak | CPU s per round, coordinator / all silos | ref: SHA-256 of the model |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &silos {
        for &p in &sizes {
            eprintln!("round bench: {p} parameters, {n} silos, {rounds} rounds ...");
            let row = run(&bins, &work, p, n, rounds)?;
            println!("| {} |", row.join(" | "));
        }
    }
    Ok(())
}
