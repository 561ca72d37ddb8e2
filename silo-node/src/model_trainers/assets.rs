//! The files a described model's trainer needs (the frozen base, its configuration, the
//! tokenizer), checked against the SHA-256 the manifest pins before any is used: every silo
//! trains on the same bytes, and a swapped or damaged file stops the start with its name and
//! both digests.

use std::io::Read;
use std::path::{Path, PathBuf};

use fedsilo::model::manifest::Manifest;
use sha2::{Digest as _, Sha256};

/// An asset that is missing, unreadable or not the one the manifest pins.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// The trainer needs a file the manifest does not pin.
    #[error(
        "the manifest pins no `{0}`: a `{1}` model needs it listed as an [[asset]] with its sha256"
    )]
    NotPinned(String, String),
    /// The file cannot be read.
    #[error("{}: {source} (the manifest's asset `{name}`; is --model-dir right?)", path.display())]
    Read {
        /// The asset.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file's digest differs from the manifest's.
    #[error("{}: sha256 {found}, but the manifest pins {pinned}: this is not the file the federation trains on", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Its digest.
        found: String,
        /// The manifest's.
        pinned: String,
    },
}

/// SHA-256 of a file, hex, read in blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Checks that `dir` holds each of `needed` as the manifest pins it (and that the manifest
/// pins each); returns their paths in `needed`'s order.
pub fn verify(
    manifest: &Manifest,
    dir: &Path,
    needed: &[&str],
) -> Result<Vec<PathBuf>, AssetError> {
    needed
        .iter()
        .map(|name| {
            let asset = manifest.asset(name).ok_or_else(|| {
                AssetError::NotPinned(name.to_string(), manifest.architecture.clone())
            })?;
            let path = dir.join(name);
            let found = sha256_file(&path).map_err(|source| AssetError::Read {
                name: name.to_string(),
                path: path.clone(),
                source,
            })?;
            if !found.eq_ignore_ascii_case(&asset.sha256) {
                return Err(AssetError::Mismatch {
                    path,
                    found,
                    pinned: asset.sha256.to_lowercase(),
                });
            }
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(sha: &str) -> Manifest {
        Manifest::parse(&format!(
            r#"
architecture = "x"
[task]
kind = "binary"
classes = ["a", "b"]
[data]
label = "y"
[[trainable]]
name = "w"
shape = [1]
[[asset]]
name = "tokenizer.json"
sha256 = "{sha}"
"#
        ))
        .unwrap()
    }

    #[test]
    fn a_pinned_file_passes_and_a_changed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, b"{}").unwrap();
        let sha = sha256_file(&p).unwrap();
        assert_eq!(
            sha,
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let m = manifest(&sha);
        assert_eq!(
            verify(&m, dir.path(), &["tokenizer.json"]).unwrap(),
            vec![p.clone()]
        );
        std::fs::write(&p, b"{ }").unwrap();
        let e = verify(&m, dir.path(), &["tokenizer.json"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the file") && e.contains(&sha), "{e}");
        let e = verify(&m, dir.path(), &["config.json"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pins no `config.json`"), "{e}");
        std::fs::remove_file(&p).unwrap();
        let e = verify(&m, dir.path(), &["tokenizer.json"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--model-dir"), "{e}");
    }
}
