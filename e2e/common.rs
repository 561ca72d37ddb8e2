//! Helpers shared by the end-to-end tests: a test federation of real processes on the churn
//! data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use testkit::sandbox::{
    add_pooled_reference, Binaries, FederationFile, Sandbox, SandboxSpec, SiloSpec,
};

pub fn bins() -> Binaries {
    let dir = Path::new(env!("CARGO_BIN_EXE_silo-node"))
        .parent()
        .unwrap()
        .to_path_buf();
    Binaries::in_dir(&dir).unwrap()
}

pub fn example(p: &str) -> PathBuf {
    example_in("churn", p)
}

/// A file of the example federation `name` (`churn`, `loans`).
pub fn example_in(name: &str, p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .join(p)
}

pub struct Options {
    pub silos: Vec<(&'static str, Vec<String>)>,
    pub min_silos: usize,
    pub quorum: usize,
    pub deadline: f64,
    pub grace: f64,
    pub rounds: u64,
    pub chunk: usize,
    pub heartbeat_timeout: f64,
    pub wait_for_silos: f64,
    /// Fixed listen port (for restarts); `None` lets the coordinator pick one.
    pub port: Option<u16>,
    /// Silos exit when the coordinator goes away (otherwise they reconnect).
    pub silos_exit_with_coordinator: bool,
    /// Appended to the federation file (e.g. an `[aggregation]` table).
    pub extra: &'static str,
    /// Lines added to the federation file's `[network]`.
    pub network_extra: &'static str,
    /// Appended to the policy file's `[participation]` table, then further tables.
    pub policy_extra: String,
    /// A pretrained model to start from (`model.initial`).
    pub initial: Option<PathBuf>,
    /// The example federation whose schema and data the silos use.
    pub example: &'static str,
    /// Extra arguments for `fedsilo coordinator`.
    pub coordinator_args: Vec<String>,
    /// Data files replacing a silo's example CSV, by silo name.
    pub data: Vec<(&'static str, PathBuf)>,
    /// Silos started only by `start_held_back` (see `SiloSpec::held_back`).
    pub held_back: Vec<&'static str>,
    /// A described model: its manifest and the directory of its files (every silo gets
    /// `--manifest` and `--model-dir`; `initial` must be set).
    pub manifest: Option<(PathBuf, PathBuf)>,
    /// `model.files`: the coordinator holds the manifest's files to send to silos lacking them.
    pub model_files: Option<PathBuf>,
    /// A silo's own `--model-dir`, instead of the manifest's directory, by silo name.
    pub model_dirs: Vec<(&'static str, PathBuf)>,
    /// `plan.learning_rate`.
    pub learning_rate: f32,
    /// `federation.compare_local`.
    pub compare_local: bool,
    /// `federation.pooled_reference`: trained by `fedsilo-pretrain --pooled` on the silos'
    /// data before the start (turns `compare_local` on).
    pub pooled_reference: bool,
    /// `model.hidden`.
    pub hidden: Vec<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            silos: vec![("northeast", vec![]), ("midwest", vec![]), ("west", vec![])],
            min_silos: 3,
            quorum: 3,
            deadline: 30.0,
            grace: 1.0,
            rounds: 3,
            chunk: 1 << 20,
            heartbeat_timeout: 5.0,
            wait_for_silos: 60.0,
            port: None,
            silos_exit_with_coordinator: true,
            extra: "",
            network_extra: "",
            policy_extra: String::new(),
            initial: None,
            example: "churn",
            coordinator_args: vec![],
            data: vec![],
            held_back: vec![],
            manifest: None,
            model_files: None,
            model_dirs: vec![],
            learning_rate: 0.1,
            compare_local: false,
            pooled_reference: false,
            hidden: vec![16],
        }
    }
}

/// A running test federation: the sandbox and the directory it lives in.
pub struct Federation {
    sb: Sandbox,
    /// The directory it lives in (policy, certificates, state).
    pub dir: tempfile::TempDir,
}

impl std::ops::Deref for Federation {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sb
    }
}

impl std::ops::DerefMut for Federation {
    fn deref_mut(&mut self) -> &mut Sandbox {
        &mut self.sb
    }
}

