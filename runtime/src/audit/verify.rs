//! Checking a journal: the chain, the signatures, and that the state directory agrees with it.
//!
//! Entry by entry: `seq` counts up from 1; `prev` is the previous entry's hash; the hash is
//! the SHA-256 of the body; the signature verifies against the certificate of the latest
//! `signer` entry (the first entry must be one), and — given the consortium CA — that
//! certificate was issued by it to a coordinator and was valid when the entry was written.
//! A chain alone cannot show that its last entries were cut off, so the state directory is
//! checked against it as well: every checkpoint file must be committed in the journal with the
//! SHA-256 it has now, and `CURRENT` must name the version the journal made current last.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use super::entry::{unseal, Body, EntryError, GENESIS};
use super::journal::AuditError;
use super::record::Record;
use crate::identity::signature::{self, CaCheck, SignatureError};
use crate::identity::{Identity, Role};
use crate::model::Digest;

/// An entry that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// 1-based line in the file.
    pub line: usize,
    /// The body.
    pub body: Body,
    /// Its hash.
    pub hash: String,
}

/// The first thing wrong, named.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Where: `audit.jsonl:12 (seq 12)`, or a file of the state directory.
    pub at: String,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.what)
    }
}

/// The outcome of checking a journal.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    /// The entries before the first problem, in order.
    pub entries: Vec<Checked>,
    /// The first problem, if any.
    pub problem: Option<Problem>,
    /// A torn last line (a crash while it was written): not counted, not a problem.
    pub torn_tail: bool,
}

/// Checks the chain and signatures of a journal's text. `name` labels lines in problems; with
/// `ca`, every signer's certificate must have been issued by that consortium's CA.
pub fn verify_chain(text: &str, name: &str, ca: Option<&CaCheck>) -> Verification {
    let mut out = Verification::default();
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    out.torn_tail = whole < text.len();
    let mut prev = GENESIS.to_string();
    let mut signer: Option<Vec<u8>> = None;
    for (i, line) in text[..whole].lines().enumerate() {
        let expected_seq = out.entries.len() as u64 + 1;
        let at = format!("{name}:{} (seq {expected_seq})", i + 1);
        match check_line(line, expected_seq, &prev, &mut signer, ca) {
            Ok((body, hash)) => {
                prev = hash.clone();
                out.entries.push(Checked {
                    line: i + 1,
                    body,
                    hash,
                });
            }
            Err(e) => {
                out.problem = Some(Problem {
                    at,
                    what: e.to_string(),
                });
                break;
            }
        }
    }
    out
}

/// Why one journal line does not verify (the `what` of a [`Problem`]).
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line is not a sealed entry.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// The body is not a record.
    #[error("the entry is not a valid record: {0}")]
    NotARecord(serde_json::Error),
    /// Out of sequence.
    #[error("seq {found} where {expected} was expected: an entry before it was deleted, or entries were reordered")]
    Sequence {
        /// The line's `seq`.
        found: u64,
        /// The one expected.
        expected: u64,
    },
    /// The chain is broken.
    #[error("its `prev` is not the previous entry's hash: an entry before it was edited, deleted or moved")]
    Chain,
    /// The hash is not the body's.
    #[error("its hash does not match its content: the entry was edited")]
    Hash,
    /// The signer entry's certificate is not hex.
    #[error("the signer's certificate is not hex")]
    CertificateNotHex,
    /// The signer entry's certificate is not a node's.
    #[error("{0}")]
    Certificate(String),
    /// The signer is not a coordinator.
    #[error("signer `{name}` has role {role}, only a coordinator signs the journal")]
    NotACoordinator {
        /// The signer's name.
        name: String,
        /// Its role.
        role: Role,
    },
    /// No signer entry before this one.
    #[error("no signer entry precedes it: the journal's start was cut off")]
    NoSigner,
    /// The signature is not hex.
    #[error("its signature is not hex")]
    SignatureNotHex,
    /// The certificate or the signature does not check.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

fn check_line(
    line: &str,
    seq: u64,
    prev: &str,
    signer: &mut Option<Vec<u8>>,
    ca: Option<&CaCheck>,
) -> Result<(Body, String), LineError> {
    let sealed = unseal(line)?;
    let body: Body = serde_json::from_str(&sealed.body).map_err(LineError::NotARecord)?;
    if body.seq != seq {
        return Err(LineError::Sequence {
            found: body.seq,
            expected: seq,
        });
    }
    if body.prev != prev {
        return Err(LineError::Chain);
    }
    let hash = Digest::of_bytes(sealed.body.as_bytes()).hex();
    if sealed.hash != hash {
        return Err(LineError::Hash);
    }
    if let Record::Signer { certificate, .. } = &body.record {
        let der = hex::decode(certificate).map_err(|_| LineError::CertificateNotHex)?;
        let id = Identity::from_cert_der(&der, "the signer's certificate")
            .map_err(|e| LineError::Certificate(e.to_string()))?;
        if id.role != Role::Coordinator {
            return Err(LineError::NotACoordinator {
                name: id.name,
                role: id.role,
            });
        }
        if let Some(ca) = ca {
            let when = UNIX_EPOCH + Duration::from_millis(body.time_ms);
            ca.issued(&der, when)?;
        }
        *signer = Some(der);
    }
    let cert = signer.as_deref().ok_or(LineError::NoSigner)?;
    let sig = hex::decode(sealed.sig).map_err(|_| LineError::SignatureNotHex)?;
    signature::verify(cert, sealed.body.as_bytes(), &sig)?;
    Ok((body, hash))
}

