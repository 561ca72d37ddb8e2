//! External trainers: a silo may train with any program (a PyTorch script, a notebook turned
//! into a script, a vendor tool). Each round the node hands the program a private work
//! directory holding
//!
//! - `base.safetensors` — the global model, one F32 tensor per layer (`dense{i}.weight`
//!   `[in, out]`, `dense{i}.bias` `[out]`; ReLU between layers, a sigmoid output);
//! - `train.safetensors` — the silo's training split as the federation encodes it: `x`
//!   `[rows, inputs]` (already scaled) and `y` `[rows]` (0 or 1);
//! - `plan.json` — the round's plan: `round`, `epochs`, `batch_size`, `learning_rate`, `seed`,
//!   `prox_mu`, and the architecture (`inputs`, `hidden`);
//!
//! and runs `PROGRAM ARGS... WORKDIR` with a timeout. The program writes
//! `weights.safetensors` (the trained model, the same tensors as the base) and `metrics.json`
//! (`{"train_loss": …}`). The node checks both before anything leaves the silo — names,
//! shapes, dtypes, finite values — and then applies the federation's clipping, noise,
//! compression or masking itself, so a buggy script cannot bypass the policy. The example
//! count (the aggregation weight) is the node's own, never the program's. The directory is
//! deleted after the run, training data included.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fedsilo::model::tensor_file::TensorSet;
use fedsilo::model::ModelSpec;
use fedsilo::protocol::TrainPlan;
use ndarray::{Array1, Array2};

