//! A whole federation on loopback, from the built binaries: for examples, experiments and
//! tests.
//!
//! [`Sandbox::start`] writes the federation and policy files into a working directory, makes
//! the certificates (`fedsilo certs init`), starts `fedsilo coordinator --events json` and one
//! `silo-node` per [`SiloSpec`], and reads the coordinator's events as they come. Waiting is for
//! events ([`Sandbox::expect`]), always bounded; every process is killed when the sandbox (or
//! its [`Proc`]) is dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

/// Where the `fedsilo` and `silo-node` executables are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `fedsilo`.
    pub fedsilo: PathBuf,
    /// `silo-node`.
    pub silo_node: PathBuf,
}

impl Binaries {
    /// Both executables beside the running example (`target/release/examples/X` →
    /// `target/release`).
    pub fn beside_example() -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .context("the example's directory has no parent")?;
        Self::in_dir(dir)
    }

    /// Both executables in `dir` (e.g. `target/release`).
    pub fn in_dir(dir: &Path) -> anyhow::Result<Self> {
        let b = Binaries {
            fedsilo: dir.join(format!("fedsilo{}", std::env::consts::EXE_SUFFIX)),
            silo_node: dir.join(format!("silo-node{}", std::env::consts::EXE_SUFFIX)),
        };
        for p in [&b.fedsilo, &b.silo_node] {
            if !p.exists() {
                bail!(
                    "{} not found: build the workspace first (cargo build --release)",
                    p.display()
                );
            }
        }
        Ok(b)
    }
}

/// Where an example federation runs.
#[derive(Debug, Clone)]
pub struct ExampleRun {
    /// Its directory, `examples/<name>` (absolute).
    pub here: PathBuf,
    /// Rounds to run: `ROUNDS` from the environment, else the example's default.
    pub rounds: u64,
    /// A fresh working directory: `WORK_DIR` from the environment, else `<here>/run`.
    pub work: PathBuf,
    /// The executables beside the example's.
    pub bins: Binaries,
}

impl ExampleRun {
    /// Resolves the example `name`'s directory, rounds and binaries, and empties its working
    /// directory.
    pub fn prepare(name: &str, default_rounds: u64) -> anyhow::Result<Self> {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(name)
            .canonicalize()?;
        let rounds = match std::env::var("ROUNDS") {
            Ok(r) => r
                .parse()
                .with_context(|| format!("ROUNDS={r}: not a number of rounds"))?,
            Err(_) => default_rounds,
        };
        let work = std::env::var_os("WORK_DIR").map_or_else(|| here.join("run"), PathBuf::from);
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work)?;
        Ok(Self {
            here,
            rounds,
            work,
            bins: Binaries::beside_example()?,
        })
    }
}

/// An example's federation file as a sandbox runs it: its own settings, with `rounds` rounds,
/// the sandbox's fixed paths (`policy.toml`, `state`, `certs/coordinator`), any free port, and
/// the schema (and a pretrained model) resolved against the file's directory.
pub fn adapt_federation_file(path: &Path, rounds: u64) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut t: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let section = |t: &mut toml::Table, name: &str| -> anyhow::Result<toml::Table> {
        match t.remove(name) {
            Some(toml::Value::Table(s)) => Ok(s),
            _ => bail!("{}: no [{name}] table", path.display()),
        }
    };
    let mut federation = section(&mut t, "federation")?;
    federation.insert("rounds".into(), toml::Value::Integer(rounds as i64));
    federation.insert("policy".into(), "policy.toml".into());
    federation.insert("state_dir".into(), "state".into());
    let mut network = section(&mut t, "network")?;
    network.insert("listen".into(), "127.0.0.1:0".into());
    network.insert("kit".into(), "certs/coordinator".into());
    let mut model = section(&mut t, "model")?;
    for key in ["schema", "initial", "manifest", "files"] {
        if let Some(p) = model.get(key).and_then(|v| v.as_str()) {
            let abs = base.join(p).display().to_string();
            model.insert(key.into(), abs.into());
        }
    }
    t.insert("federation".into(), federation.into());
    t.insert("network".into(), network.into());
    t.insert("model".into(), model.into());
    Ok(toml::to_string(&t)?)
}

