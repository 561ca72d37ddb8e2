//! The model's pinned files a silo receives from the coordinator (see
//! [`fedsilo::model::files`]): a silo started with `--manifest` whose `--model-dir` lacks some
//! of the files the manifest pins checks its data at start, says at its schema check which it
//! lacks (by SHA-256), takes them in chunks (`PutFile`), and builds its trainer once the last
//! has arrived — on a thread of its own, so that heartbeats are answered meanwhile.
//!
//! A file is written beside its final name (`.NAME.PID.part`: silos sharing a directory do not
//! write into each other's) and hashed as it arrives; it takes its name only once whole and
//! hashed to the digest the silo's *own* manifest pins (two names pinned with one digest both
//! get it); anything else is discarded with a
//! refusal that names the file and both digests. Only files the silo said it lacks are taken,
//! chunks only in order (a transfer cut off starts again at byte 0), and no file larger than
//! [`MAX_FILE_BYTES`]. A file that arrived stays: a restarted silo finds it in its model
//! directory and asks only for the rest.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use fedsilo::model::files::MAX_FILE_BYTES;
use fedsilo::model::manifest::{Asset, Manifest};
use sha2::{Digest as _, Sha256};

use crate::external::ExternalTrainer;
use crate::model_trainers::{DescribedTrainer, Holdout};

/// Why a chunk of a file was refused.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// A file the silo did not ask for.
    #[error("this silo does not need a file of sha256 {0}: its manifest pins no such file, or the file has arrived")]
    NotNeeded(String),
    /// A chunk out of order.
    #[error("`{name}`: a chunk at byte {offset} after {received} bytes (chunks come in order; a transfer starts again at byte 0)")]
    OutOfOrder {
        /// The file.
        name: String,
        /// The chunk's offset.
        offset: u64,
        /// Bytes received so far.
        received: u64,
    },
    /// Larger than a pinned file may be, or more bytes than announced.
    #[error("`{name}`: {bytes} bytes, more than {most}")]
    TooLarge {
        /// The file.
        name: String,
        /// Its (announced or received) size.
        bytes: u64,
        /// The most allowed.
        most: u64,
    },
    /// The file cannot be written.
    #[error("`{name}`: writing {}: {source}", path.display())]
    Write {
        /// The file.
        name: String,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The whole file is not the one the manifest pins.
    #[error("`{name}`: the bytes received have sha256 {found}, but the manifest pins {pinned}; they were discarded")]
    Mismatch {
        /// The file.
        name: String,
        /// The received bytes' digest.
        found: String,
        /// The manifest's.
        pinned: String,
    },
}

/// The file being received.
struct Incoming {
    sha256: String,
    name: String,
    total: u64,
    received: u64,
    part: PathBuf,
    file: std::fs::File,
    hash: Sha256,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("name", &self.name)
            .field("received", &self.received)
            .field("total", &self.total)
            .finish()
    }
}

/// The files still to come, and the one arriving (see the module documentation).
#[derive(Debug)]
pub struct FileIntake {
    dir: PathBuf,
    /// SHA-256 (lowercase hex) → the file names pinned with it.
    missing: BTreeMap<String, Vec<String>>,
    current: Option<Incoming>,
}

impl FileIntake {
    /// Expects `absent` in `dir`.
    pub fn new(dir: &Path, absent: &[Asset]) -> Self {
        FileIntake {
            dir: dir.to_path_buf(),
            missing: absent.iter().fold(BTreeMap::new(), |mut m, a| {
                m.entry(a.sha256.to_lowercase())
                    .or_insert_with(Vec::new)
                    .push(a.name.clone());
                m
            }),
            current: None,
        }
    }

    /// The SHA-256 of each file still to come.
    pub fn missing(&self) -> Vec<String> {
        self.missing.keys().cloned().collect()
    }