/// Why an external trainer's round gave no update. The program is named in every message,
/// with the end of its output where it failed.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// The work directory cannot be made.
    #[error("cannot make a work directory in {}: {source}", dir.display())]
    Workdir {
        /// The parent directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An input file for the program cannot be written.
    #[error("writing {file}: {reason}")]
    Input {
        /// The file.
        file: &'static str,
        /// Why.
        reason: String,
    },
    /// The program cannot be started or watched.
    #[error("cannot start the trainer {}: {source}", program.display())]
    Start {
        /// The program.
        program: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The program ran past the timeout and was stopped.
    #[error("the trainer {} did not finish within {after:?}; it was stopped{tail}", program.display())]
    Timeout {
        /// The program.
        program: PathBuf,
        /// The timeout.
        after: Duration,
        /// The end of its output.
        tail: String,
    },
    /// The program exited with an error.
    #[error("the trainer {} failed ({status}){tail}", program.display())]
    Failed {
        /// The program.
        program: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its output.
        tail: String,
    },
    /// The program wrote no weights.
    #[error("the trainer {} exited without writing weights.safetensors", program.display())]
    NoWeights {
        /// The program.
        program: PathBuf,
    },
    /// The weights it wrote are not the model's (names, shapes, dtypes, finite values).
    #[error("{0}")]
    Weights(fedsilo::Error),
    /// It wrote no readable metrics.json.
    #[error("the trainer {} wrote no metrics.json: {source}", program.display())]
    NoMetrics {
        /// The program.
        program: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file it wrote for a described model is missing or wrong.
    #[error("{file} of {}: {reason}", program.display())]
    Output {
        /// The program.
        program: PathBuf,
        /// The file.
        file: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Its metrics.json is malformed or its loss not finite.
    #[error("metrics.json of {}: {reason}", program.display())]
    Metrics {
        /// The program.
        program: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// How a silo runs its external trainer.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalTrainer {
    /// The program.
    pub program: PathBuf,
    /// Arguments before the work directory.
    pub args: Vec<String>,
    /// Longest a run may take; then it is stopped and the round refused.
    pub timeout: Duration,
    /// Where work directories are made (private, deleted after each run).
    pub workdir: PathBuf,
    /// The silo's name: work directories are named after it and the node's process id.
    pub owner: String,
}

/// What a run produced, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalOutcome {
    /// The trained parameters, in the layout's order.
    pub params: Vec<f32>,
    /// The loss the program reports.
    pub train_loss: f64,
}

/// The plan as the program reads it.
#[derive(Debug, serde::Serialize)]
struct PlanFile<'a> {
    round: u64,
    epochs: u32,
    batch_size: u32,
    learning_rate: f32,
    seed: u64,
    prox_mu: f32,
    inputs: usize,
    hidden: &'a [usize],
}

#[derive(Debug, serde::Deserialize)]
struct MetricsFile {
    train_loss: f64,
}

/// Lines of the program's output quoted in an error.
const LOG_TAIL: usize = 5;
/// Bytes of the program's output read to find them.
const LOG_TAIL_BYTES: u64 = 16 * 1024;
/// Work directories start with this.
const DIR_PREFIX: &str = "fedsilo-trainer-";

impl ExternalTrainer {
    /// Removes work directories an earlier node of this silo left behind (it was killed while
    /// its trainer ran): they hold training data. Only directories of this silo whose node
    /// process is gone are touched. Returns how many were removed.
    pub fn sweep(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.workdir) else {
            return 0;
        };
        // Names are `PREFIX{owner}.{pid}.{random}`: a silo name (a DNS label) has no dot, so
        // one silo's prefix never matches another's.
        let mine = format!("{DIR_PREFIX}{}.", self.owner);
        let gone = |pid: libc::pid_t| {
            // SAFETY: kill with signal 0 only asks whether the process exists.
            let r = unsafe { libc::kill(pid, 0) };
            r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
        };
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name
                    .strip_prefix(&mine)
                    .and_then(|rest| rest.split_once('.'))
                    .and_then(|(p, _)| p.parse::<libc::pid_t>().ok());
                pid.is_some_and(|p| p > 0 && gone(p))
            })
            .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
            .count()
    }

    /// Runs one round's training: `base` for `spec`, on `(x, y)`, as `plan` says.
    pub fn run(
        &self,
        round: u64,
        spec: &ModelSpec,
        base: &[f32],
        plan: &TrainPlan,
        x: &Array2<f32>,
        y: &Array1<f32>,
    ) -> Result<ExternalOutcome, ExternalError> {
        let dir = self.private_dir()?;
        let path = |f: &str| dir.path().join(f);
        let layout = spec.layout();
        let base_set = TensorSet::from_layout(&layout, base);
        base_set
            .write_like(&base_set.values, &path("base.safetensors"), HashMap::new())
            .map_err(|e| input("base.safetensors", e))?;
        write_data(&path("train.safetensors"), x, y)?;
        let plan_file = PlanFile {
            round,
            epochs: plan.epochs,
            batch_size: plan.batch_size,
            learning_rate: plan.learning_rate,
            seed: plan.seed,
            prox_mu: plan.prox_mu,
            inputs: spec.inputs,
            hidden: &spec.hidden,
        };
        let json = serde_json::to_vec_pretty(&plan_file).map_err(|e| input("plan.json", e))?;
        std::fs::write(path("plan.json"), json).map_err(|e| input("plan.json", e))?;
        self.execute(dir.path())?;
        let origin = format!("{} (weights.safetensors)", self.program.display());
        if !path("weights.safetensors").exists() {
            return Err(ExternalError::NoWeights {
                program: self.program.clone(),
            });
        }
        let params = TensorSet::read(&path("weights.safetensors"))
            .and_then(|set| set.to_layout(&layout, &origin))
            .map_err(ExternalError::Weights)?;
        let bytes =
            std::fs::read(path("metrics.json")).map_err(|source| ExternalError::NoMetrics {
                program: self.program.clone(),
                source,
            })?;
        let metrics: MetricsFile =
            serde_json::from_slice(&bytes).map_err(|e| ExternalError::Metrics {
                program: self.program.clone(),
                reason: format!("{e} (expected {{\"train_loss\": number}})"),
            })?;
        if !metrics.train_loss.is_finite() {
            return Err(ExternalError::Metrics {
                program: self.program.clone(),
                reason: format!("train_loss is {}", metrics.train_loss),
            });
        }
        Ok(ExternalOutcome {
            params,
            train_loss: metrics.train_loss,
        })
    }

    /// A fresh work directory, private to this user, removed when dropped (and by
    /// [`ExternalTrainer::sweep`] if the node is killed first).
    pub(crate) fn private_dir(&self) -> Result<tempfile::TempDir, ExternalError> {
        use std::os::unix::fs::PermissionsExt;
        tempfile::Builder::new()
            .prefix(&format!(
                "{DIR_PREFIX}{}.{}.",
                self.owner,
                std::process::id()
            ))
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&self.workdir)
            .map_err(|source| ExternalError::Workdir {
                dir: self.workdir.clone(),
                source,
            })
    }

    /// Runs the program in `dir`, its output kept in `trainer.log`; stops it at the timeout.
    pub(crate) fn execute(&self, dir: &Path) -> Result<(), ExternalError> {
        let log = std::fs::File::create(dir.join("trainer.log"))
            .and_then(|log| Ok((log.try_clone()?, log)))
            .map_err(|e| input("trainer.log", e))?;
        let (err_log, log) = log;
        use std::os::unix::process::CommandExt;
        // Its own process group, so that a timeout stops whatever it started too. The working
        // directory stays the node's, so relative paths in the arguments mean what they say.
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .arg(dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|source| self.start_error(source))?;
        let until = Instant::now() + self.timeout;
        let status = loop {
            match child
                .try_wait()
                .map_err(|source| self.start_error(source))?
            {
                Some(s) => break s,
                None if Instant::now() >= until => {
                    // SAFETY: killpg only sends a signal, to the child's own process group.
                    unsafe {
                        libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ExternalError::Timeout {
                        program: self.program.clone(),
                        after: self.timeout,
                        tail: tail(&dir.join("trainer.log")),
                    });
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        if !status.success() {
            return Err(ExternalError::Failed {
                program: self.program.clone(),
                status,
                tail: tail(&dir.join("trainer.log")),
            });
        }
        Ok(())
    }

    fn start_error(&self, source: std::io::Error) -> ExternalError {
        ExternalError::Start {
            program: self.program.clone(),
            source,
        }
    }
}

/// The last lines of a log, for an error message (at most its last 16 KiB are read).
fn tail(path: &Path) -> String {
    use std::io::{Seek, SeekFrom};
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        f.read_to_end(&mut bytes)
    });
    if read.is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let last = &lines[lines.len().saturating_sub(LOG_TAIL)..];
    if last.is_empty() {
        String::new()
    } else {
        format!("; its output ended with:\n  {}", last.join("\n  "))
    }
}

