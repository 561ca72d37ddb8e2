//! The model registry: metadata of every version, in an embedded crash-safe database
//! (`<state_dir>/registry.redb`, redb).
//!
//! The coordinator is its one writer; `fedsilo models …` open it read-only while the
//! coordinator runs (redb's single-writer mode). The audit journal stays the source of truth:
//! a version the journal committed but the registry lacks (a crash between the two) is filled
//! in from the journal when the coordinator starts ([`Registry::backfill`]).

use std::collections::BTreeMap;
use std::path::Path;

use redb::{
    ConcurrencyMode, Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::audit::verify::Checked;
use crate::audit::{History, Record};
use crate::model::eval::EvalMetrics;
use crate::privacy::budget::RoundSpend;
use crate::{Error, Result};

const VERSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("versions");

pub use crate::audit::history::Status;

/// Everything recorded about one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionMeta {
    /// The version.
    pub version: u64,
    /// The version it was built on.
    pub parent: u64,
    /// The round that made it (0: the initial model).
    pub round: u64,
    /// Where it stands.
    pub status: Status,
    /// Parameter digest (SHA-256 of the f32 values).
    pub digest: String,
    /// SHA-256 of its checkpoint file (its content address).
    pub file_sha256: String,
    /// Participants and their example counts.
    pub participants: Vec<(String, u64)>,
    /// Kernel, clipping and server optimiser.
    pub aggregation: String,
    /// Digest of the policy in force.
    pub policy_digest: String,
    /// Silo-level DP spend, if any.
    pub privacy: Option<RoundSpend>,
    /// Held-out figures per silo.
    pub validation: BTreeMap<String, EvalMetrics>,
    /// The gate's (or the operator's) reason.
    pub reason: String,
    /// When it was made, ms since the Unix epoch.
    pub created_ms: u64,
    /// Who decided its status (`gate`, or an operator's certificate name).
    pub decided_by: String,
    /// The training run whose round made it (a serving coordinator; `None` otherwise, and for
    /// versions recorded before runs existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
}

impl VersionMeta {
    /// Example-weighted held-out score (AUC, or a regression's R²) over the silos that
    /// scored it.
    pub fn mean_score(&self) -> Option<f64> {
        let (mut num, mut den) = (0.0, 0.0);
        for m in self.validation.values() {
            if let Some(a) = m.score() {
                num += a * m.examples as f64;
                den += m.examples as f64;
            }
        }
        (den > 0.0).then(|| num / den)
    }
}

fn db_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Config {
        origin: path.display().to_string(),
        message: format!("model registry: {e}"),
    }
}

/// The registry, open for writing (the coordinator).
pub struct Registry {
    db: Database,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("path", &self.path)
            .finish()
    }
}