    /// The file being received and the bytes of it held (a transfer that stopped goes on
    /// from there).
    pub fn partial(&self) -> Option<(String, u64)> {
        self.current
            .as_ref()
            .map(|c| (c.sha256.clone(), c.received))
    }

    /// Whether every file has arrived.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// Drops the file being received, if any, and its part file.
    fn abandon(&mut self) {
        if let Some(c) = self.current.take() {
            drop(c.file);
            let _ = std::fs::remove_file(&c.part);
        }
    }

    /// Takes a chunk of the file pinned with `sha256` (`total` bytes; these from byte
    /// `offset`); the bytes of it received so far.
    pub fn put(
        &mut self,
        sha256: &str,
        offset: u64,
        total: u64,
        bytes: &[u8],
    ) -> Result<u64, IntakeError> {
        let sha = sha256.to_lowercase();
        let Some(name) = self.missing.get(&sha).and_then(|n| n.first()).cloned() else {
            return Err(IntakeError::NotNeeded(sha));
        };
        if total > MAX_FILE_BYTES {
            return Err(IntakeError::TooLarge {
                name,
                bytes: total,
                most: MAX_FILE_BYTES,
            });
        }
        if offset == 0 {
            self.abandon();
            let part = self
                .dir
                .join(format!(".{name}.{}.part", std::process::id()));
            let file = std::fs::File::create(&part).map_err(|source| IntakeError::Write {
                name: name.clone(),
                path: part.clone(),
                source,
            })?;
            self.current = Some(Incoming {
                sha256: sha.clone(),
                name: name.clone(),
                total,
                received: 0,
                part,
                file,
                hash: Sha256::new(),
            });
        }
        let in_order = self
            .current
            .as_ref()
            .is_some_and(|c| c.sha256 == sha && c.total == total && c.received == offset);
        if !in_order {
            let received = self.current.as_ref().map_or(0, |c| c.received);
            return Err(IntakeError::OutOfOrder {
                name,
                offset,
                received,
            });
        }
        let end = offset + bytes.len() as u64;
        if end > total {
            self.abandon();
            return Err(IntakeError::TooLarge {
                name,
                bytes: end,
                most: total,
            });
        }
        let Some(c) = self.current.as_mut() else {
            return Err(IntakeError::NotNeeded(sha));
        };
        if let Err(source) = c.file.write_all(bytes) {
            let path = c.part.clone();
            self.abandon();
            return Err(IntakeError::Write { name, path, source });
        }
        c.hash.update(bytes);
        c.received = end;
        if end == total {
            self.finish(&sha)?;
        }
        Ok(end)
    }

    /// The file being received is whole: it takes its name if its digest is the pinned one.
    fn finish(&mut self, sha: &str) -> Result<(), IntakeError> {
        let Some(c) = self.current.take() else {
            return Ok(());
        };
        let write = |source| IntakeError::Write {
            name: c.name.clone(),
            path: c.part.clone(),
            source,
        };
        let found = hex::encode(c.hash.clone().finalize());
        let kept = if found != sha {
            Err(IntakeError::Mismatch {
                name: c.name.clone(),
                found,
                pinned: sha.to_string(),
            })
        } else {
            // Every name pinned with this digest gets the bytes, each through a part file of
            // its own and a rename: a name never holds half a file.
            let names = self.missing.get(sha).cloned().unwrap_or_default();
            c.file
                .sync_all()
                .and_then(|()| {
                    for other in names.iter().skip(1) {
                        let part = self
                            .dir
                            .join(format!(".{other}.{}.part", std::process::id()));
                        std::fs::copy(&c.part, &part)?;
                        std::fs::rename(&part, self.dir.join(other))?;
                    }
                    std::fs::rename(&c.part, self.dir.join(&c.name))
                })
                .map_err(write)
        };
        if kept.is_err() {
            let _ = std::fs::remove_file(&c.part);
        } else {
            self.missing.remove(sha);
        }
        kept
    }
}