/// The encoded training split as `x` `[rows, inputs]` and `y` `[rows]`.
fn write_data(path: &Path, x: &Array2<f32>, y: &Array1<f32>) -> Result<(), ExternalError> {
    let set = TensorSet {
        tensors: vec![
            ("x".into(), vec![x.nrows(), x.ncols()]),
            ("y".into(), vec![y.len()]),
        ],
        values: x.iter().chain(y.iter()).copied().collect(),
    };
    set.write_like(&set.values, path, HashMap::new())
        .map_err(|e| input("train.safetensors", e))
}

pub(crate) fn input(file: &'static str, e: impl std::fmt::Display) -> ExternalError {
    ExternalError::Input {
        file,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{train, Mlp, Sgd};
    use fedsilo::compression::Compression;
    use fedsilo::model::initial_params;

    fn trainer(args: &[&str], timeout: Duration) -> ExternalTrainer {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/trainers/mlp_trainer.py");
        ExternalTrainer {
            program: "python3".into(),
            args: std::iter::once(script.display().to_string())
                .chain(args.iter().map(|a| a.to_string()))
                .collect(),
            timeout,
            workdir: std::env::temp_dir(),
            owner: "test".into(),
        }
    }

    fn setup() -> (ModelSpec, Vec<f32>, TrainPlan, Array2<f32>, Array1<f32>) {
        let (x, y) = crate::train::separable(60, 4);
        let spec = ModelSpec {
            inputs: 2,
            hidden: vec![3],
        };
        let plan = TrainPlan {
            epochs: 2,
            batch_size: 60,
            learning_rate: 0.3,
            seed: 1,
            noise: None,
            prox_mu: 0.0,
            compression: Compression::None,
            lora: None,
        };
        (spec.clone(), initial_params(&spec, 2), plan, x, y)
    }

    /// The Python trainer, given the whole split as one batch (so that shuffling cannot
    /// differ), takes the same steps as the built-in one: the file protocol (names, shapes,
    /// [in, out] orientation, the data) is what the node means.
    #[test]
    fn a_python_trainer_takes_the_built_in_trainers_steps() {
        let (spec, base, plan, x, y) = setup();
        let got = trainer(&[], Duration::from_secs(60))
            .run(1, &spec, &base, &plan, &x, &y)
            .unwrap();
        let mut want = base.clone();
        let sgd = Sgd {
            epochs: 2,
            batch_size: 60,
            learning_rate: 0.3,
            prox_mu: 0.0,
            train_from: 0,
            seed: 1,
        };
        let out = train(&Mlp::new(&spec), &mut want, &x, &y, sgd);
        for (i, (a, b)) in got.params.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() < 1e-4,
                "parameter {i}: python {a}, built-in {b}"
            );
        }
        assert!((got.train_loss - out.last_epoch_loss).abs() < 1e-4);
        assert_ne!(got.params, base);
    }

    #[test]
    fn a_misbehaving_trainer_is_refused_with_what_it_did_wrong() {
        let (spec, base, plan, x, y) = setup();
        let run = |mode: &str, timeout: Duration| {
            trainer(&["--fail-with", mode], timeout)
                .run(1, &spec, &base, &plan, &x, &y)
                .unwrap_err()
                .to_string()
        };
        let e = run("wrong-shape", Duration::from_secs(60));
        assert!(e.contains("dense0.weight") && e.contains("shape"), "{e}");
        let e = run("nan", Duration::from_secs(60));
        assert!(e.contains("dense0.bias") && e.contains("NaN"), "{e}");
        let e = run("no-weights", Duration::from_secs(60));
        assert!(e.contains("without writing weights.safetensors"), "{e}");
        let e = run("bad-loss", Duration::from_secs(60));
        // Python writes `Infinity`, which is not JSON: refused as a malformed metrics.json.
        assert!(
            e.contains("metrics.json") && e.contains("train_loss"),
            "{e}"
        );
        let e = run("crash", Duration::from_secs(60));
        assert!(
            e.contains("failed") && e.contains("crashing on purpose"),
            "{e}"
        );
        let started = Instant::now();
        let e = run("sleep", Duration::from_millis(1500));
        assert!(e.contains("did not finish within"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(30));
        let missing = ExternalTrainer {
            program: "/nonexistent/trainer".into(),
            ..trainer(&[], Duration::from_secs(1))
        };
        let e = missing.run(1, &spec, &base, &plan, &x, &y).unwrap_err();
        assert!(matches!(e, ExternalError::Start { .. }), "{e}");
        // Nothing is left behind, and a dead node's directory is swept, a live one's not.
        let work = tempfile::tempdir().unwrap();
        let t = ExternalTrainer {
            workdir: work.path().to_path_buf(),
            ..trainer(&["--fail-with", "nan"], Duration::from_secs(60))
        };
        assert!(t.run(1, &spec, &base, &plan, &x, &y).is_err());
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
        let dead = work.path().join(format!("{DIR_PREFIX}test.999999999.x"));
        let alive = work
            .path()
            .join(format!("{DIR_PREFIX}test.{}.y", std::process::id()));
        // Another silo whose name starts like this one's: never this silo's to sweep.
        let other = work.path().join(format!("{DIR_PREFIX}test-2.999999999.z"));
        for d in [&dead, &alive, &other] {
            std::fs::create_dir(d).unwrap();
        }
        assert_eq!(t.sweep(), 1);
        assert!(!dead.exists() && alive.exists() && other.exists());
    }
}
