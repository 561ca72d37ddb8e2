//! One journal line: a body, its hash and the signer's signature over it.
//!
//! ```text
//! {"seq":7,"time_ms":1764350000000,"prev":"<hash of entry 6>","record":{"kind":"committed",…},"hash":"<sha-256 of the body>","sig":"<ECDSA over the body>"}
//! ```
//!
//! The body is the line up to `,"hash":` closed by `}`: exactly the bytes that were hashed and
//! signed, so checking never depends on re-serialising anything.

use super::record::Record;
use crate::model::Digest;
use serde::{Deserialize, Serialize};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What is hashed and signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Body {
    /// Position in the journal, from 1.
    pub seq: u64,
    /// Wall-clock time of writing, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Hash of the previous entry ([`GENESIS`] for the first).
    pub prev: String,
    /// The fact recorded.
    pub record: Record,
}

/// Now, in milliseconds since the Unix epoch (the time stamp of entries and decisions).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A line split into its parts (nothing checked yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed<'a> {
    /// The body's exact bytes.
    pub body: String,
    /// The hash the line claims for it.
    pub hash: &'a str,
    /// The signature, hex.
    pub sig: &'a str,
}

/// Why a line cannot be sealed or split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The body to seal is not a JSON object.
    #[error("an entry body is a JSON object")]
    NotAnObject,
    /// The signer failed.
    #[error("cannot sign: {0}")]
    Sign(String),
    /// The line has no `hash` field.
    #[error("no \"hash\" field: not a journal entry")]
    NoHash,
    /// The line has no `sig` field after its hash.
    #[error("no \"sig\" field after \"hash\"")]
    NoSignature,
    /// Something follows the signature.
    #[error("the line does not end after its signature")]
    Trailing,
}

/// The line for `body` with its hash and signature (`sign` signs the body's bytes).
pub fn seal<E: std::fmt::Display>(
    body: &str,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<String, EntryError> {
    let open = body.strip_suffix('}').ok_or(EntryError::NotAnObject)?;
    let sig = sign(body.as_bytes()).map_err(|e| EntryError::Sign(e.to_string()))?;
    Ok(format!(
        "{open},\"hash\":\"{}\",\"sig\":\"{}\"}}",
        Digest::of_bytes(body.as_bytes()).hex(),
        hex::encode(sig)
    ))
}

/// Splits a line into body, hash and signature.
pub fn unseal(line: &str) -> Result<Sealed<'_>, EntryError> {
    let at = line.rfind(",\"hash\":\"").ok_or(EntryError::NoHash)?;
    let tail = &line[at + 9..];
    let (hash, rest) = tail
        .split_once("\",\"sig\":\"")
        .ok_or(EntryError::NoSignature)?;
    let sig = rest.strip_suffix("\"}").ok_or(EntryError::Trailing)?;
    Ok(Sealed {
        body: format!("{}}}", &line[..at]),
        hash,
        sig,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_line_unseals_to_the_bytes_that_were_signed() {
        let body = serde_json::to_string(&Body {
            seq: 1,
            time_ms: 5,
            prev: GENESIS.into(),
            record: Record::PolicyChanged {
                digest: "ab\",\"hash\":\"x".into(),
            },
        })
        .unwrap();
        let mut signed = Vec::new();
        let line = seal(&body, |b| {
            signed = b.to_vec();
            Ok::<_, String>(vec![1, 2, 3])
        })
        .unwrap();
        let s = unseal(&line).unwrap();
        assert_eq!(s.body, body);
        assert_eq!(s.body.as_bytes(), signed.as_slice());
        assert_eq!(s.hash, Digest::of_bytes(body.as_bytes()).hex());
        assert_eq!(s.sig, "010203");
        assert_eq!(unseal("{\"seq\":1}"), Err(EntryError::NoHash));
        assert_eq!(unseal(&line[..line.len() - 2]), Err(EntryError::Trailing));
    }
}