/// Adds the pooled reference to a federation file as [`adapt_federation_file`] makes it:
/// `fedsilo-pretrain --pooled` trains the federation's model with its seed and training budget
/// on the union of the silos' training splits (`data`, each split as silo-node splits it), the
/// file is written to `<dir>/pooled.safetensors`, and `federation.pooled_reference` (with
/// `compare_local`) names it — every silo then scores it in the end-of-run comparison. Only
/// possible where all the data is on one machine, as in the examples.
pub fn add_pooled_reference(
    bins: &Binaries,
    federation: &mut toml::Table,
    data: &[PathBuf],
    dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    // Relative paths resolve against the file's directory, as the sandbox's own copy does.
    let file = dir.join("federation-for-pooled.toml");
    std::fs::write(&file, toml::to_string(&*federation)?)?;
    let out = dir.join("pooled.safetensors");
    let mut cmd = Command::new(
        bins.fedsilo
            .with_file_name(format!("fedsilo-pretrain{}", std::env::consts::EXE_SUFFIX)),
    );
    cmd.arg("--pooled").arg("--federation").arg(&file);
    for d in data {
        cmd.arg("--data").arg(d);
    }
    let done = cmd.arg("--out").arg(&out).output()?;
    if !done.status.success() {
        bail!(
            "fedsilo-pretrain --pooled failed: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
    let section = federation
        .get_mut("federation")
        .and_then(|f| f.as_table_mut())
        .context("the federation file has no [federation] table")?;
    section.insert("compare_local".into(), true.into());
    section.insert("pooled_reference".into(), out.display().to_string().into());
    Ok(())
}

/// The example-weighted held-out AUC of one column (`local`, `federated`, `pooled`) of a
/// `comparison` event's rows, over the rows that have it; NaN if none has.
pub fn comparison_auc(rows: &[Value], column: &str) -> f64 {
    let (mut sum, mut n) = (0.0, 0.0);
    for r in rows {
        if let (Some(a), Some(e)) = (r[column]["auc"].as_f64(), r["examples"].as_f64()) {
            sum += a * e;
            n += e;
        }
    }
    sum / n
}

/// A federation file for a sandbox: the fixed paths it needs (`policy.toml`, `state`,
/// `certs/coordinator`) and the knobs experiments and tests turn. `extra` is appended verbatim
/// (e.g. an `[aggregation]` table).
#[derive(Debug, Clone)]
pub struct FederationFile {
    /// Rounds to run.
    pub rounds: u64,
    /// The schema file.
    pub schema: PathBuf,
    /// Listen port (0: any).
    pub port: u16,
    /// `federation.wait_for_silos_secs`.
    pub wait_for_silos_secs: f64,
    /// `network.heartbeat_interval_secs`.
    pub heartbeat_interval_secs: f64,
    /// `network.heartbeat_timeout_secs`.
    pub heartbeat_timeout_secs: f64,
    /// `network.chunk_values`.
    pub chunk_values: usize,
    /// `model.hidden`.
    pub hidden: Vec<usize>,
    /// `model.seed`.
    pub seed: u64,
    /// `model.initial`: a pretrained model to start from.
    pub initial: Option<PathBuf>,
    /// `model.manifest`: a described model instead of the schema's MLP (`hidden` unused).
    pub manifest: Option<PathBuf>,
    /// `model.files`: the directory of the manifest's pinned files, sent to silos that lack
    /// them.
    pub model_files: Option<PathBuf>,
    /// `federation.compare_local`: each silo's local-only baseline at the end.
    pub compare_local: bool,
    /// `plan.epochs`.
    pub epochs: u32,
    /// `plan.learning_rate`.
    pub learning_rate: f32,
    /// Appended verbatim to `[network]`.
    pub network_extra: String,
    /// Appended verbatim.
    pub extra: String,
}

impl FederationFile {
    /// Defaults for `schema`: 3 rounds, a [16] MLP, one epoch, fast heartbeats.
    pub fn new(schema: &Path) -> Self {
        FederationFile {
            rounds: 3,
            schema: schema.to_path_buf(),
            port: 0,
            wait_for_silos_secs: 60.0,
            heartbeat_interval_secs: 0.2,
            heartbeat_timeout_secs: 5.0,
            chunk_values: 1 << 20,
            hidden: vec![16],
            seed: 3,
            initial: None,
            manifest: None,
            model_files: None,
            compare_local: false,
            epochs: 1,
            learning_rate: 0.1,
            network_extra: String::new(),
            extra: String::new(),
        }
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let hidden: Vec<String> = self.hidden.iter().map(|h| h.to_string()).collect();
        let model = match &self.manifest {
            Some(m) => match &self.model_files {
                Some(f) => format!(
                    "manifest = \"{}\"\nfiles = \"{}\"",
                    m.display(),
                    f.display()
                ),
                None => format!("manifest = \"{}\"", m.display()),
            },
            None => format!(
                "schema = \"{}\"\nhidden = [{}]",
                self.schema.display(),
                hidden.join(", ")
            ),
        };
        format!(
            "[federation]\nname = \"sandbox\"\nrounds = {}\npolicy = \"policy.toml\"\nstate_dir = \"state\"\nwait_for_silos_secs = {}\ncompare_local = {}\n\
             [network]\nlisten = \"127.0.0.1:{}\"\nkit = \"certs/coordinator\"\nheartbeat_interval_secs = {}\nheartbeat_timeout_secs = {}\nchunk_values = {}\n{}\
             [model]\n{}\nseed = {}\n{}\
             [plan]\nepochs = {}\nbatch_size = 32\nlearning_rate = {}\n{}\n",
            self.rounds,
            self.wait_for_silos_secs,
            self.compare_local,
            self.port,
            self.heartbeat_interval_secs,
            self.heartbeat_timeout_secs,
            self.chunk_values,
            self.network_extra,
            model,
            self.seed,
            self.initial
                .as_ref()
                .map_or(String::new(), |p| format!("initial = \"{}\"\n", p.display())),
            self.epochs,
            self.learning_rate,
            self.extra
        )
    }
}

/// One silo to start.
#[derive(Debug, Clone, Default)]
pub struct SiloSpec {
    /// Node name (its certificate is made with it).
    pub name: String,
    /// Region written into its certificate (default: the CA's default region).
    pub region: Option<String>,
    /// The regional aggregator (by name) it links to and serves its updates to.
    pub aggregator: Option<String>,
    /// Its CSV file.
    pub data: PathBuf,
    /// Extra `silo-node` arguments (e.g. `--attack sign-flip`; a `--schema` or `--manifest`
    /// here replaces the federation's schema).
    pub args: Vec<String>,
    /// Not started with the others but by [`Sandbox::start_held_back`], so that a test can
    /// order what the coordinator sees without racing the processes.
    pub held_back: bool,
}

/// One regional aggregator to start (`fedsilo aggregator`).
#[derive(Debug, Clone)]
pub struct AggregatorSpec {
    /// Node name.
    pub name: String,
    /// Region written into its certificate.
    pub region: String,
}

/// Everything a sandbox starts.
#[derive(Debug, Clone)]
pub struct SandboxSpec<'a> {
    /// The executables.
    pub bins: &'a Binaries,
    /// Working directory.
    pub dir: &'a Path,
    /// The federation file (see [`Sandbox::start`]).
    pub federation_toml: &'a str,
    /// The policy file.
    pub policy_toml: &'a str,
    /// The default schema.
    pub schema: &'a Path,
    /// The silos.
    pub silos: Vec<SiloSpec>,
    /// Arguments for every silo.
    pub silo_args: &'a [&'a str],
    /// Regional aggregators.
    pub aggregators: Vec<AggregatorSpec>,
    /// Extra coordinator arguments (e.g. fault injection).
    pub coordinator_args: Vec<String>,
}

