//! The silo's deployed models, on its own disk.
//!
//! ```text
//! DIR/CURRENT                 the deployed version's directory name, e.g. `v3-1f2e3d4c5b6a`
//! DIR/v3-1f2e3d4c5b6a/
//!     values.f32              the values, little-endian f32
//!     note.json               the signed note: body, signature and signer's certificate
//! ```
//!
//! A version is written into a hidden directory, synced, renamed into place, and only then
//! named in `CURRENT` (written atomically): a silo killed at any instruction keeps the
//! deployment it had or the new one, never half of one. Everything read back is checked again —
//! the note's signature against the silo's consortium CA and coordinator name, the values
//! against the note's digest — so a file changed on disk is refused, not scored with. The last
//! few versions stay on disk, so that a rollback to one of them travels no values.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::note::{DeploymentNote, SignedNote};
use super::DeployError;
use crate::identity::signature::CaCheck;
use crate::model::Digest;

/// Versions kept on disk (the deployed one included).
const KEPT: usize = 3;
/// The file naming the deployed version.
const CURRENT: &str = "CURRENT";

/// A deployed version, checked: its note and its values.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The note, verified.
    pub note: DeploymentNote,
    /// The values, of the note's digest.
    pub values: Arc<Vec<f32>>,
}

/// `note.json`: the signed note, readable.
#[derive(Serialize, Deserialize)]
struct NoteFile {
    /// The note's body (the JSON the coordinator signed).
    note: String,
    /// The signature, hex.
    signature: String,
    /// The signer's certificate, DER, hex.
    certificate: String,
}

/// A silo's deployment directory.
#[derive(Debug, Clone)]
pub struct DeployStore {
    dir: PathBuf,
    ca: CaCheck,
    coordinator: String,
}

