//! The coordinator's state directory: committed checkpoints and the round log.
//!
//! ```text
//! <state_dir>/models/v<N>.safetensors   one per committed version (atomic writes)
//! <state_dir>/models/v<N>.optimizer.safetensors   server optimiser moments (m, v), if any
//! <state_dir>/models/staging/            a version being committed (see `stage`/`publish`)
//! <state_dir>/CURRENT                   the current version number (atomic rename)
//! <state_dir>/rounds.jsonl              one line per committed round (fsynced)
//! <state_dir>/events.jsonl              every event (see `events`)
//! ```
//!
//! A commit is staged (checkpoint written and synced in `models/staging/`), recorded in the
//! audit journal (synced), then published (moved into `models/`, `CURRENT` replaced
//! atomically). Invariant: `CURRENT` names a checkpoint that was completely written and synced;
//! after a crash, [`ModelStore::reconcile`] finishes a commit the journal recorded and drops a
//! staged one it did not, so the coordinator resumes from the last committed version and loses
//! nothing that was committed.

use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensorError;
use safetensors::SafeTensors;

use crate::events::RoundSummary;
use crate::kernels::server_optimizer::OptimizerState;
use crate::model::checkpoint::{write_atomic, Checkpoint};
use crate::model::Digest;
use crate::{Error, Result};

/// A state directory.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
}

impl ModelStore {
    /// Opens (creating) a state directory.
    pub fn open(dir: &Path) -> Result<Self> {
        let models = dir.join("models");
        std::fs::create_dir_all(&models).map_err(|e| Error::io("creating", &models, e))?;
        Ok(Self::at(dir))
    }

    /// A state directory to read, as it is (nothing is created).
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of version `v`'s checkpoint.
    pub fn model_path(&self, v: u64) -> PathBuf {
        self.dir.join("models").join(format!("v{v}.safetensors"))
    }

    /// Writes version `v` (and the server optimiser's state, if any) into `models/staging/`,
    /// synced, and returns the SHA-256 of the checkpoint file. Nothing is current yet: the
    /// caller records the commit in the audit journal, then calls [`ModelStore::publish`].
    pub fn stage(
        &self,
        v: u64,
        ckpt: &Checkpoint,
        optimizer: Option<&OptimizerState>,
    ) -> Result<String> {
        let staging = self.dir.join("models").join("staging");
        std::fs::create_dir_all(&staging).map_err(|e| Error::io("creating", &staging, e))?;
        let sha = ckpt.save_hashed(&staging.join(format!("v{v}.safetensors")))?;
        if let Some(st) = optimizer {
            let data = optimizer_bytes(st).map_err(|e| Error::Checkpoint {
                origin: self.optimizer_path(v).display().to_string(),
                message: e.to_string(),
            })?;
            write_atomic(&staging.join(format!("v{v}.optimizer.safetensors")), &data)?;
        }
        Ok(sha.hex())
    }

    /// Moves staged version `v` into `models/` and makes it current (`CURRENT`, atomically).
    pub fn publish(&self, v: u64) -> Result<()> {
        let staging = self.dir.join("models").join("staging");
        for (from, to) in [
            (format!("v{v}.safetensors"), self.model_path(v)),
            (
                format!("v{v}.optimizer.safetensors"),
                self.optimizer_path(v),
            ),
        ] {
            let from = staging.join(from);
            if from.exists() {
                std::fs::rename(&from, &to).map_err(|e| Error::io("moving into place", &to, e))?;
            }
        }
        if let Ok(d) = std::fs::File::open(self.dir.join("models")) {
            let _ = d.sync_all();
        }
        write_atomic(&self.dir.join("CURRENT"), format!("{v}\n").as_bytes())
    }