/// A child process, killed when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`...).
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()?
            .success();
        if !ok {
            bail!("kill -{sig} {} failed", self.pid());
        }
        Ok(())
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() >= until {
                bail!("process {} did not exit within {timeout:?}", self.pid());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.pid().to_string())
            .stderr(Stdio::null())
            .status();
        self.kill();
    }
}

/// A running federation.
#[derive(Debug)]
pub struct Sandbox {
    bins: Binaries,
    dir: PathBuf,
    coordinator: Proc,
    silos: Vec<(String, Proc)>,
    events: Receiver<Value>,
    seen: Vec<Value>,
    aggregators: Vec<(String, Proc)>,
    coordinator_args: Vec<String>,
    /// Silos prepared but not started yet ([`SiloSpec::held_back`]).
    held_back: Vec<(String, Command)>,
    /// How long [`Sandbox::expect`] waits.
    pub timeout: Duration,
}

fn spawn_coordinator(
    bins: &Binaries,
    dir: &Path,
    extra: &[String],
) -> anyhow::Result<(Proc, Receiver<Value>)> {
    let mut child = Command::new(&bins.fedsilo)
        .args(["coordinator", "--events", "json", "--config"])
        .arg(dir.join("federation.toml"))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting fedsilo coordinator")?;
    let stdout = child.stdout.take().context("coordinator stdout")?;
    let (tx, events) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    Ok((Proc { child }, events))
}