impl Registry {
    /// Opens (creating) `<dir>/registry.redb` as its single writer.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("registry.redb");
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .create(&path)
            .map_err(|e| db_err(&path, e))?;
        let txn = db.begin_write().map_err(|e| db_err(&path, e))?;
        txn.open_table(VERSIONS).map_err(|e| db_err(&path, e))?;
        txn.commit().map_err(|e| db_err(&path, e))?;
        Ok(Registry { db, path })
    }

    /// Records (or replaces) a version's metadata, durably.
    pub fn put(&self, meta: &VersionMeta) -> Result<()> {
        let bytes = serde_json::to_vec(meta).map_err(|e| db_err(&self.path, e))?;
        let txn = self.db.begin_write().map_err(|e| db_err(&self.path, e))?;
        {
            let mut t = txn
                .open_table(VERSIONS)
                .map_err(|e| db_err(&self.path, e))?;
            t.insert(meta.version, bytes.as_slice())
                .map_err(|e| db_err(&self.path, e))?;
        }
        txn.commit().map_err(|e| db_err(&self.path, e))
    }

    /// One version's metadata.
    pub fn get(&self, version: u64) -> Result<Option<VersionMeta>> {
        read_one(&self.db, &self.path, version)
    }

    /// Every version, oldest first.
    pub fn list(&self) -> Result<Vec<VersionMeta>> {
        read_all(&self.db, &self.path)
    }

    /// Brings the registry in line with the journal, the source of truth: a version the
    /// journal kept (committed, rejected, awaiting approval) but the registry lacks is filled in,
    /// and a status or checkpoint SHA-256 that differs from the journal's last word is corrected
    /// (a crash came between the journal entry and the registry). Returns what it changed.
    pub fn reconcile(&self, entries: &[Checked], history: &History) -> Result<Vec<String>> {
        let mut kernel: BTreeMap<u64, String> = BTreeMap::new();
        let mut figures: BTreeMap<u64, (BTreeMap<String, EvalMetrics>, String)> = BTreeMap::new();
        let mut written: BTreeMap<u64, u64> = BTreeMap::new();
        for e in entries {
            match &e.body.record {
                Record::Aggregated {
                    round, kernel: k, ..
                } => {
                    kernel.insert(*round, k.clone());
                }
                Record::Validated {
                    round,
                    figures: f,
                    reason,
                    ..
                } => {
                    figures.insert(*round, (f.clone(), reason.clone()));
                }
                Record::Committed { version, .. }
                | Record::AwaitingApproval { version, .. }
                | Record::Rejected {
                    version: Some(version),
                    ..
                } => {
                    written.entry(*version).or_insert(e.body.time_ms);
                }
                _ => {}
            }
        }
        let mut did = Vec::new();
        for (v, j) in &history.versions {
            match self.get(*v)? {
                Some(m) if m.status == j.status && m.file_sha256 == j.file_sha256 => {}
                Some(mut m) => {
                    did.push(format!(
                        "version {v}: status {} corrected to {} from the audit journal",
                        m.status.as_str(),
                        j.status.as_str()
                    ));
                    m.status = j.status;
                    m.file_sha256 = j.file_sha256.clone();
                    self.put(&m)?;
                }
                None => {
                    let (validation, reason) = figures.get(&j.round).cloned().unwrap_or_default();
                    let participants = entries
                        .iter()
                        .find_map(|e| match &e.body.record {
                            Record::Committed {
                                version,
                                participants,
                                ..
                            } if version == v => Some(participants.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    let digest = entries
                        .iter()
                        .find_map(|e| match &e.body.record {
                            Record::Aggregated {
                                round, candidate, ..
                            } if *round == j.round => Some(candidate.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    self.put(&VersionMeta {
                        version: *v,
                        parent: j.parent,
                        round: j.round,
                        status: j.status,
                        digest,
                        file_sha256: j.file_sha256.clone(),
                        participants,
                        aggregation: kernel.get(&j.round).cloned().unwrap_or_default(),
                        policy_digest: String::new(),
                        privacy: None,
                        validation,
                        reason: format!("{reason} (filled in from the audit journal)"),
                        created_ms: written.get(v).copied().unwrap_or(0),
                        decided_by: "gate".into(),
                        run: None,
                    })?;
                    did.push(format!(
                        "version {v} ({}) filled into the model registry from the audit journal",
                        j.status.as_str()
                    ));
                }
            }
        }
        Ok(did)
    }
}

/// The registry, open read-only (while the coordinator may be writing).
pub struct RegistryReader {
    db: ReadOnlyDatabase,
    path: std::path::PathBuf,
}

impl RegistryReader {
    /// Opens `<dir>/registry.redb` read-only.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("registry.redb");
        if !path.exists() {
            return Err(db_err(
                &path,
                "no such file: is this a coordinator's state directory?",
            ));
        }
        let mut builder = Database::builder();
        builder.set_concurrency_mode(ConcurrencyMode::SingleWriter);
        let db = match builder.open_read_only(&path) {
            Ok(db) => db,
            Err(first) => {
                // A registry left by a crash needs repair, which only a writer does: do it if
                // no coordinator holds the file, then read.
                drop(Registry::open(dir).map_err(|_| db_err(&path, &first))?);
                builder
                    .open_read_only(&path)
                    .map_err(|e| db_err(&path, e))?
            }
        };
        Ok(RegistryReader { db, path })
    }

    /// One version's metadata.
    pub fn get(&self, version: u64) -> Result<Option<VersionMeta>> {
        read_one(&self.db, &self.path, version)
    }

    /// Every version, oldest first.
    pub fn list(&self) -> Result<Vec<VersionMeta>> {
        read_all(&self.db, &self.path)
    }
}

fn read_one(db: &impl ReadableDatabase, path: &Path, v: u64) -> Result<Option<VersionMeta>> {
    let txn = db.begin_read().map_err(|e| db_err(path, e))?;
    let t = txn.open_table(VERSIONS).map_err(|e| db_err(path, e))?;
    match t.get(v).map_err(|e| db_err(path, e))? {
        Some(bytes) => serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(|e| db_err(path, format!("version {v}: {e}"))),
        None => Ok(None),
    }
}

fn read_all(db: &impl ReadableDatabase, path: &Path) -> Result<Vec<VersionMeta>> {
    let txn = db.begin_read().map_err(|e| db_err(path, e))?;
    let t = txn.open_table(VERSIONS).map_err(|e| db_err(path, e))?;
    let mut out = Vec::new();
    for row in t.iter().map_err(|e| db_err(path, e))? {
        let (k, v) = row.map_err(|e| db_err(path, e))?;
        out.push(
            serde_json::from_slice(v.value())
                .map_err(|e| db_err(path, format!("version {}: {e}", k.value())))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: u64, status: Status) -> VersionMeta {
        VersionMeta {
            version: v,
            parent: v.saturating_sub(1),
            round: v,
            status,
            digest: format!("d{v}"),
            file_sha256: format!("f{v}"),
            participants: vec![("a".into(), 10)],
            aggregation: "mean".into(),
            policy_digest: "p".into(),
            privacy: None,
            validation: [(
                "a".to_string(),
                EvalMetrics {
                    examples: 10,
                    loss: 0.5,
                    accuracy: Some(0.8),
                    r2: None,
                    mae: None,
                    auc: Some(0.75),
                    personalized: None,
                    business: None,
                },
            )]
            .into_iter()
            .collect(),
            reason: String::new(),
            created_ms: 1,
            decided_by: "gate".into(),
            run: None,
        }
    }

    #[test]
    fn the_journal_corrects_a_registry_a_crash_left_behind() {
        use crate::audit::history::JournaledVersion;
        let dir = tempfile::tempdir().unwrap();
        let w = Registry::open(dir.path()).unwrap();
        // The journal rejected v1 and kept v2 awaiting; the registry saw neither decision.
        w.put(&meta(1, Status::AwaitingApproval)).unwrap();
        let jv = |status, sha: &str| JournaledVersion {
            round: 1,
            parent: 0,
            status,
            file_sha256: sha.into(),
        };
        let history = History {
            versions: [
                (1, jv(Status::Rejected, "f1")),
                (2, jv(Status::AwaitingApproval, "f2")),
            ]
            .into_iter()
            .collect(),
            ..History::default()
        };
        let did = w.reconcile(&[], &history).unwrap();
        assert_eq!(did.len(), 2, "{did:?}");
        assert_eq!(w.get(1).unwrap().unwrap().status, Status::Rejected);
        let v2 = w.get(2).unwrap().unwrap();
        assert_eq!(
            (v2.status, v2.file_sha256.as_str()),
            (Status::AwaitingApproval, "f2")
        );
        assert!(w.reconcile(&[], &history).unwrap().is_empty());
    }

    #[test]
    fn versions_are_kept_and_readable_while_the_writer_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let w = Registry::open(dir.path()).unwrap();
        w.put(&meta(0, Status::Committed)).unwrap();
        w.put(&meta(1, Status::Rejected)).unwrap();
        // A reader in another handle sees the commits while the writer stays open.
        let r = RegistryReader::open(dir.path()).unwrap();
        let all = r.list().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].status, Status::Rejected);
        assert_eq!(r.get(0).unwrap().unwrap().mean_score(), Some(0.75));
        assert!(r.get(7).unwrap().is_none());
        w.put(&meta(2, Status::Committed)).unwrap();
        assert_eq!(r.list().unwrap().len(), 3);
        drop(w);
        // Reopened, everything is still there.
        let w = Registry::open(dir.path()).unwrap();
        assert_eq!(w.list().unwrap().len(), 3);
    }
}