    /// Moves staged version `v` (a candidate that failed the gate) to `models/candidates/`,
    /// where it is kept but never current.
    pub fn keep_candidate(&self, v: u64) -> Result<()> {
        let to = self.candidate_path(v);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        }
        let from = self
            .dir
            .join("models")
            .join("staging")
            .join(format!("v{v}.safetensors"));
        std::fs::rename(&from, &to).map_err(|e| Error::io("moving into place", &to, e))?;
        let opt = from.with_file_name(format!("v{v}.optimizer.safetensors"));
        if opt.exists() {
            let dest = to.with_file_name(format!("v{v}.optimizer.safetensors"));
            std::fs::rename(&opt, &dest).map_err(|e| Error::io("moving into place", &dest, e))?;
        }
        Ok(())
    }

    /// The server optimiser's state kept with candidate `v`, if any.
    pub fn candidate_optimizer(&self, v: u64) -> Result<Option<OptimizerState>> {
        let path = self
            .dir
            .join("models")
            .join("candidates")
            .join(format!("v{v}.optimizer.safetensors"));
        read_optimizer(&path)
    }

    /// Path of a kept (rejected or awaiting) candidate's checkpoint.
    pub fn candidate_path(&self, v: u64) -> PathBuf {
        self.dir
            .join("models")
            .join("candidates")
            .join(format!("v{v}.safetensors"))
    }

    /// After a crash: makes `committed` — the last version the audit journal committed, with
    /// its file's SHA-256 — current if the crash came between the journal entry and
    /// `CURRENT`, removes staged versions the journal never committed, and kept candidates
    /// (`models/candidates/`) the journal never named (`journaled`: every version it kept) — a
    /// crash between moving a candidate there and journalling it. Returns what it did.
    pub fn reconcile(
        &self,
        committed: Option<(u64, &str)>,
        journaled: &std::collections::BTreeSet<u64>,
    ) -> Result<Vec<String>> {
        let mut did = Vec::new();
        let staging = self.dir.join("models").join("staging");
        if let Some((v, sha)) = committed {
            let current = self.current_version()?;
            if current != Some(v) {
                let staged = staging.join(format!("v{v}.safetensors"));
                let file = if staged.exists() {
                    staged
                } else {
                    self.model_path(v)
                };
                let bytes = std::fs::read(&file).map_err(|e| Error::io("reading", &file, e))?;
                if Digest::of_bytes(&bytes).hex() != sha {
                    return Err(Error::Checkpoint {
                        origin: file.display().to_string(),
                        message: "the audit journal committed this version with another SHA-256: the file was modified".into(),
                    });
                }
                self.publish(v)?;
                did.push(format!("finished committing version {v} (the coordinator stopped between the journal entry and CURRENT)"));
            }
        }
        if let Ok(rd) = std::fs::read_dir(&staging) {
            for f in rd.flatten() {
                let _ = std::fs::remove_file(f.path());
                did.push(format!(
                    "removed {}, staged but never committed",
                    f.path().display()
                ));
            }
        }
        let candidates = self.dir.join("models").join("candidates");
        if let Ok(rd) = std::fs::read_dir(&candidates) {
            for f in rd.flatten() {
                let name = f.file_name().to_string_lossy().to_string();
                // vN.safetensors and vN.optimizer.safetensors.
                let v = name
                    .strip_prefix('v')
                    .and_then(|r| r.split('.').next())
                    .and_then(|n| n.parse::<u64>().ok());
                if v.is_some_and(|v| !journaled.contains(&v)) {
                    let _ = std::fs::remove_file(f.path());
                    did.push(format!(
                        "removed {}, kept as a candidate but never journaled",
                        f.path().display()
                    ));
                }
            }
        }
        Ok(did)
    }

    fn optimizer_path(&self, v: u64) -> PathBuf {
        self.dir
            .join("models")
            .join(format!("v{v}.optimizer.safetensors"))
    }

    /// The server optimiser's state saved with version `v`, if there is one.
    pub fn optimizer(&self, v: u64) -> Result<Option<OptimizerState>> {
        read_optimizer(&self.optimizer_path(v))
    }

    /// Appends a round to `rounds.jsonl` and syncs it.
    pub fn append_round(&self, summary: &RoundSummary) -> Result<()> {
        let path = self.dir.join("rounds.jsonl");
        let line = serde_json::to_string(summary).map_err(|e| Error::Config {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        writeln!(f, "{line}")
            .and_then(|_| f.sync_data())
            .map_err(|e| Error::io("appending to", &path, e))
    }

    /// The version `CURRENT` names, if any.
    pub fn current_version(&self) -> Result<Option<u64>> {
        let path = self.dir.join("CURRENT");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", &path, e)),
        };
        text.trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::Checkpoint {
                origin: path.display().to_string(),
                message: format!("`{}` is not a version number", text.trim()),
            })
    }

    /// Reads committed version `v`'s checkpoint and checks that it is the file the audit journal
    /// committed: its SHA-256 must be `sha256`. Every load of a committed version (resume,
    /// rollback, the LoRA base) goes through here, so a modified file stops the load with an
    /// error naming the file and both digests.
    pub fn load_committed(&self, v: u64, sha256: &str) -> Result<Checkpoint> {
        let path = self.model_path(v);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
        let actual = Digest::of_bytes(&bytes).hex();
        if actual != sha256 {
            return Err(Error::Checkpoint {
                origin: path.display().to_string(),
                message: format!(
                    "its SHA-256 is {actual}, but the audit journal committed version {v} with \
                     {sha256}: the file was modified or replaced (`fedsilo audit verify` shows \
                     the journal; restore the file from a backup)"
                ),
            });
        }
        Checkpoint::from_bytes(&bytes, &path.display().to_string())
    }
}

