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

/// One silo to start.
#[derive(Debug, Clone)]
pub struct SiloSpec {
    /// Node name (its certificate is made with it).
    pub name: String,
    /// Its CSV file.
    pub data: PathBuf,
    /// Extra `silo-node` arguments (e.g. `--attack sign-flip`; a `--schema` here replaces the
    /// federation's).
    pub args: Vec<String>,
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
    /// How long [`Sandbox::expect`] waits.
    pub timeout: Duration,
}

fn spawn_coordinator(bins: &Binaries, dir: &Path) -> anyhow::Result<(Proc, Receiver<Value>)> {
    let mut child = Command::new(&bins.fedsilo)
        .args(["coordinator", "--events", "json", "--config"])
        .arg(dir.join("federation.toml"))
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
        std::fs::create_dir_all(dir)?;
        let mut certs = Command::new(&bins.fedsilo);
        certs
            .args(["certs", "init", "--out"])
            .arg(dir.join("certs"))
            .args(["--coordinator", "coordinator"]);
        for s in &silos {
            certs.args(["--silo", &s.name]);
        }
        if !certs.stdout(Stdio::null()).status()?.success() {
            bail!("fedsilo certs init failed");
        }
        std::fs::write(dir.join("policy.toml"), policy_toml)?;
        std::fs::write(dir.join("federation.toml"), federation_toml)?;
        let (coordinator, events) = spawn_coordinator(bins, dir)?;
        let mut sb = Sandbox {
            bins: bins.clone(),
            dir: dir.to_path_buf(),
            coordinator,
            silos: vec![],
            events,
            seen: vec![],
            timeout: Duration::from_secs(90),
        };
        let listening = sb.expect("listening", |e| e["event"] == "listening")?;
        let addr = listening["addr"]
            .as_str()
            .context("listening event without addr")?
            .to_string();
        for s in silos {
            let mut cmd = Command::new(&bins.silo_node);
            cmd.arg("--kit")
                .arg(dir.join("certs").join(&s.name))
                .args(["--coordinator", &addr, "--data"])
                .arg(&s.data);
            if !s.args.iter().any(|a| a == "--schema") {
                cmd.arg("--schema").arg(schema);
            }
            let child = cmd
                .args(silo_args)
                .args(&s.args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            sb.silos.push((s.name, Proc { child }));
        }
        Ok(sb)
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
        let (c, e) = spawn_coordinator(&self.bins, &self.dir)?;
        self.coordinator = c;
        self.events = e;
        Ok(())
    }
}
