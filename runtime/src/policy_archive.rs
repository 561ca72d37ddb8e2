//! # Every policy the coordinator enforced, kept by its digest
//!
//! The audit journal names a policy only by the SHA-256 of its text (`policy_changed`, and
//! each version's `policy_digest`): enough to prove which text was in force, not enough to
//! show a reviewer what it said. So the coordinator keeps each text it enforces under
//! `<state_dir>/policies/<sha-256>.toml` — content-addressed, written atomically, never
//! rewritten — and the governance report ([`crate::report::governance`]) reads the privacy
//! budget, the gate and the other rules of each version's policy from there.
//!
//! A kept file is trusted only while its text still hashes to its name: a modified one is
//! reported as modified, not read. A digest is 64 hex digits before it becomes a file name, so
//! a tampered journal cannot point the reader outside the directory.
//!
//! The journal also learns of edits made while the coordinator was stopped: at start,
//! [`check_in`] records `policy_changed` when the policy file's digest is not the last one the
//! journal named.

use std::path::{Path, PathBuf};

use fedsilo_policies::Policy;

use crate::audit::{Journal, Record};
use crate::model::checkpoint::write_atomic;
use crate::model::Digest;

/// Errors of the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The digest is not 64 hex digits (it cannot name a kept policy).
    #[error("{0:?} is not a policy digest (64 hex digits)")]
    NotADigest(String),
    /// The kept text no longer hashes to its name.
    #[error("{0}: its text no longer matches its SHA-256 (the file was modified)")]
    Modified(PathBuf),
    /// The kept text does not load as a policy (a policy of another fedsilo version).
    #[error(transparent)]
    Policy(#[from] fedsilo_policies::PolicyError),
    /// Reading or writing failed.
    #[error(transparent)]
    Store(#[from] crate::Error),
}

/// `<dir>/policies`.
pub fn folder(dir: &Path) -> PathBuf {
    dir.join("policies")
}

fn path_of(dir: &Path, digest: &str) -> Result<PathBuf, ArchiveError> {
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ArchiveError::NotADigest(digest.to_string()));
    }
    Ok(folder(dir).join(format!("{}.toml", digest.to_ascii_lowercase())))
}

/// Keeps `policy`'s text (nothing is written when it is kept already).
pub fn keep(dir: &Path, policy: &Policy) -> Result<(), ArchiveError> {
    let path = path_of(dir, &policy.digest)?;
    match std::fs::read(&path) {
        // Kept already, intact; a modified copy is put right from the text in force.
        Ok(b)
            if Digest::of_bytes(&b)
                .hex()
                .eq_ignore_ascii_case(&policy.digest) =>
        {
            return Ok(())
        }
        Ok(_) => tracing::warn!("{}: modified; writing it again", path.display()),
        Err(_) => {}
    }
    let folder = folder(dir);
    std::fs::create_dir_all(&folder).map_err(|e| crate::Error::io("creating", &folder, e))?;
    write_atomic(&path, policy.source.as_bytes())?;
    Ok(())
}

/// The kept policy of `digest`: `None` when it was never kept (a state directory from before
/// the archive).
pub fn read(dir: &Path, digest: &str) -> Result<Option<Policy>, ArchiveError> {
    let path = path_of(dir, digest)?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::Error::io("reading", &path, e).into()),
    };
    if !Digest::of_bytes(text.as_bytes())
        .hex()
        .eq_ignore_ascii_case(digest)
    {
        return Err(ArchiveError::Modified(path));
    }
    Ok(Some(Policy::from_toml_str(
        &text,
        &path.display().to_string(),
    )?))
}

/// At the coordinator's start: keeps `policy` and, when the journal's last word on the policy
/// (`last`) is another digest (or none), records that this one is now in force.
pub fn check_in(
    dir: &Path,
    journal: &Journal,
    last: Option<&str>,
    policy: &Policy,
) -> Result<bool, ArchiveError> {
    keep(dir, policy)?;
    if last == Some(policy.digest.as_str()) {
        return Ok(false);
    }
    journal
        .record_synced(Record::PolicyChanged {
            digest: policy.digest.clone(),
        })
        .map_err(crate::Error::from)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[participation]\nmin_silos = 2\nquorum = 2\n";

    #[test]
    fn a_kept_policy_reads_back_and_a_modified_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = Policy::from_toml_str(TEXT, "policy.toml").unwrap();
        assert!(read(dir.path(), &p.digest).unwrap().is_none(), "never kept");
        keep(dir.path(), &p).unwrap();
        keep(dir.path(), &p).unwrap();
        let back = read(dir.path(), &p.digest).unwrap().unwrap();
        assert_eq!(
            (back.digest, back.source),
            (p.digest.clone(), p.source.clone())
        );
        let file = folder(dir.path()).join(format!("{}.toml", p.digest));
        std::fs::write(&file, TEXT.replace('2', "3")).unwrap();
        assert!(matches!(
            read(dir.path(), &p.digest),
            Err(ArchiveError::Modified(f)) if f == file
        ));
        // Keeping it again puts the genuine text back.
        keep(dir.path(), &p).unwrap();
        assert_eq!(
            read(dir.path(), &p.digest).unwrap().unwrap().source,
            p.source
        );
    }

    #[test]
    fn a_digest_from_a_journal_cannot_name_a_file_outside_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../../etc/passwd", "ab", &"g".repeat(64), ""] {
            assert!(
                matches!(read(dir.path(), bad), Err(ArchiveError::NotADigest(_))),
                "{bad}"
            );
        }
    }

    /// At start the policy is journaled once, and again only when the file was edited while
    /// the coordinator was stopped.
    #[test]
    fn a_start_journals_the_policy_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let creds = crate::identity::signature::tests::credentials("coordinator");
        let path = dir.path().join("audit.jsonl");
        let last = |dir: &std::path::Path| {
            let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
            let v = crate::audit::verify::verify_chain(&text, "audit.jsonl", None);
            assert!(v.problem.is_none(), "{:?}", v.problem);
            crate::audit::History::of(&v.entries).policy
        };
        let p = Policy::from_toml_str(TEXT, "policy.toml").unwrap();
        let (j, _) = Journal::open(&path, &creds, 0).unwrap();
        assert!(check_in(dir.path(), &j, None, &p).unwrap(), "first start");
        drop(j);
        assert_eq!(last(dir.path()).as_deref(), Some(p.digest.as_str()));
        let (j, _) = Journal::open(&path, &creds, 0).unwrap();
        assert!(
            !check_in(dir.path(), &j, Some(&p.digest), &p).unwrap(),
            "unchanged"
        );
        let edited = Policy::from_toml_str(&TEXT.replace('2', "3"), "policy.toml").unwrap();
        assert!(
            check_in(dir.path(), &j, Some(&p.digest), &edited).unwrap(),
            "edited while stopped"
        );
        drop(j);
        assert_eq!(last(dir.path()).as_deref(), Some(edited.digest.as_str()));
        assert!(read(dir.path(), &edited.digest).unwrap().is_some(), "kept");
    }
}