/// Reads an optimiser-state file (`None` if there is none).
fn read_optimizer(path: &Path) -> Result<Option<OptimizerState>> {
    let path = path.to_path_buf();
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", &path, e)),
    };
    let bad = |m: String| Error::Checkpoint {
        origin: path.display().to_string(),
        message: m,
    };
    let st = SafeTensors::deserialize(&data).map_err(|e| bad(e.to_string()))?;
    let read = |name: &str| -> Result<Vec<f32>> {
        let t = st
            .tensor(name)
            .map_err(|_| bad(format!("tensor `{name}` missing")))?;
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    Ok(Some(OptimizerState {
        m: read("m")?,
        v: read("v")?,
    }))
}

fn optimizer_bytes(st: &OptimizerState) -> std::result::Result<Vec<u8>, SafeTensorError> {
    let bytes = |x: &[f32]| -> Vec<u8> { x.iter().flat_map(|f| f.to_le_bytes()).collect() };
    let (m, vv) = (bytes(&st.m), bytes(&st.v));
    let views = vec![
        ("m", TensorView::new(Dtype::F32, vec![st.m.len()], &m)?),
        ("v", TensorView::new(Dtype::F32, vec![st.v.len()], &vv)?),
    ];
    safetensors::serialize(views, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSpec;
    use crate::protocol::Scaling;

    fn ckpt(x: f32) -> Checkpoint {
        Checkpoint {
            spec: ModelSpec {
                inputs: 1,
                hidden: vec![],
            }
            .into(),
            params: vec![x, 0.0],
            scaling: Scaling {
                mean: vec![0.0],
                std: vec![1.0],
            },
            metadata: Default::default(),
        }
    }

    fn opt() -> OptimizerState {
        OptimizerState {
            m: vec![0.5, 0.5],
            v: vec![1.0, 1.0],
        }
    }

    #[test]
    fn a_crash_between_journal_and_current_is_finished_and_unjournaled_stages_removed() {
        let dir = tempfile::tempdir().unwrap();
        let s = ModelStore::open(dir.path()).unwrap();
        let sha1 = s.stage(1, &ckpt(1.0), None).unwrap();
        s.publish(1).unwrap();
        assert_eq!(s.current_version().unwrap(), Some(1));
        // Version 2 staged and journaled, then the crash: CURRENT still says 1.
        let sha2 = s.stage(2, &ckpt(2.0), None).unwrap();
        // Version 3 staged, never journaled.
        s.stage(3, &ckpt(3.0), None).unwrap();
        // Version 4 moved to the candidates, the crash before its journal entry; version 5
        // kept there and journaled.
        s.stage(4, &ckpt(4.0), Some(&opt())).unwrap();
        s.keep_candidate(4).unwrap();
        s.stage(5, &ckpt(5.0), None).unwrap();
        s.keep_candidate(5).unwrap();
        let journaled = [1, 2, 5].into_iter().collect();
        let did = s.reconcile(Some((2, &sha2)), &journaled).unwrap();
        assert_eq!(did.len(), 4, "{did:?}");
        assert!(!s.candidate_path(4).exists());
        assert!(!dir
            .path()
            .join("models/candidates/v4.optimizer.safetensors")
            .exists());
        assert!(s.candidate_path(5).exists(), "a journaled candidate stays");
        assert_eq!(s.current_version().unwrap(), Some(2));
        assert_eq!(s.load_committed(2, &sha2).unwrap().params[0], 2.0);
        assert!(!dir.path().join("models/staging/v3.safetensors").exists());
        // Nothing to do the second time; a wrong SHA-256 is refused.
        assert!(s
            .reconcile(Some((2, &sha2)), &journaled)
            .unwrap()
            .is_empty());
        let e = s
            .reconcile(Some((1, &sha2)), &journaled)
            .unwrap_err()
            .to_string();
        assert!(e.contains("v1.safetensors") && e.contains("SHA-256"), "{e}");
        let _ = sha1;
    }

    #[test]
    fn a_committed_version_loads_only_as_the_journal_committed_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = ModelStore::open(dir.path()).unwrap();
        let sha = s.stage(1, &ckpt(1.0), None).unwrap();
        s.publish(1).unwrap();
        assert_eq!(s.load_committed(1, &sha).unwrap().params[0], 1.0);
        // One byte changed in the tensor data (the file's last byte).
        let path = s.model_path(1);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let e = s.load_committed(1, &sha).unwrap_err().to_string();
        let actual = Digest::of_bytes(&bytes).hex();
        assert!(
            e.contains("v1.safetensors") && e.contains(&sha) && e.contains(&actual),
            "{e}"
        );
    }
}