impl DeployStore {
    /// The store in `dir`, whose notes must be signed by the coordinator named `coordinator`
    /// under the consortium CA `ca`. Nothing is read or written yet.
    pub fn new(dir: &Path, ca: CaCheck, coordinator: &str) -> Self {
        DeployStore {
            dir: dir.to_path_buf(),
            ca,
            coordinator: coordinator.to_string(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io<'a>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> DeployError + 'a {
        move |source| DeployError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The note of `signed`, if it is a deployment this store takes (see [`SignedNote::verify`]).
    pub fn verify(&self, signed: &SignedNote) -> Result<DeploymentNote, DeployError> {
        signed.verify(&self.ca, &self.coordinator)
    }

    /// The deployed version, checked (`Ok(None)`: nothing deployed yet).
    pub fn current(&self) -> Result<Option<Deployed>, DeployError> {
        let path = self.dir.join(CURRENT);
        let name = match std::fs::read_to_string(&path) {
            Ok(n) => n.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io("reading", &path)(e)),
        };
        if !is_version_dir(&name) {
            return Err(DeployError::Note(format!(
                "{} names `{name}`, not a deployed version",
                path.display()
            )));
        }
        let d = self.read(&self.dir.join(&name))?;
        if dir_name(d.note.version, &d.note.digest) != name {
            return Err(DeployError::Note(format!(
                "{} holds the note of v{}, not {name}",
                self.dir.join(&name).display(),
                d.note.version
            )));
        }
        Ok(Some(d))
    }

    /// The deployed version, or an error saying nothing is deployed.
    pub fn deployed(&self) -> Result<Deployed, DeployError> {
        self.current()?
            .ok_or_else(|| DeployError::NothingDeployed(self.dir.clone()))
    }

    /// A kept version of that digest, checked, if the store holds one.
    pub fn find(&self, version: u64, digest: &Digest) -> Option<Deployed> {
        let path = self.dir.join(dir_name(version, digest));
        path.is_dir()
            .then(|| self.read(&path).ok())
            .flatten()
            .filter(|d| d.note.version == version && d.note.digest == *digest)
    }

    /// Reads and checks the version in `path`.
    fn read(&self, path: &Path) -> Result<Deployed, DeployError> {
        let note_path = path.join("note.json");
        let text = std::fs::read(&note_path).map_err(Self::io("reading", &note_path))?;
        let file: NoteFile = serde_json::from_slice(&text)
            .map_err(|e| DeployError::Note(format!("{}: {e}", note_path.display())))?;
        let unhex = |what: &str, h: &str| {
            hex::decode(h)
                .map_err(|e| DeployError::Note(format!("{}: {what}: {e}", note_path.display())))
        };
        let signed = SignedNote {
            body: file.note.into_bytes(),
            signature: unhex("signature", &file.signature)?,
            certificate: unhex("certificate", &file.certificate)?,
        };
        let note = signed.verify(&self.ca, &self.coordinator)?;
        let values_path = path.join("values.f32");
        let bytes = std::fs::read(&values_path).map_err(Self::io("reading", &values_path))?;
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        check(&note, &values, bytes.len())?;
        Ok(Deployed {
            note,
            values: Arc::new(values),
        })
    }

    /// Verifies `signed` and `values` against each other, keeps them and makes them the
    /// deployed version. Returns the note.
    pub fn install(
        &self,
        signed: &SignedNote,
        values: &[f32],
    ) -> Result<DeploymentNote, DeployError> {
        let note = signed.verify(&self.ca, &self.coordinator)?;
        check(&note, values, values.len() * 4)?;
        std::fs::create_dir_all(&self.dir).map_err(Self::io("creating", &self.dir))?;
        let name = dir_name(note.version, &note.digest);
        let target = self.dir.join(&name);
        if self.find(note.version, &note.digest).is_none() {
            let staging = self.dir.join(format!(".incoming-{name}"));
            if staging.exists() {
                std::fs::remove_dir_all(&staging).map_err(Self::io("removing", &staging))?;
            }
            std::fs::create_dir(&staging).map_err(Self::io("creating", &staging))?;
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            write_synced(&staging.join("values.f32"), &bytes)?;
            let file = NoteFile {
                note: String::from_utf8_lossy(&signed.body).into_owned(),
                signature: hex::encode(&signed.signature),
                certificate: hex::encode(&signed.certificate),
            };
            let json =
                serde_json::to_vec_pretty(&file).map_err(|e| DeployError::Note(e.to_string()))?;
            write_synced(&staging.join("note.json"), &json)?;
            sync_dir(&staging)?;
            if target.exists() {
                // A kept copy that no longer checks out (changed on disk): replaced.
                std::fs::remove_dir_all(&target).map_err(Self::io("removing", &target))?;
            }
            std::fs::rename(&staging, &target).map_err(Self::io("renaming into place", &target))?;
            sync_dir(&self.dir)?;
        }
        let current = self.dir.join(CURRENT);
        crate::model::checkpoint::write_atomic(&current, format!("{name}\n").as_bytes()).map_err(
            |e| DeployError::Io {
                action: "writing",
                path: current.clone(),
                source: std::io::Error::other(e.to_string()),
            },
        )?;
        self.prune(&name);
        Ok(note)
    }

    /// Removes all but the last [`KEPT`] versions (by modification time) and any staging
    /// directory a killed install left; `keep` is never removed.
    fn prune(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut kept: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".incoming-") {
                let _ = std::fs::remove_dir_all(e.path());
            } else if is_version_dir(&name) && name != keep {
                let at = e.metadata().and_then(|m| m.modified());
                kept.push((at.unwrap_or(std::time::UNIX_EPOCH), e.path()));
            }
        }
        kept.sort();
        let surplus = kept.len().saturating_sub(KEPT - 1);
        for (_, path) in kept.into_iter().take(surplus) {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// Whether `values` (of `bytes` bytes on disk) are the note's.
fn check(note: &DeploymentNote, values: &[f32], bytes: usize) -> Result<(), DeployError> {
    let mismatch = |what: String| DeployError::Mismatch {
        version: note.version,
        what,
    };
    if !bytes.is_multiple_of(4) || values.len() as u64 != note.values {
        return Err(mismatch(format!(
            "{bytes} bytes of values, the note says {} values",
            note.values
        )));
    }
    let digest = Digest::of_f32(values);
    if digest != note.digest {
        return Err(mismatch(format!(
            "their digest is {}, the note's {}",
            digest.short(),
            note.digest.short()
        )));
    }
    Ok(())
}

fn dir_name(version: u64, digest: &Digest) -> String {
    format!("v{version}-{}", &digest.hex()[..12])
}

fn is_version_dir(name: &str) -> bool {
    name.strip_prefix('v').is_some_and(|rest| {
        rest.split_once('-').is_some_and(|(v, d)| {
            !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_digit())
                && d.len() == 12
                && d.bytes().all(|b| b.is_ascii_hexdigit())
        })
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), DeployError> {
    let mut f = std::fs::File::create(path).map_err(DeployStore::io("creating", path))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(DeployStore::io("writing", path))
}

fn sync_dir(dir: &Path) -> Result<(), DeployError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(DeployStore::io("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertificateAuthority;
    use crate::identity::signature::tests::kit;
    use crate::identity::Role;
    use crate::model::scaling::Scaling;
    use crate::model::ModelSpec;
    use crate::tls::NodeCredentials;

    fn signed(coordinator: &NodeCredentials, version: u64, values: &[f32]) -> SignedNote {
        let note = DeploymentNote {
            deployment: version,
            version,
            digest: Digest::of_f32(values),
            values: values.len() as u64,
            spec: ModelSpec {
                inputs: 1,
                hidden: vec![],
            }
            .into(),
            scaling: Scaling {
                mean: vec![],
                std: vec![],
            },
            ordered_by: "alice".into(),
            signed_ms: crate::audit::entry::now_ms(),
            target: crate::deploy::Target::All,
        };
        SignedNote::sign(&note, coordinator).unwrap()
    }

    fn setup() -> (tempfile::TempDir, NodeCredentials, DeployStore) {
        let (ca, _) = CertificateAuthority::generate("test", 30).unwrap();
        let coordinator = kit(&ca, "coordinator", Role::Coordinator);
        let dir = tempfile::tempdir().unwrap();
        let store = DeployStore::new(
            &dir.path().join("deployed"),
            CaCheck::new(coordinator.roots()),
            "coordinator",
        );
        (dir, coordinator, store)
    }

    #[test]
    fn a_deployed_version_is_read_back_checked_and_older_ones_are_kept_for_a_while() {
        let (_dir, coordinator, store) = setup();
        assert!(store.current().unwrap().is_none());
        let e = store.deployed().unwrap_err().to_string();
        assert!(e.contains("no model is deployed"), "{e}");
        for v in 1..=5u64 {
            let values = vec![v as f32; 3];
            store
                .install(&signed(&coordinator, v, &values), &values)
                .unwrap();
            let d = store.current().unwrap().unwrap();
            assert_eq!(
                (d.note.version, d.values.as_slice()),
                (v, values.as_slice())
            );
        }
        // The deployed version and the two before it stay; a rollback to v4 reads it back.
        assert!(store.find(4, &Digest::of_f32(&[4.0; 3])).is_some());
        assert!(store.find(3, &Digest::of_f32(&[3.0; 3])).is_some());
        assert!(store.find(1, &Digest::of_f32(&[1.0; 3])).is_none());
        let kept = std::fs::read_dir(store.dir()).unwrap().count();
        assert_eq!(kept, KEPT + 1, "versions plus CURRENT");
    }

    #[test]
    fn values_or_a_note_changed_on_disk_are_refused() {
        let (_dir, coordinator, store) = setup();
        let values = [1.0f32, 2.0, 3.0];
        let note = signed(&coordinator, 2, &values);
        // Values that are not the note's are never kept.
        let e = store
            .install(&note, &[1.0, 2.0, 4.0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match its note"), "{e}");
        assert!(store.current().unwrap().is_none());

        store.install(&note, &values).unwrap();
        let dir = store.dir().join(dir_name(2, &Digest::of_f32(&values)));
        // A flipped bit in the values.
        let mut bytes = std::fs::read(dir.join("values.f32")).unwrap();
        bytes[5] ^= 1;
        std::fs::write(dir.join("values.f32"), &bytes).unwrap();
        let e = store.current().unwrap_err().to_string();
        assert!(e.contains("digest"), "{e}");
        // Installing it again repairs the copy.
        store.install(&note, &values).unwrap();
        assert!(store.current().is_ok());
        // A note whose version was edited.
        let text = std::fs::read_to_string(dir.join("note.json")).unwrap();
        std::fs::write(
            dir.join("note.json"),
            text.replace("\\\"version\\\": 2", "\\\"version\\\": 9"),
        )
        .unwrap();
        let e = store.current().unwrap_err().to_string();
        assert!(e.contains("signature does not match"), "{e}");
        // CURRENT naming something else.
        std::fs::write(store.dir().join(CURRENT), "../../etc\n").unwrap();
        let e = store.current().unwrap_err().to_string();
        assert!(e.contains("not a deployed version"), "{e}");
    }

    #[test]
    fn a_killed_install_leaves_the_previous_deployment() {
        let (_dir, coordinator, store) = setup();
        let values = [1.0f32];
        store
            .install(&signed(&coordinator, 1, &values), &values)
            .unwrap();
        // What a kill between writing and renaming leaves.
        std::fs::create_dir(store.dir().join(".incoming-v2-000000000000")).unwrap();
        assert_eq!(store.current().unwrap().unwrap().note.version, 1);
        let values = [2.0f32];
        store
            .install(&signed(&coordinator, 2, &values), &values)
            .unwrap();
        assert!(!store.dir().join(".incoming-v2-000000000000").exists());
        assert_eq!(store.current().unwrap().unwrap().note.version, 2);
    }
}