impl Sandbox {
    /// Starts a federation in `dir` (created if missing). `federation_toml` must use
    /// `policy = "policy.toml"`, `state_dir = "state"` and `kit = "certs/coordinator"`;
    /// `silo_args` go to every silo (e.g. `--once`); `schema` is the default schema.
    pub fn start(
        bins: &Binaries,
        dir: &Path,
        federation_toml: &str,
        policy_toml: &str,
        schema: &Path,
        silos: Vec<SiloSpec>,
        silo_args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_spec(SandboxSpec {
            bins,
            dir,
            federation_toml,
            policy_toml,
            schema,
            silos,
            silo_args,
            aggregators: vec![],
            coordinator_args: vec![],
        })
    }

    /// Starts a federation with regional aggregators and extra coordinator arguments.
    pub fn start_spec(spec: SandboxSpec<'_>) -> anyhow::Result<Self> {
        let (bins, dir) = (spec.bins, spec.dir);
        std::fs::create_dir_all(dir)?;
        let mut certs = Command::new(&bins.fedsilo);
        certs
            .args(["certs", "init", "--out"])
            .arg(dir.join("certs"))
            .args(["--coordinator", "coordinator"]);
        for s in &spec.silos {
            certs.args([
                "--silo",
                &match &s.region {
                    Some(r) => format!("{}:{r}", s.name),
                    None => s.name.clone(),
                },
            ]);
        }
        for a in &spec.aggregators {
            certs.args(["--aggregator", &format!("{}:{}", a.name, a.region)]);
        }
        if !certs.stdout(Stdio::null()).status()?.success() {
            bail!("fedsilo certs init failed");
        }
        std::fs::write(dir.join("policy.toml"), spec.policy_toml)?;
        std::fs::write(dir.join("federation.toml"), spec.federation_toml)?;
        let (coordinator, events) = spawn_coordinator(bins, dir, &spec.coordinator_args)?;
        let mut sb = Sandbox {
            bins: bins.clone(),
            dir: dir.to_path_buf(),
            coordinator,
            silos: vec![],
            events,
            seen: vec![],
            aggregators: vec![],
            coordinator_args: spec.coordinator_args.clone(),
            held_back: vec![],
            timeout: Duration::from_secs(90),
        };
        let listening = sb.expect("listening", |e| e["event"] == "listening")?;
        let addr = listening["addr"]
            .as_str()
            .context("listening event without addr")?
            .to_string();
        let mut agg_addr = std::collections::BTreeMap::new();
        for a in &spec.aggregators {
            let mut child = Command::new(&bins.fedsilo)
                .arg("aggregator")
                .arg("--kit")
                .arg(dir.join("certs").join(&a.name))
                .args(["--coordinator", &addr, "--once", "--state-dir"])
                .arg(dir.join(format!("agg-{}", a.name)))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            let mut out = BufReader::new(child.stdout.take().context("aggregator stdout")?);
            let mut line = String::new();
            out.read_line(&mut line)?;
            // Keep draining its stdout: a closed pipe would kill it at its next line.
            std::thread::spawn(move || for _ in out.lines() {});
            let v: Value =
                serde_json::from_str(&line).with_context(|| format!("aggregator said {line:?}"))?;
            agg_addr.insert(
                a.name.clone(),
                v["addr"]
                    .as_str()
                    .context("aggregator without addr")?
                    .to_string(),
            );
            sb.aggregators.push((a.name.clone(), Proc { child }));
        }
        for s in spec.silos {
            let mut cmd = Command::new(&bins.silo_node);
            cmd.arg("--kit")
                .arg(dir.join("certs").join(&s.name))
                .args(["--coordinator", &addr, "--data"])
                .arg(&s.data);
            if !s.args.iter().any(|a| a == "--schema" || a == "--manifest") {
                cmd.arg("--schema").arg(spec.schema);
            }
            if let Some(a) = &s.aggregator {
                let a_addr = agg_addr
                    .get(a)
                    .with_context(|| format!("no aggregator {a} in the sandbox"))?;
                cmd.args(["--aggregator", a_addr, "--aggregator-name", a]);
            }
            // Each silo's log, for tests that read what it says ([`Sandbox::silo_log`]).
            let log = std::fs::File::create(dir.join(format!("{}.log", s.name)))?;
            cmd.args(spec.silo_args)
                .args(&s.args)
                .stdout(Stdio::null())
                .stderr(log);
            if s.held_back {
                sb.held_back.push((s.name, cmd));
            } else {
                let child = cmd.spawn()?;
                sb.silos.push((s.name, Proc { child }));
            }
        }
        Ok(sb)
    }

