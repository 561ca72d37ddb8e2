//! The coordinator's state directory: committed checkpoints and the round log.
//!
//! ```text
//! <state_dir>/models/v<N>.safetensors   one per committed version (atomic writes)
//! <state_dir>/models/v<N>.optimizer.safetensors   server optimiser moments (m, v), if any
//! <state_dir>/CURRENT                   the current version number (atomic rename)
//! <state_dir>/rounds.jsonl              one line per committed round (fsynced)
//! <state_dir>/events.jsonl              every event (see `events`)
//! ```
//!
//! Invariant: `CURRENT` names a checkpoint that was completely written and synced before
//! `CURRENT` was replaced, so after a crash the coordinator resumes from the last committed
//! version and loses nothing that was committed.

use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::events::RoundSummary;
use crate::kernels::server_optimizer::OptimizerState;
use crate::model::checkpoint::{write_atomic, Checkpoint};
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
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of version `v`'s checkpoint.
    pub fn model_path(&self, v: u64) -> PathBuf {
        self.dir.join("models").join(format!("v{v}.safetensors"))
    }

    /// Writes version `v` (and the server optimiser's state, if any) and makes it current.
    pub fn commit(
        &self,
        v: u64,
        ckpt: &Checkpoint,
        optimizer: Option<&OptimizerState>,
    ) -> Result<()> {
        ckpt.save(&self.model_path(v))?;
        if let Some(st) = optimizer {
            let bytes = |x: &[f32]| -> Vec<u8> { x.iter().flat_map(|f| f.to_le_bytes()).collect() };
            let (m, vv) = (bytes(&st.m), bytes(&st.v));
            let bad = |e: String| Error::Checkpoint {
                origin: self.optimizer_path(v).display().to_string(),
                message: e,
            };
            let views = vec![
                (
                    "m",
                    TensorView::new(Dtype::F32, vec![st.m.len()], &m)
                        .map_err(|e| bad(e.to_string()))?,
                ),
                (
                    "v",
                    TensorView::new(Dtype::F32, vec![st.v.len()], &vv)
                        .map_err(|e| bad(e.to_string()))?,
                ),
            ];
            let data = safetensors::serialize(views, None).map_err(|e| bad(e.to_string()))?;
            write_atomic(&self.optimizer_path(v), &data)?;
        }
        write_atomic(&self.dir.join("CURRENT"), format!("{v}\n").as_bytes())
    }

    fn optimizer_path(&self, v: u64) -> PathBuf {
        self.dir
            .join("models")
            .join(format!("v{v}.optimizer.safetensors"))
    }

    /// The server optimiser's state saved with version `v`, if there is one.
    pub fn optimizer(&self, v: u64) -> Result<Option<OptimizerState>> {
        let path = self.optimizer_path(v);
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

    /// The current version and its checkpoint, if anything was committed.
    pub fn current(&self) -> Result<Option<(u64, Checkpoint)>> {
        let path = self.dir.join("CURRENT");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", &path, e)),
        };
        let v: u64 = text.trim().parse().map_err(|_| Error::Checkpoint {
            origin: path.display().to_string(),
            message: format!("`{}` is not a version number", text.trim()),
        })?;
        Ok(Some((v, Checkpoint::load(&self.model_path(v))?)))
    }
}