impl Drop for FileIntake {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// A described model whose files have not all arrived: what its trainer is built from once
/// they have, and the trainer when it is.
pub struct AwaitingFiles {
    /// The silo's manifest.
    pub manifest: Manifest,
    /// Where its files go.
    pub model_dir: PathBuf,
    /// The silo's CSV.
    pub data: PathBuf,
    /// Its held-out rows.
    pub holdout: Holdout,
    /// The silo's own program, if it trains with one.
    pub external: Option<ExternalTrainer>,
    /// Training rows found when the data was checked at start.
    pub rows: usize,
    /// The files not in `model_dir` at start.
    pub absent: Vec<Asset>,
    /// Why its training rows cannot train the task, found when the data was checked at start
    /// (then no file is asked for: the silo is left out first).
    pub unusable: Option<String>,
    /// The trainer, once built, or why it could not be.
    pub built: OnceLock<Result<Arc<dyn DescribedTrainer>, String>>,
    building: AtomicBool,
}

impl std::fmt::Debug for AwaitingFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwaitingFiles")
            .field("manifest", &self.manifest.digest)
            .field("absent", &self.absent)
            .field("built", &self.built.get().map(|b| b.is_ok()))
            .finish()
    }
}

impl AwaitingFiles {
    /// A model waiting for `absent` (see the fields).
    pub fn new(
        manifest: Manifest,
        model_dir: PathBuf,
        data: PathBuf,
        holdout: Holdout,
        external: Option<ExternalTrainer>,
        rows: usize,
        absent: Vec<Asset>,
    ) -> Self {
        AwaitingFiles {
            manifest,
            model_dir,
            data,
            holdout,
            external,
            rows,
            absent,
            unusable: None,
            built: OnceLock::new(),
            building: AtomicBool::new(false),
        }
    }

    /// The same, with why its training rows cannot train the task.
    pub fn with_unusable(mut self, why: Option<String>) -> Self {
        self.unusable = why;
        self
    }