/// Checks a state directory: its journal (`audit.jsonl`), then every checkpoint file and
/// `CURRENT` against the journal.
pub fn verify_state(dir: &Path, ca: Option<&CaCheck>) -> Result<Verification, AuditError> {
    let path = dir.join("audit.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|source| AuditError::Io {
        path: path.clone(),
        source,
    })?;
    let mut v = verify_chain(&text, "audit.jsonl", ca);
    if v.problem.is_some() {
        return Ok(v);
    }
    v.problem = check_store(dir, &v.entries);
    Ok(v)
}

/// Every kept candidate file (`models/candidates/`) must be one the journal kept, unchanged.
fn check_candidates(
    dir: &Path,
    kept: &std::collections::BTreeMap<u64, (String, usize)>,
) -> Option<Problem> {
    let rd = std::fs::read_dir(dir.join("models").join("candidates")).ok()?;
    for f in rd.flatten() {
        let name = f.file_name().to_string_lossy().to_string();
        let Some(v) = name
            .strip_prefix('v')
            .and_then(|r| r.strip_suffix(".safetensors"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let at = format!("models/candidates/{name}");
        let Some((sha, line)) = kept.get(&v) else {
            return Some(Problem {
                at,
                what: "no `rejected` or `awaiting_approval` entry in the journal names it".into(),
            });
        };
        match std::fs::read(f.path()) {
            Ok(b) if Digest::of_bytes(&b).hex() == *sha => {}
            _ => {
                return Some(Problem {
                    at,
                    what: format!("its SHA-256 differs from the one recorded at audit.jsonl:{line}: the candidate was modified"),
                })
            }
        }
    }
    None
}

fn check_store(dir: &Path, entries: &[Checked]) -> Option<Problem> {
    let mut committed = std::collections::BTreeMap::new();
    let mut kept = std::collections::BTreeMap::new();
    let (mut current, mut previous) = (None, None);
    // Whether the journal ends with the move that made `current` current: only then can
    // CURRENT lag one step (a crash between the journal and the move) without tampering.
    let mut move_is_last = false;
    for e in entries {
        move_is_last = matches!(
            e.body.record,
            Record::Committed { .. } | Record::RolledBack { .. }
        );
        match &e.body.record {
            Record::Committed {
                version,
                file_sha256,
                ..
            } => {
                committed.insert(*version, (file_sha256.clone(), e.line));
                previous = current;
                current = Some(*version);
            }
            Record::RolledBack { to, .. } => {
                previous = current;
                current = Some(*to);
            }
            Record::AwaitingApproval {
                version,
                file_sha256,
                ..
            }
            | Record::Rejected {
                version: Some(version),
                file_sha256: Some(file_sha256),
                ..
            } => {
                kept.insert(*version, (file_sha256.clone(), e.line));
            }
            _ => {}
        }
    }
    if let Some(p) = check_candidates(dir, &kept) {
        return Some(p);
    }
    let models = dir.join("models");
    let mut on_disk = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&models) {
        for f in rd.flatten() {
            let name = f.file_name().to_string_lossy().to_string();
            let version = name
                .strip_prefix('v')
                .and_then(|r| r.strip_suffix(".safetensors"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(v) = version {
                on_disk.push(v);
            }
        }
    }
    on_disk.sort();
    for v in &on_disk {
        let file = format!("models/v{v}.safetensors");
        let Some((want, line)) = committed.get(v) else {
            return Some(Problem {
                at: file,
                what: "no `committed` entry in the journal names it: the file was added, or its entry was cut off the journal's end".into(),
            });
        };
        let bytes = match std::fs::read(models.join(format!("v{v}.safetensors"))) {
            Ok(b) => b,
            Err(e) => {
                return Some(Problem {
                    at: file,
                    what: format!("unreadable: {e}"),
                })
            }
        };
        if &Digest::of_bytes(&bytes).hex() != want {
            return Some(Problem {
                at: file,
                what: format!("its SHA-256 differs from the one committed at audit.jsonl:{line}: the checkpoint was modified or replaced"),
            });
        }
    }
    // A crash between the journal's entry and the move into models/ leaves the file staged:
    // the coordinator finishes the commit when it starts.
    let staged = |v: u64, sha: &str| {
        std::fs::read(models.join("staging").join(format!("v{v}.safetensors")))
            .is_ok_and(|b| Digest::of_bytes(&b).hex() == sha)
    };
    if let Some((v, (_, line))) = committed
        .iter()
        .find(|(v, (sha, _))| !on_disk.contains(v) && !staged(**v, sha))
    {
        return Some(Problem {
            at: format!("models/v{v}.safetensors"),
            what: format!(
                "committed at audit.jsonl:{line} but missing: the checkpoint was deleted"
            ),
        });
    }
    let named = std::fs::read_to_string(dir.join("CURRENT"))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    // CURRENT one step behind the journal's last commit is a crash before that move only while
    // the committed file is still staged (the coordinator finishes the commit when it starts).
    // A file already in models/ with CURRENT behind is indistinguishable from CURRENT edited
    // back, so it fails, saying both.
    let crash_window = named == previous
        && move_is_last
        && current.is_some_and(|v| committed.get(&v).is_some_and(|(sha, _)| staged(v, sha)));
    if named != current && !crash_window {
        let line = current
            .and_then(|v| committed.get(&v))
            .map_or(String::new(), |(_, l)| format!(" (audit.jsonl:{l})"));
        return Some(Problem {
            at: "CURRENT".into(),
            what: format!(
                "names version {}, the journal made {} current last{line}: CURRENT was edited, \
                 or the coordinator stopped between the journal entry and CURRENT (starting it \
                 finishes the move)",
                named.map_or("none".into(), |v| v.to_string()),
                current.map_or("none".into(), |v| v.to_string())
            ),
        });
    }
    None
}