    /// Starts the silos marked [`SiloSpec::held_back`].
    pub fn start_held_back(&mut self) -> anyhow::Result<()> {
        for (name, mut cmd) in std::mem::take(&mut self.held_back) {
            let child = cmd.spawn()?;
            self.silos.push((name, Proc { child }));
        }
        Ok(())
    }

    /// Prints the local-only vs federated comparison, if the run made one: held-out AUC per
    /// silo, each silo called a `what` (bank, unit, …), with the pooled reference when the run
    /// had one ([`add_pooled_reference`]) and the silos where federating did not pay.
    pub fn print_comparison(&self, what: &str) {
        let Some(c) = self.seen.iter().find(|e| e["event"] == "comparison") else {
            return;
        };
        let rows = c["rows"].as_array().cloned().unwrap_or_default();
        let pooled = rows.iter().any(|r| r.get("pooled").is_some());
        println!(
            "\nheld-out AUC per {what}: {:>10} {:>10}{}",
            "alone",
            "federated",
            if pooled { "    pooled*" } else { "" }
        );
        let auc = |r: &Value, k: &str| {
            r[k]["auc"]
                .as_f64()
                .map_or("-".into(), |a| format!("{a:.3}"))
        };
        for r in &rows {
            println!(
                "  {:<18} {:>10} {:>10}{}",
                r["silo"].as_str().unwrap_or_default(),
                auc(r, "local"),
                auc(r, "federated"),
                if pooled {
                    format!(" {:>10}", auc(r, "pooled"))
                } else {
                    String::new()
                }
            );
        }
        if pooled {
            println!("  * the same trainer on all the {what}s' training rows together: a non-private reference");
        }
        for s in c["shortfalls"].as_array().into_iter().flatten() {
            println!(
                "  ! {}: federated is {:.3} below alone. Likely cause: {}",
                s["silo"].as_str().unwrap_or_default(),
                s["by"].as_f64().unwrap_or(f64::NAN),
                s["advice"].as_str().unwrap_or_default()
            );
        }
    }

    /// What silo `name` wrote to stderr (its log).
    pub fn silo_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The receive log of a regional aggregator, one JSON value per line.
    pub fn receive_log(&self, aggregator: &str) -> Vec<Value> {
        std::fs::read_to_string(
            self.dir
                .join(format!("agg-{aggregator}"))
                .join("receive.jsonl"),
        )
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
    }

    /// Waits for the next event matching `pred`; the error lists every event seen.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let until = Instant::now() + self.timeout;
        loop {
            match self
                .events
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return Ok(e);
                    }
                }
                Err(_) => bail!("no `{what}` event; saw: {:#?}", self.seen),
            }
        }
    }

    /// Every event seen so far.
    pub fn seen(&self) -> &[Value] {
        &self.seen
    }

    /// The committed-round events seen so far.
    pub fn committed(&self) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|e| e["event"] == "round_committed")
            .collect()
    }

    /// A silo's process.
    pub fn silo(&mut self, name: &str) -> &mut Proc {
        match self.silos.iter_mut().position(|(n, _)| n == name) {
            Some(i) => &mut self.silos[i].1,
            None => panic!("no silo named {name}"),
        }
    }

    /// The coordinator's process.
    pub fn coordinator(&mut self) -> &mut Proc {
        &mut self.coordinator
    }

    /// The coordinator's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Kills the coordinator (SIGKILL) and starts it again on the same files and state.
    pub fn crash_and_restart_coordinator(&mut self) -> anyhow::Result<()> {
        self.coordinator.kill();
        let (c, e) = spawn_coordinator(&self.bins, &self.dir, &self.coordinator_args)?;
        self.coordinator = c;
        self.events = e;
        Ok(())
    }
}
