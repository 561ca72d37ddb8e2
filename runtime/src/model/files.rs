//! # A described model's pinned files
//!
//! The files a described model's trainer needs besides its trainable tensors — the frozen
//! base, its configuration, the tokenizer — are pinned in its manifest by SHA-256 and checked
//! before any is used: every silo trains on the same bytes, and a swapped or damaged file stops
//! the start with its name and both digests.
//!
//! A silo either has them (installed by its operator in `--model-dir`) or receives them once
//! from the coordinator, whose federation file names the directory it holds them in
//! (`[model] files`). Which it needs is the manifest's to say, so a silo accepts a received
//! file only when its bytes hash to a digest its *own* manifest pins: the coordinator can
//! spare the silo's operator a download, never change what the silo trains on. Files travel
//! in chunks of [`FILE_CHUNK_BYTES`] over the same mutual-TLS session as every request, at
//! most [`MAX_FILE_BYTES`] each, once per silo (a file that arrived is kept).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::manifest::{Asset, Manifest};
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
    #[error("{}: {source} (the manifest's file `{name}`)", path.display())]
    Read {
        /// The asset.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Larger than [`MAX_FILE_BYTES`].
    #[error("the manifest's file `{name}` has {bytes} bytes: at most {max} are sent or received", max = MAX_FILE_BYTES)]
    TooLarge {
        /// The file.
        name: String,
        /// Its size.
        bytes: u64,
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

/// Bytes of a file per chunk sent to a silo.
pub const FILE_CHUNK_BYTES: usize = 4 << 20;
/// The largest pinned file sent or received (a base model of a few billion parameters).
pub const MAX_FILE_BYTES: u64 = 16 << 30;

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

/// Which of `needed` are absent from `dir` (not found): the files a silo asks the
/// coordinator for. A file that is there but is not the one the manifest pins is an error, not
/// a file to replace: someone put it there.
pub fn absent(manifest: &Manifest, dir: &Path, needed: &[&str]) -> Result<Vec<Asset>, AssetError> {
    let mut out = Vec::new();
    for name in needed {
        let asset = manifest.asset(name).ok_or_else(|| {
            AssetError::NotPinned(name.to_string(), manifest.architecture.clone())
        })?;
        match verify(manifest, dir, &[name]) {
            Ok(_) => {}
            Err(AssetError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                out.push(asset.clone())
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The files a coordinator holds to send to silos that lack them (`[model] files`), each
/// checked against the manifest when the coordinator starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFiles {
    /// The directory holding them.
    pub dir: PathBuf,
    /// Every file the manifest pins, with its size in bytes.
    pub files: Vec<(Asset, u64)>,
}

impl ModelFiles {
    /// Checks that `dir` holds every file `manifest` pins, each no larger than
    /// [`MAX_FILE_BYTES`].
    pub fn check(manifest: &Manifest, dir: &Path) -> Result<Self, AssetError> {
        let names: Vec<&str> = manifest.assets.iter().map(|a| a.name.as_str()).collect();
        let paths = verify(manifest, dir, &names)?;
        let mut files = Vec::new();
        for (asset, path) in manifest.assets.iter().zip(paths) {
            let read = |source| AssetError::Read {
                name: asset.name.clone(),
                path: path.clone(),
                source,
            };
            let len = std::fs::metadata(&path).map_err(read)?.len();
            if len > MAX_FILE_BYTES {
                return Err(AssetError::TooLarge {
                    name: asset.name.clone(),
                    bytes: len,
                });
            }
            files.push((asset.clone(), len));
        }
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// The file pinned with `sha256` (hex, any case), with its path and size.
    pub fn find(&self, sha256: &str) -> Option<(&Asset, PathBuf, u64)> {
        self.files
            .iter()
            .find(|(a, _)| a.sha256.eq_ignore_ascii_case(sha256))
            .map(|(a, len)| (a, self.dir.join(&a.name), *len))
    }
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
        assert!(e.contains("the manifest's file `tokenizer.json`"), "{e}");
    }

    #[test]
    fn absent_files_are_asked_for_and_a_wrong_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, b"{}").unwrap();
        let m = manifest(&sha256_file(&p).unwrap());
        let held = ModelFiles::check(&m, dir.path()).unwrap();
        assert_eq!(held.files.len(), 1);
        let (asset, path, len) = held.find(&m.assets[0].sha256.to_uppercase()).unwrap();
        assert_eq!(
            (asset.name.as_str(), path, len),
            ("tokenizer.json", p.clone(), 2)
        );
        assert!(held.find(&"0".repeat(64)).is_none());
        assert!(absent(&m, dir.path(), &["tokenizer.json"])
            .unwrap()
            .is_empty());
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            absent(&m, empty.path(), &["tokenizer.json"]).unwrap(),
            m.assets
        );
        assert!(ModelFiles::check(&m, empty.path()).is_err());
        std::fs::write(&p, b"{ }").unwrap();
        let e = absent(&m, dir.path(), &["tokenizer.json"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the file"), "{e}");
    }
}
