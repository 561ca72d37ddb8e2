//! Operators' decisions: approve or reject a candidate, roll back to an earlier version.
//!
//! `fedsilo models approve|reject|rollback` writes a decision into the coordinator's inbox,
//! `<state_dir>/decisions/`, signed with the operator's certificate key (the same sealed-line
//! format as the audit journal). The coordinator reads the inbox at its next step, whether it
//! was running or starts later: it applies a decision only if the signature verifies against a
//! certificate the consortium CA issued to role `operator`, records it in the audit journal
//! with the operator's name, and moves the file to `decisions/done/` (or `decisions/refused/`,
//! with the reason in the journal).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::audit::entry::{now_ms, seal, unseal, EntryError};
use crate::identity::signature::{self, CaCheck, SignatureError};
use crate::identity::{Identity, Role};
use crate::model::Digest;
use crate::tls::NodeCredentials;

/// What the operator decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The candidate awaiting approval becomes current.
    Approve,
    /// The candidate awaiting approval is rejected; the current version stays.
    Reject,
    /// An earlier committed version becomes current again.
    Rollback,
}

impl Kind {
    /// `approve`, `reject`, `rollback`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Approve => "approve",
            Kind::Reject => "reject",
            Kind::Rollback => "rollback",
        }
    }
}

/// A decision, as signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// What.
    pub kind: Kind,
    /// Of which version.
    pub version: u64,
    /// Why (free text, recorded).
    pub reason: String,
    /// The operator's name (from their certificate).
    pub operator: String,
    /// Their certificate, DER, hex.
    pub certificate: String,
    /// When, ms since the Unix epoch.
    pub time_ms: u64,
    /// Approve/reject: the SHA-256 of the candidate the operator reviewed (the decision does
    /// not apply to another file under the same number).
    #[serde(default)]
    pub expect_sha256: Option<String>,
    /// Rollback: the version the operator saw as current (the decision does not apply if
    /// another one is current by then).
    #[serde(default)]
    pub expect_current: Option<u64>,
}