impl Federation {
    pub fn start(o: Options) -> Federation {
        let dir = tempfile::tempdir().unwrap();
        let policy = format!(
            "[rounds]\ndeadline_secs = {}\ngrace_secs = {}\n[participation]\nmin_silos = {}\nquorum = {}\n{}",
            o.deadline, o.grace, o.min_silos, o.quorum, o.policy_extra
        );
        let federation = FederationFile {
            rounds: o.rounds,
            port: o.port.unwrap_or(0),
            wait_for_silos_secs: o.wait_for_silos,
            heartbeat_timeout_secs: o.heartbeat_timeout,
            chunk_values: o.chunk,
            extra: o.extra.to_string(),
            network_extra: o.network_extra.to_string(),
            initial: o.initial.clone(),
            manifest: o.manifest.as_ref().map(|(m, _)| m.clone()),
            model_files: o.model_files.clone(),
            learning_rate: o.learning_rate,
            compare_local: o.compare_local,
            hidden: o.hidden.clone(),
            ..FederationFile::new(&example_in(o.example, "schema.toml"))
        }
        .render();
        let silos: Vec<SiloSpec> = o
            .silos
            .into_iter()
            .map(|(name, mut args)| {
                if let Some((m, dir)) = &o.manifest {
                    let dir = o
                        .model_dirs
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or(dir, |(_, d)| d);
                    args.extend([
                        "--manifest".into(),
                        arg(m).into(),
                        "--model-dir".into(),
                        arg(dir).into(),
                    ]);
                }
                (name, args)
            })
            .map(|(name, args)| SiloSpec {
                name: name.to_string(),
                data: o
                    .data
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, p)| p.clone())
                    .unwrap_or_else(|| example_in(o.example, &format!("data/{name}.csv"))),
                held_back: o.held_back.contains(&name),
                args,
                ..Default::default()
            })
            .collect();
        let federation = if o.pooled_reference {
            let mut t: toml::Table = toml::from_str(&federation).unwrap();
            let data: Vec<PathBuf> = silos.iter().map(|s: &SiloSpec| s.data.clone()).collect();
            add_pooled_reference(&bins(), &mut t, &data, dir.path()).unwrap();
            toml::to_string(&t).unwrap()
        } else {
            federation
        };
        let flags: &[&str] = if o.silos_exit_with_coordinator {
            &["--once"]
        } else {
            &["--max-backoff-secs", "0.3"]
        };
        let sb = Sandbox::start_spec(SandboxSpec {
            bins: &bins(),
            dir: dir.path(),
            federation_toml: &federation,
            policy_toml: &policy,
            schema: &example_in(o.example, "schema.toml"),
            silos,
            silo_args: flags,
            aggregators: vec![],
            coordinator_args: o.coordinator_args.clone(),
        })
        .unwrap();
        Federation { sb, dir }
    }

    pub fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.sb.expect(what, pred).unwrap()
    }

    /// The first event since event number `from` that matches `pred`, waiting for it if it
    /// has not come yet (for events of several silos, which come in any order).
    pub fn since(&mut self, from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        match self.seen()[from..].iter().find(|e| pred(e)) {
            Some(e) => e.clone(),
            None => self.expect(what, pred),
        }
    }

    /// Issues an operator kit `name` under the federation's CA; returns the certificates
    /// directory (the kit is `<it>/<name>`, the CA `<it>/ca.pem`).
    pub fn operator(&self, name: &str) -> PathBuf {
        let certs = self.dir.path().join("certs");
        let (made, out) = fedsilo(&["certs", "issue", "--out", arg(&certs), "--operator", name]);
        assert!(made, "{out}");
        certs
    }

    /// Waits for the run to finish without an error; its committed rounds.
    pub fn finished_ok(&mut self) -> Vec<Value> {
        let fin = self.expect("finished", |e| e["event"] == "finished");
        assert!(fin["error"].is_null(), "{fin}");
        self.committed().into_iter().cloned().collect()
    }

    pub fn exit_status(&mut self) -> std::process::ExitStatus {
        self.sb
            .coordinator()
            .wait_exit(Duration::from_secs(90))
            .unwrap()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `fedsilo` with `args`: whether it succeeded, and what it printed (stdout, then stderr).
pub fn fedsilo(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(bins().fedsilo)
        .args(args)
        .output()
        .unwrap();
    said(&out)
}

/// Runs `fedsilo-pretrain` with `args`: whether it succeeded, and what it printed.
pub fn fedsilo_pretrain(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(bins().fedsilo.with_file_name("fedsilo-pretrain"))
        .args(args)
        .output()
        .unwrap();
    said(&out)
}

/// Whether a finished command succeeded, and what it printed (stdout, then stderr).
fn said(out: &std::process::Output) -> (bool, String) {
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `fedsilo admin token add` into the tokens file `tokens`: the new token.
pub fn admin_token(tokens: &Path, name: &str, scope: &str) -> String {
    let (ok, out) = fedsilo(&[
        "admin",
        "token",
        "add",
        "--tokens",
        arg(tokens),
        "--name",
        name,
        "--scope",
        scope,
    ]);
    assert!(ok, "{out}");
    out.lines()
        .find(|l| l.starts_with("fedsilo_"))
        .unwrap()
        .to_string()
}

/// `silo-node` arguments that keep silo `name`'s deployments in `dir/name`.
pub fn deploy_dir(dir: &Path, name: &str) -> Vec<String> {
    vec!["--deploy-dir".into(), arg(&dir.join(name)).into()]
}

/// `silo-node score` at silo `silo` (its kit in `certs`, its deployments in `deploy/silo`) of
/// the example's `data/<silo>.csv` into `out`: whether it succeeded, and what it printed.
pub fn silo_score(certs: &Path, deploy: &Path, silo: &str, out: &Path) -> (bool, String) {
    let o = std::process::Command::new(bins().silo_node)
        .args(["score", "--kit"])
        .arg(certs.join(silo))
        .arg("--deploy-dir")
        .arg(deploy.join(silo))
        .arg("--schema")
        .arg(example("schema.toml"))
        .arg("--in")
        .arg(example(&format!("data/{silo}.csv")))
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    said(&o)
}

/// A path as a command-line argument.
pub fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Example-weighted held-out AUC of a committed round.
pub fn weighted_score(round: &Value) -> f64 {
    fedsilo::report::weighted_score(&round["eval"]).unwrap()
}

/// The browser to check pages with: Debian's `chromium` (scripts/ensure-deps.sh installs it).
fn chromium() -> String {
    for b in ["chromium", "chromium-browser", "google-chrome"] {
        if std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return b.to_string();
        }
    }
    panic!(
        "no headless browser: install the Debian package chromium (scripts/ensure-deps.sh does)"
    );
}

/// `page` laid out by headless Chromium (1280 pixels wide): a reader of the `data-*`
/// attributes its scripts set once loaded.
pub fn laid_out(page: &Path) -> impl Fn(&str) -> Option<String> {
    let dom = std::process::Command::new("timeout")
        .arg("120")
        .arg(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1280,900",
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    assert!(dom.contains("</body>"), "chromium laid out nothing: {dom}");
    move |name: &str| {
        let at = dom.find(&format!("{name}=\""))? + name.len() + 2;
        dom[at..].split('"').next().map(str::to_string)
    }
}
