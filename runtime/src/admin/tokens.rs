//! Bearer tokens for automation tools (n8n, Make.com, a ticket system), each with a scope.
//!
//! The tokens file holds names, scopes and the SHA-256 of each token, never a token itself:
//!
//! ```toml
//! [[token]]
//! name = "n8n"
//! scope = "approve"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! ```
//!
//! `fedsilo admin token add` makes a token, prints it once and appends its hash;
//! `fedsilo admin token revoke` removes it. The coordinator re-reads the file when it changes,
//! so adding or revoking needs no restart. It fails closed: while the file is missing or does
//! not parse, no token is accepted (the error is logged; operator certificates still work).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::model::Digest;
use crate::{Error, Result};

/// What a caller may do. Each scope includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read status, silos, rounds, versions and the audit tail.
    Read,
    /// Read, and approve or reject a candidate.
    Approve,
    /// Everything: also pause, resume and start rounds (an operator certificate has this).
    Operate,
}

impl Scope {
    /// `read`, `approve`, `operate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Approve => "approve",
            Scope::Operate => "operate",
        }
    }
}

/// One token, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds it (recorded in the audit journal for what it does).
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// SHA-256 of the token, hex.
    pub sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenEntry>,
}

/// Prefix of every token (so that a leaked one is recognisable in logs and scanners).
const PREFIX: &str = "fedsilo_";

/// Parses and checks a tokens file's text; errors name the file and the entry.
fn parse(text: &str, origin: &str) -> Result<Vec<TokenEntry>> {
    let bad = |message: String| Error::Config {
        origin: origin.to_string(),
        message,
    };
    let file: FileText = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let mut names = std::collections::BTreeSet::new();
    for (i, t) in file.tokens.iter().enumerate() {
        crate::identity::validate_name("token name", &t.name)
            .map_err(|e| bad(format!("token[{i}]: {e}")))?;
        if !names.insert(t.name.as_str()) {
            return Err(bad(format!(
                "token[{i}]: the name {:?} is used twice",
                t.name
            )));
        }
        if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "token[{i}] ({}): sha256 must be 64 hex digits (the SHA-256 of the token, as `fedsilo admin token add` writes it)",
                t.name
            )));
        }
    }
    Ok(file.tokens)
}

fn read(path: &Path) -> Result<Vec<TokenEntry>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    parse(&text, &path.display().to_string())
}

fn write(path: &Path, tokens: Vec<TokenEntry>) -> Result<()> {
    let text = toml::to_string(&FileText { tokens }).map_err(|e| Error::Config {
        origin: path.display().to_string(),
        message: format!("cannot encode: {e}"),
    })?;
    let text = format!(
        "# fedsilo admin API tokens: names, scopes and SHA-256 digests (never the tokens).\n# Managed with `fedsilo admin token add|revoke|list`.\n\n{text}"
    );
    let tmp = path.with_extension("toml.tmp");
    crate::certs::write_file(&tmp, &text, true, true)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("replacing", path, e))
}

/// Makes a token for `name` with `scope`, stores its digest in `path` (created, mode 0600,
/// when missing) and returns the token, which is shown this once.
pub fn add(path: &Path, name: &str, scope: Scope) -> Result<String> {
    let mut tokens = if path.exists() { read(path)? } else { vec![] };
    crate::identity::validate_name("token name", name).map_err(|e| Error::Config {
        origin: path.display().to_string(),
        message: e.to_string(),
    })?;
    if tokens.iter().any(|t| t.name == name) {
        return Err(Error::Config {
            origin: path.display().to_string(),
            message: format!("a token named {name:?} exists already (revoke it first)"),
        });
    }
    let secret: [u8; 32] = rand::random();
    let token = format!("{PREFIX}{}", hex::encode(secret));
    tokens.push(TokenEntry {
        name: name.to_string(),
        scope,
        sha256: Digest::of_bytes(token.as_bytes()).hex(),
    });
    write(path, tokens)?;
    Ok(token)
}

/// Removes the token `name` from `path`.
pub fn revoke(path: &Path, name: &str) -> Result<()> {
    let mut tokens = read(path)?;
    let before = tokens.len();
    tokens.retain(|t| t.name != name);
    if tokens.len() == before {
        return Err(Error::Config {
            origin: path.display().to_string(),
            message: format!("no token named {name:?}"),
        });
    }
    write(path, tokens)
}

/// The tokens in `path`.
pub fn list(path: &Path) -> Result<Vec<TokenEntry>> {
    read(path)
}

/// What identifies a version of the file: modification time, length and inode (`add` and
/// `revoke` replace the file, so a change within one mtime tick still changes the inode).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// The tokens file as the API server uses it: re-read when it changes.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    cache: Mutex<(Stamp, Vec<TokenEntry>)>,
}

impl TokenFile {
    /// Opens and checks `path` (an error names what is wrong).
    pub fn open(path: &Path) -> Result<Self> {
        let tokens = read(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            cache: Mutex::new((stamp(path), tokens)),
        })
    }

    /// The name and scope of `token`, if it is a current token.
    pub fn lookup(&self, token: &str) -> Option<(String, Scope)> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path);
        if now != cache.0 || now.is_none() {
            let tokens = read(&self.path).unwrap_or_else(|e| {
                tracing::error!(
                    "admin tokens file refused, no token is accepted until it is fixed: {e}"
                );
                vec![]
            });
            *cache = (now, tokens);
        }
        let digest = Digest::of_bytes(token.as_bytes()).hex();
        cache
            .1
            .iter()
            .find(|t| t.sha256.eq_ignore_ascii_case(&digest))
            .map(|t| (t.name.clone(), t.scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_added_is_found_with_its_scope_and_a_revoked_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let t = add(&path, "n8n", Scope::Approve).unwrap();
        assert!(t.starts_with(PREFIX) && t.len() == PREFIX.len() + 64);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&t), "the token itself is never stored");
        let file = TokenFile::open(&path).unwrap();
        assert_eq!(file.lookup(&t), Some(("n8n".into(), Scope::Approve)));
        assert_eq!(file.lookup("fedsilo_0000"), None);
        assert!(add(&path, "n8n", Scope::Read).is_err(), "names are unique");
        let other = add(&path, "ci", Scope::Read).unwrap();
        // Revoked within the same mtime tick: still seen (the file was replaced).
        revoke(&path, "n8n").unwrap();
        assert_eq!(file.lookup(&t), None, "revoked without a restart");
        assert_eq!(file.lookup(&other), Some(("ci".into(), Scope::Read)));
        assert!(revoke(&path, "n8n").is_err());
        // Fails closed: a broken or deleted file accepts no token.
        std::fs::write(&path, "[[token]]\nname = ").unwrap();
        assert_eq!(file.lookup(&other), None, "unparsable");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.lookup(&other), None, "deleted");
    }

    #[test]
    fn a_typo_in_the_tokens_file_is_named() {
        let e = parse(
            "[[token]]\nname = \"a\"\nscope = \"admin\"\nsha256 = \"00\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("t.toml") && e.contains("admin"), "{e}");
        let e = parse(
            "[[token]]\nname = \"a\"\nscope = \"read\"\nsha256 = \"00\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("token[0] (a): sha256"), "{e}");
        assert!(Scope::Read < Scope::Approve && Scope::Approve < Scope::Operate);
    }
}