/// Why a decision cannot be submitted, or is refused on reading.
#[derive(Debug, thiserror::Error)]
pub enum DecisionError {
    /// The kit that would sign is not an operator's.
    #[error("the kit is for `{name}`, role {role}: decisions are signed with an operator's kit (`fedsilo certs issue --operator NAME`)")]
    NotAnOperatorKit {
        /// Whose kit.
        name: String,
        /// Its role.
        role: Role,
    },
    /// The kit's key cannot sign.
    #[error("{0}")]
    Key(String),
    /// Writing the inbox failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file cannot be read.
    #[error("unreadable: {0}")]
    Unreadable(std::io::Error),
    /// The file is not a sealed line.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// Its hash is not its content's.
    #[error("its content does not match its hash: the file was edited")]
    Edited,
    /// Its body is not a decision.
    #[error("not a decision: {0}")]
    NotADecision(serde_json::Error),
    /// The certificate is not hex.
    #[error("its certificate is not hex")]
    CertificateNotHex,
    /// The certificate is not a node's.
    #[error("{0}")]
    Certificate(String),
    /// Signed by someone who is not an operator.
    #[error("signed by `{name}`, role {role}: only an operator decides")]
    NotAnOperator {
        /// The signer.
        name: String,
        /// Its role.
        role: Role,
    },
    /// Names another operator than the signer.
    #[error("names operator `{named}` but is signed by `{signer}`")]
    OtherOperator {
        /// The operator the decision names.
        named: String,
        /// Who signed it.
        signer: String,
    },
    /// Dated more than five minutes ahead.
    #[error("it is dated in the future")]
    Future,
    /// The signature is not hex.
    #[error("its signature is not hex")]
    SignatureNotHex,
    /// The certificate or the signature does not check.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// The inbox of a state directory.
pub fn inbox(state_dir: &Path) -> PathBuf {
    state_dir.join("decisions")
}

/// Signs `kind` of `version` with the operator's `creds` and drops it into the inbox.
pub fn submit(
    state_dir: &Path,
    creds: &NodeCredentials,
    kind: Kind,
    version: u64,
    reason: &str,
    expect: (Option<String>, Option<u64>),
) -> Result<PathBuf, DecisionError> {
    if creds.identity().role != Role::Operator {
        return Err(DecisionError::NotAnOperatorKit {
            name: creds.identity().name.clone(),
            role: creds.identity().role,
        });
    }
    let d = Decision {
        kind,
        version,
        reason: reason.to_string(),
        operator: creds.identity().name.clone(),
        certificate: hex::encode(creds.cert_der()),
        time_ms: now_ms(),
        expect_sha256: expect.0,
        expect_current: expect.1,
    };
    let body = serde_json::to_string(&d).map_err(DecisionError::NotADecision)?;
    let signer = creds
        .signer()
        .map_err(|e| DecisionError::Key(e.to_string()))?;
    let line = seal(&body, |b| signer.sign(b))?;
    let dir = inbox(state_dir);
    std::fs::create_dir_all(&dir).map_err(|source| DecisionError::Write {
        path: dir.clone(),
        source,
    })?;
    let name = format!(
        "{}-{}-v{version}-{}.json",
        d.time_ms,
        kind.as_str(),
        d.operator
    );
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, format!("{line}\n"))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|source| DecisionError::Write {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// The decisions waiting in the inbox, oldest first.
pub fn pending(state_dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(inbox(state_dir))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Reads a decision and checks it: intact, signed by the certificate it carries, which the
/// consortium CA issued to an operator of that name and which is valid now. Returns it with
/// its hash (the SHA-256 of its signed body), by which it is applied at most once.
pub fn read_verified(path: &Path, ca: &CaCheck) -> Result<(Decision, String), DecisionError> {
    let text = std::fs::read_to_string(path).map_err(DecisionError::Unreadable)?;
    let sealed = unseal(text.trim_end())?;
    if sealed.hash != Digest::of_bytes(sealed.body.as_bytes()).hex() {
        return Err(DecisionError::Edited);
    }
    let d: Decision = serde_json::from_str(&sealed.body).map_err(DecisionError::NotADecision)?;
    let der = hex::decode(&d.certificate).map_err(|_| DecisionError::CertificateNotHex)?;
    let id = Identity::from_cert_der(&der, "the decision's certificate")
        .map_err(|e| DecisionError::Certificate(e.to_string()))?;
    if id.role != Role::Operator {
        return Err(DecisionError::NotAnOperator {
            name: id.name,
            role: id.role,
        });
    }
    if id.name != d.operator {
        return Err(DecisionError::OtherOperator {
            named: d.operator,
            signer: id.name,
        });
    }
    if d.time_ms > now_ms() + 5 * 60 * 1000 {
        return Err(DecisionError::Future);
    }
    // Valid now, not merely at the time the signer claims.
    ca.issued(&der, SystemTime::now())?;
    let sig = hex::decode(sealed.sig).map_err(|_| DecisionError::SignatureNotHex)?;
    signature::verify(&der, sealed.body.as_bytes(), &sig)?;
    Ok((d, sealed.hash.to_string()))
}

/// Moves a handled decision out of the inbox, to `done/` or `refused/`.
pub fn settle(path: &Path, applied: bool) {
    let Some(dir) = path.parent() else { return };
    let to = dir.join(if applied { "done" } else { "refused" });
    if std::fs::create_dir_all(&to).is_ok() {
        if let Some(name) = path.file_name() {
            let _ = std::fs::rename(path, to.join(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertificateAuthority;
    use crate::identity::signature::tests::kit;

    #[test]
    fn a_signed_decision_verifies_and_forgeries_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = CertificateAuthority::generate("c", 30).unwrap();
        let alice = kit(&ca, "alice", Role::Operator);
        let check = CaCheck::new(alice.roots());
        let p = submit(
            dir.path(),
            &alice,
            Kind::Approve,
            7,
            "looks good",
            (None, None),
        )
        .unwrap();
        assert_eq!(pending(dir.path()), vec![p.clone()]);
        let (d, hash) = read_verified(&p, &check).unwrap();
        assert_eq!(hash.len(), 64);
        assert_eq!(
            (d.kind, d.version, d.operator.as_str()),
            (Kind::Approve, 7, "alice")
        );
        // Edited after signing.
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("\"version\":7", "\"version\":8")).unwrap();
        assert!(matches!(
            read_verified(&p, &check),
            Err(DecisionError::Edited)
        ));
        // A silo's kit cannot decide, not even by writing the file itself.
        let silo = kit(&ca, "bank-a", Role::Silo);
        assert!(matches!(
            submit(dir.path(), &silo, Kind::Rollback, 1, "", (None, None)),
            Err(DecisionError::NotAnOperatorKit { .. })
        ));
        // An operator of another consortium is refused.
        let (other, _) = CertificateAuthority::generate("x", 30).unwrap();
        let mallory = kit(&other, "alice", Role::Operator);
        let q = submit(dir.path(), &mallory, Kind::Rollback, 1, "", (None, None)).unwrap();
        assert!(matches!(
            read_verified(&q, &check),
            Err(DecisionError::Signature(SignatureError::NotIssued(_)))
        ));
        settle(&q, false);
        assert!(
            dir.path()
                .join("decisions/refused")
                .read_dir()
                .unwrap()
                .count()
                == 1
        );
    }
}
