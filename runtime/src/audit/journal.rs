//! The coordinator's append-only audit journal, `<state_dir>/audit.jsonl`.
//!
//! Every entry is hash-chained to the previous one and signed with the coordinator's
//! certificate key ([`super::entry`]). [`Journal::record_synced`] returns only once the entry —
//! and every entry before it — is on disk, so the coordinator calls it before the action the
//! entry records takes effect (dispatching a round, making a version current); plain
//! [`Journal::record`] writes without waiting for the disk, for facts whose effect comes later
//! (an admitted update counts only once its round commits, which is synced).
//!
//! Opening checks the whole chain and refuses a broken journal, naming the first bad entry; a
//! torn last line (a crash while it was written, before its action took effect) is cut off.
//! Each opening appends a `signer` entry carrying the coordinator's certificate.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::entry::{now_ms, seal, Body, GENESIS};
use super::record::Record;
use super::verify::{verify_chain, Checked};
use crate::model::Digest;
use crate::tls::NodeCredentials;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading or writing failed.
    #[error("audit journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The journal on disk does not verify.
    #[error("audit journal {0}; it is not extended until this is resolved (`fedsilo audit verify` shows the same; restore the file from a backup)")]
    Broken(String),
    /// The coordinator's key could not sign.
    #[error("audit journal: cannot sign: {0}")]
    Sign(String),
    /// The entry could not be sealed.
    #[error("audit journal: {0}")]
    Seal(#[from] super::entry::EntryError),
}

struct Inner {
    file: File,
    next_seq: u64,
    prev: String,
}

/// The journal, shared by the coordinator and its round tasks.
pub struct Journal {
    path: PathBuf,
    signer: Box<dyn rustls::sign::Signer>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).finish()
    }
}