    /// Builds the trainer on a thread of its own, once (the files have all arrived); the
    /// result lands in `built`.
    pub fn build(self: &Arc<Self>, silo: &str) {
        if self.building.swap(true, Ordering::SeqCst) {
            return;
        }
        let (me, silo) = (self.clone(), silo.to_string());
        std::thread::spawn(move || {
            // A panic while loading must not leave the silo "loading" for ever.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::model_trainers::load(
                    me.manifest.clone(),
                    &me.model_dir,
                    &me.data,
                    &me.holdout,
                    me.external.clone(),
                )
                .map(Arc::<dyn DescribedTrainer>::from)
                .map_err(|e| e.to_string())
            }))
            .unwrap_or_else(|_| Err("loading the model panicked".to_string()));
            match &result {
                Ok(t) => println!(
                    "silo {silo}: the model's files arrived and were checked; model loaded ({} training rows)",
                    t.train_rows()
                ),
                Err(e) => eprintln!("silo {silo}: the model's files arrived, but the model cannot be loaded: {e}"),
            }
            let _ = me.built.set(result);
        });
    }

    /// Whether its trainer is being built (its files are in, the result not yet).
    pub fn loading(&self) -> bool {
        self.building.load(Ordering::SeqCst) && self.built.get().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo::model::files::sha256_file;

    fn asset(name: &str, bytes: &[u8]) -> Asset {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, bytes).unwrap();
        Asset {
            name: name.into(),
            sha256: sha256_file(&p).unwrap().to_uppercase(),
        }
    }

    #[test]
    fn a_file_arrives_in_chunks_and_takes_its_name_once_checked() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"the frozen base, in three chunks";
        let (tok, base) = (
            asset("tokenizer.json", b"{}"),
            asset("model.safetensors", body),
        );
        let mut intake = FileIntake::new(dir.path(), &[tok.clone(), base.clone()]);
        assert_eq!(intake.missing().len(), 2);
        let total = body.len() as u64;
        assert_eq!(intake.put(&base.sha256, 0, total, &body[..10]).unwrap(), 10);
        assert_eq!(intake.partial(), Some((base.sha256.to_lowercase(), 10)));
        assert!(
            !dir.path().join("model.safetensors").exists(),
            "not before it is whole"
        );
        assert_eq!(
            intake.put(&base.sha256, 10, total, &body[10..20]).unwrap(),
            20
        );
        assert_eq!(
            intake.put(&base.sha256, 20, total, &body[20..]).unwrap(),
            total
        );
        assert_eq!(
            std::fs::read(dir.path().join("model.safetensors")).unwrap(),
            body
        );
        assert_eq!(intake.missing(), vec![tok.sha256.to_lowercase()]);
        assert_eq!(intake.partial(), None);
        // Arrived: not taken again.
        let e = intake.put(&base.sha256, 0, total, body).unwrap_err();
        assert!(matches!(e, IntakeError::NotNeeded(_)), "{e}");
        assert_eq!(intake.put(&tok.sha256, 0, 2, b"{}").unwrap(), 2);
        assert!(intake.is_complete());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no part file left: {names:?}");
    }

    #[test]
    fn wrong_bytes_unknown_files_and_chunks_out_of_order_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tok = asset("tokenizer.json", b"{\"vocab\": 1}");
        let mut intake = FileIntake::new(dir.path(), std::slice::from_ref(&tok));
        // Bytes that are not the pinned file: discarded, still missing.
        let e = intake.put(&tok.sha256, 0, 4, b"evil").unwrap_err();
        assert!(matches!(e, IntakeError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains("discarded"), "{e}");
        assert!(!dir.path().join("tokenizer.json").exists());
        assert!(!dir.path().join(".tokenizer.json.part").exists());
        assert_eq!(intake.missing().len(), 1);
        // A file no manifest pins.
        let e = intake.put(&"ab".repeat(32), 0, 1, b"x").unwrap_err();
        assert!(matches!(e, IntakeError::NotNeeded(_)), "{e}");
        // Out of order, and more than announced.
        let e = intake.put(&tok.sha256, 5, 12, b"x").unwrap_err();
        assert!(matches!(e, IntakeError::OutOfOrder { .. }), "{e}");
        intake.put(&tok.sha256, 0, 12, b"{\"vo").unwrap();
        let e = intake
            .put(&tok.sha256, 4, 12, b"cab\": 1} and more")
            .unwrap_err();
        assert!(matches!(e, IntakeError::TooLarge { .. }), "{e}");
        let e = intake
            .put(&tok.sha256, 0, MAX_FILE_BYTES + 1, b"")
            .unwrap_err();
        assert!(matches!(e, IntakeError::TooLarge { .. }), "{e}");
        // A transfer that starts again at 0 completes.
        let body = b"{\"vocab\": 1}";
        intake.put(&tok.sha256, 0, 12, &body[..3]).unwrap();
        intake.put(&tok.sha256, 0, 12, &body[..6]).unwrap();
        intake.put(&tok.sha256, 6, 12, &body[6..]).unwrap();
        assert!(intake.is_complete());
        assert_eq!(
            std::fs::read(dir.path().join("tokenizer.json")).unwrap(),
            body
        );
    }

    #[test]
    fn two_names_pinned_with_one_digest_both_get_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = asset("vocab.txt", b"same bytes");
        let b = Asset {
            name: "vocab-copy.txt".into(),
            ..a.clone()
        };
        let mut intake = FileIntake::new(dir.path(), &[a.clone(), b]);
        assert_eq!(intake.missing().len(), 1, "one transfer for one digest");
        intake.put(&a.sha256, 0, 10, b"same bytes").unwrap();
        assert!(intake.is_complete());
        for name in ["vocab.txt", "vocab-copy.txt"] {
            assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), b"same bytes");
        }
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 2, "no part file left");
    }
}