impl Journal {
    /// Opens (or starts) the journal at `path`, verifying it, and appends a `signer` entry for
    /// `creds` (synced). Returns the journal and the entries already in it.
    pub fn open(
        path: &Path,
        creds: &NodeCredentials,
        version: u64,
    ) -> Result<(Self, Vec<Checked>), AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = crate::line_file::read_complete(path).map_err(io)?;
        let name = path
            .file_name()
            .map_or("audit.jsonl".into(), |n| n.to_string_lossy().to_string());
        // Against the consortium CA: a journal re-signed with a self-made certificate is not
        // extended.
        let ca = crate::identity::signature::CaCheck::new(creds.roots());
        let checked = verify_chain(&text, &name, Some(&ca));
        if let Some(p) = checked.problem {
            return Err(AuditError::Broken(p.to_string()));
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let (next_seq, prev) = checked
            .entries
            .last()
            .map_or((1, GENESIS.to_string()), |e| {
                (e.body.seq + 1, e.hash.clone())
            });
        let journal = Journal {
            path: path.to_path_buf(),
            signer: creds
                .signer()
                .map_err(|e| AuditError::Sign(e.to_string()))?,
            inner: Mutex::new(Inner {
                file,
                next_seq,
                prev,
            }),
        };
        journal.record_synced(Record::Signer {
            node: creds.identity().name.clone(),
            certificate: hex::encode(creds.cert_der()),
            version,
        })?;
        Ok((journal, checked.entries))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` (written, not yet synced); returns its sequence number.
    pub fn record(&self, record: Record) -> Result<u64, AuditError> {
        self.append(record, false).map(|(seq, _)| seq)
    }

    /// Appends `record` and syncs the journal: when this returns, the entry and all before it
    /// are on disk.
    pub fn record_synced(&self, record: Record) -> Result<u64, AuditError> {
        self.append(record, true).map(|(seq, _)| seq)
    }

    /// [`Journal::record_synced`], returning the entry's time (ms since the Unix epoch) too:
    /// for state that must agree with what a restart reads back from the journal.
    pub fn record_synced_at(&self, record: Record) -> Result<(u64, u64), AuditError> {
        self.append(record, true)
    }

    fn append(&self, record: Record, sync: bool) -> Result<(u64, u64), AuditError> {
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let seq = inner.next_seq;
        let body = Body {
            seq,
            time_ms: now_ms(),
            prev: inner.prev.clone(),
            record,
        };
        let text = serde_json::to_string(&body).map_err(|e| AuditError::Sign(e.to_string()))?;
        let line = seal(&text, |b| self.signer.sign(b))?;
        inner
            .file
            .write_all(format!("{line}\n").as_bytes())
            .map_err(io)?;
        if sync {
            inner.file.sync_data().map_err(io)?;
        }
        inner.next_seq += 1;
        inner.prev = Digest::of_bytes(text.as_bytes()).hex();
        Ok((seq, body.time_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify::verify_chain;

    fn creds() -> NodeCredentials {
        crate::identity::signature::tests::credentials("coordinator")
    }

    #[test]
    fn entries_chain_verify_and_survive_a_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let c = creds();
        let (j, before) = Journal::open(&path, &c, 0).unwrap();
        assert!(before.is_empty());
        j.record(Record::PolicyChanged {
            digest: "d1".into(),
        })
        .unwrap();
        j.record_synced(Record::Abandoned {
            round: 1,
            reason: "test".into(),
        })
        .unwrap();
        drop(j);
        // A torn last line is cut off at the next opening.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":4,\"time_ms\"").unwrap();
        let (j, before) = Journal::open(&path, &c, 0).unwrap();
        assert_eq!(before.len(), 3);
        j.record_synced(Record::PolicyRefused { error: "x".into() })
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let ca = crate::identity::signature::CaCheck::new(c.roots());
        let v = verify_chain(&text, "audit.jsonl", Some(&ca));
        assert!(v.problem.is_none(), "{:?}", v.problem);
        assert_eq!(v.entries.len(), 5);
        assert_eq!(
            v.entries.iter().map(|e| e.body.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn edits_deletions_reorderings_and_foreign_signers_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let c = creds();
        let (j, _) = Journal::open(&path, &c, 0).unwrap();
        for r in 1..=4 {
            j.record_synced(Record::Abandoned {
                round: r,
                reason: format!("reason {r}"),
            })
            .unwrap();
        }
        drop(j);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let join = |ls: Vec<&str>| ls.join("\n") + "\n";
        let problem = |t: &str, ca: Option<&crate::identity::signature::CaCheck>| {
            verify_chain(t, "audit.jsonl", ca)
                .problem
                .map(|p| p.to_string())
                .unwrap_or_default()
        };
        // Edited content.
        let edited = text.replace("reason 3", "reason 9");
        let p = problem(&edited, None);
        assert!(p.contains("audit.jsonl:4") && p.contains("edited"), "{p}");
        // Edited content with a recomputed hash: the signature no longer fits.
        let l4 = lines[3].replace("reason 3", "reason 9");
        let s = crate::audit::entry::unseal(&l4).unwrap();
        let rehashed = l4.replace(s.hash, &Digest::of_bytes(s.body.as_bytes()).hex());
        let mut ls = lines.clone();
        ls[3] = &rehashed;
        let p = problem(&join(ls), None);
        assert!(
            p.contains("audit.jsonl:4") && p.contains("signature"),
            "{p}"
        );
        // A deleted middle entry.
        let mut ls = lines.clone();
        ls.remove(2);
        let p = problem(&join(ls), None);
        assert!(
            p.contains("audit.jsonl:3") && p.contains("seq 4 where 3"),
            "{p}"
        );
        // Two entries swapped.
        let mut ls = lines.clone();
        ls.swap(2, 3);
        let p = problem(&join(ls), None);
        assert!(
            p.contains("audit.jsonl:3") && p.contains("reordered"),
            "{p}"
        );
        // The first entry (the signer) cut off.
        let p = problem(&join(lines[1..].to_vec()), None);
        assert!(
            p.contains("audit.jsonl:1") && p.contains("seq 2 where 1"),
            "{p}"
        );
        // A journal signed by a coordinator of another consortium.
        let other = creds();
        let p = problem(
            &text,
            Some(&crate::identity::signature::CaCheck::new(other.roots())),
        );
        assert!(
            p.contains("audit.jsonl:1") && p.contains("consortium CA"),
            "{p}"
        );
        // A broken journal is refused at opening, with the same words.
        std::fs::write(&path, &edited).unwrap();
        let e = Journal::open(&path, &c, 0).unwrap_err().to_string();
        assert!(e.contains("audit.jsonl:4") && e.contains("edited"), "{e}");
    }
}
