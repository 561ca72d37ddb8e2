//! Checkpoints as safetensors files: the model's named tensors, the agreed feature scaling
//! (`scaling.mean`, `scaling.std`), and string metadata (version, round, spec).
//!
//! Writes are atomic: a temporary file in the same directory, fsync, rename, fsync of the
//! directory. A reader sees the old file or the new one, never half of one.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use super::scaling::Scaling;
use super::{Architecture, Described, Digest, Layout, ModelSpec};
use crate::{Error, Result};

/// A model with everything needed to use it.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Architecture.
    pub spec: Architecture,
    /// Flat parameters, in `spec.layout()` order.
    pub params: Vec<f32>,
    /// Feature scaling the model was trained with.
    pub scaling: Scaling,
    /// Free-form metadata (version, round, ...).
    pub metadata: HashMap<String, String>,
}

/// A tensor to write: name, shape, little-endian bytes.
type Buffer<'a> = (String, Vec<usize>, std::borrow::Cow<'a, [u8]>);
/// Named views of [`Buffer`]s, as safetensors serialises them.
type Views<'a> = Vec<(String, TensorView<'a>)>;

/// `v`'s little-endian bytes: the values' own memory on a little-endian machine.
fn le_bytes(v: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(v))
    } else {
        std::borrow::Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// The MLP's spec from a checkpoint's metadata.
fn mlp_spec(
    metadata: &HashMap<String, String>,
    bad: &dyn Fn(String) -> Error,
) -> Result<ModelSpec> {
    let inputs: usize = metadata
        .get("fedsilo.inputs")
        .ok_or_else(|| bad("metadata `fedsilo.inputs` missing".into()))?
        .parse()
        .map_err(|e| bad(format!("metadata `fedsilo.inputs`: {e}")))?;
    let hidden = metadata
        .get("fedsilo.hidden")
        .map(|h| {
            h.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<usize>())
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|e| bad(format!("metadata `fedsilo.hidden`: {e}")))?
        .unwrap_or_default();
    Ok(ModelSpec { inputs, hidden })
}

/// A described model's layout from a checkpoint's metadata: the order of its tensors from
/// `fedsilo.tensors`, their shapes from the file.
fn described(
    metadata: &HashMap<String, String>,
    digest: &str,
    st: &SafeTensors<'_>,
    bad: &dyn Fn(String) -> Error,
) -> Result<Architecture> {
    let manifest = Digest::from_hex(digest).ok_or_else(|| {
        bad(format!(
            "metadata `fedsilo.manifest` = {digest:?} is not a digest"
        ))
    })?;
    let architecture = metadata
        .get("fedsilo.architecture")
        .ok_or_else(|| bad("metadata `fedsilo.architecture` missing".into()))?
        .clone();
    let names: Vec<String> = serde_json::from_str(
        metadata
            .get("fedsilo.tensors")
            .ok_or_else(|| bad("metadata `fedsilo.tensors` missing".into()))?,
    )
    .map_err(|e| bad(format!("metadata `fedsilo.tensors`: {e}")))?;
    let tensors = names
        .into_iter()
        .map(|n| match st.tensor(&n) {
            Ok(t) => Ok((n, t.shape().to_vec())),
            Err(_) => Err(bad(format!("tensor `{n}` missing"))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Architecture::Described(Described {
        architecture,
        manifest,
        tensors,
    }))
}

impl Checkpoint {
    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let buffers = self.buffers()?;
        let (views, meta) = self.views(&buffers)?;
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::Checkpoint {
            origin: "<memory>".into(),
            message: e.to_string(),
        })
    }

    /// Writes the checkpoint atomically to `path` (temp file, fsync, rename, fsync directory)
    /// without assembling it in memory — the values go from `params` to the file — and returns
    /// the SHA-256 of the file's bytes, read back from the page cache.
    pub fn save_hashed(&self, path: &Path) -> Result<crate::model::Digest> {
        use sha2::{Digest as _, Sha256};
        use std::io::Read;
        let buffers = self.buffers()?;
        let (views, meta) = self.views(&buffers)?;
        let tmp = temp_beside(path);
        safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(|e| Error::Checkpoint {
            origin: tmp.display().to_string(),
            message: e.to_string(),
        })?;
        let mut f = std::fs::File::open(&tmp).map_err(|e| Error::io("reading", &tmp, e))?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| Error::io("reading", &tmp, e))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
        f.sync_all().map_err(|e| Error::io("writing", &tmp, e))?;
        rename_into_place(&tmp, path)?;
        Ok(crate::model::Digest(hash.finalize().into()))
    }

    /// The tensors' bytes: borrowed from the values where memory is little-endian already.
    fn buffers(&self) -> Result<Vec<Buffer<'_>>> {
        let layout = self.spec.layout();
        let bad = |m: String| Error::Checkpoint {
            origin: "<memory>".into(),
            message: m,
        };
        if self.params.len() != layout.len {
            return Err(bad(format!(
                "{} parameters, layout of {} needs {}",
                self.params.len(),
                self.spec.describe(),
                layout.len
            )));
        }
        let mut buffers: Vec<Buffer<'_>> = layout
            .tensors
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.shape.clone(),
                    le_bytes(&self.params[t.offset..t.offset + t.len()]),
                )
            })
            .collect();
        buffers.push((
            "scaling.mean".into(),
            vec![self.scaling.mean.len()],
            le_bytes(&self.scaling.mean),
        ));
        buffers.push((
            "scaling.std".into(),
            vec![self.scaling.std.len()],
            le_bytes(&self.scaling.std),
        ));
        Ok(buffers)
    }

    /// Views of `buffers` and the metadata the file carries.
    fn views<'a>(&self, buffers: &'a [Buffer<'_>]) -> Result<(Views<'a>, HashMap<String, String>)> {
        let bad = |m: String| Error::Checkpoint {
            origin: "<memory>".into(),
            message: m,
        };
        let views = buffers
            .iter()
            .map(|(n, s, b)| {
                TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| bad(format!("tensor {n}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut meta = self.metadata.clone();
        match &self.spec {
            Architecture::Mlp(spec) => {
                meta.insert("fedsilo.inputs".into(), spec.inputs.to_string());
                meta.insert(
                    "fedsilo.hidden".into(),
                    spec.hidden
                        .iter()
                        .map(|h| h.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
            Architecture::Described(d) => {
                meta.insert("fedsilo.architecture".into(), d.architecture.clone());
                meta.insert("fedsilo.manifest".into(), d.manifest.hex());
                // The order of the flat vector (safetensors sorts names).
                let order: Vec<&str> = d.tensors.iter().map(|(n, _)| n.as_str()).collect();
                meta.insert(
                    "fedsilo.tensors".into(),
                    serde_json::to_string(&order).map_err(|e| bad(e.to_string()))?,
                );
            }
        }
        Ok((views, meta))
    }

    /// Parses safetensors bytes; `origin` names the source in errors. Checks that every tensor
    /// of the layout is present with the right shape and dtype and that all values are finite.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let bad = |m: String| Error::Checkpoint {
            origin: origin.to_string(),
            message: m,
        };
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .map_err(|_| bad(format!("tensor `{name}` missing")))?;
            if t.shape() != shape {
                return Err(bad(format!(
                    "tensor `{name}` has shape {:?}, expected {:?}",
                    t.shape(),
                    shape
                )));
            }
            let v = super::tensor_file::as_f32(&t).ok_or_else(|| {
                bad(format!(
                    "tensor `{name}` is {:?}, expected F32, F16 or BF16",
                    t.dtype()
                ))
            })?;
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(bad(format!("tensor `{name}` value {i} is {}", v[i])));
            }
            Ok(v)
        };
        let spec = match metadata.get("fedsilo.manifest") {
            None => Architecture::Mlp(mlp_spec(&metadata, &bad)?),
            Some(digest) => described(&metadata, digest, &st, &bad)?,
        };
        spec.validate().map_err(|e| bad(e.to_string()))?;
        let layout: Layout = spec.layout();
        let mut params = Vec::with_capacity(layout.len);
        for t in &layout.tensors {
            params.extend(read(&t.name, &t.shape)?);
        }
        let n_scaled = st
            .tensor("scaling.mean")
            .map(|t| t.shape().first().copied().unwrap_or(0))
            .map_err(|_| bad("tensor `scaling.mean` missing".into()))?;
        let scaling = Scaling {
            mean: read("scaling.mean", &[n_scaled])?,
            std: read("scaling.std", &[n_scaled])?,
        };
        Ok(Checkpoint {
            spec,
            params,
            scaling,
            metadata,
        })
    }

    /// Writes the checkpoint atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Reads a checkpoint file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }
}

/// The temporary file `path` is written as before it is renamed into place.
fn temp_beside(path: &Path) -> std::path::PathBuf {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    ))
}

/// Renames the synced `tmp` to `path` and syncs the directory.
fn rename_into_place(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|e| Error::io("renaming into place", path, e))?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = temp_beside(path);
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("writing", &tmp, e))?;
    rename_into_place(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let spec = ModelSpec {
            inputs: 3,
            hidden: vec![2],
        };
        let params = crate::model::initial_params(&spec, 1);
        Checkpoint {
            spec: spec.into(),
            params,
            scaling: Scaling {
                mean: vec![1.0, 2.0],
                std: vec![0.5, 3.0],
            },
            metadata: HashMap::from([("fedsilo.version".into(), "3".into())]),
        }
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let c = sample();
        c.save(&p).unwrap();
        let back = Checkpoint::load(&p).unwrap();
        assert_eq!(back.params, c.params);
        assert_eq!(back.scaling, c.scaling);
        assert_eq!(
            back.metadata.get("fedsilo.version").map(|s| s.as_str()),
            Some("3")
        );
    }

    #[test]
    fn a_described_model_keeps_its_order_and_manifest() {
        let spec = Architecture::Described(Described {
            architecture: "fedsilo.text-classifier".into(),
            manifest: Digest::of_bytes(b"manifest"),
            tensors: vec![("z.lora.a".into(), vec![2, 3]), ("a.head".into(), vec![3])],
        });
        let c = Checkpoint {
            params: (0..9).map(|i| i as f32).collect(),
            spec,
            scaling: Scaling {
                mean: vec![],
                std: vec![],
            },
            metadata: HashMap::new(),
        };
        let back = Checkpoint::from_bytes(&c.to_bytes().unwrap(), "x").unwrap();
        assert_eq!(back.spec, c.spec);
        assert_eq!(back.params, c.params);
        let mut bytes = c.to_bytes().unwrap();
        let at = bytes.windows(7).position(|w| w == b"a.head\"").unwrap();
        bytes[at] = b'b'; // the file's tensor renamed: the listed one is missing
        let e = Checkpoint::from_bytes(&bytes, "x").unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let mut bytes = sample().to_bytes().unwrap();
        bytes.truncate(bytes.len() / 2);
        let e = Checkpoint::from_bytes(&bytes, "v3.safetensors")
            .unwrap_err()
            .to_string();
        assert!(e.contains("v3.safetensors"), "{e}");
        let e = Checkpoint::from_bytes(b"garbage", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a safetensors file"), "{e}");
    }

    #[test]
    fn nan_parameters_are_refused() {
        let mut c = sample();
        c.params[0] = f32::NAN;
        let e = Checkpoint::from_bytes(&c.to_bytes().unwrap(), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dense0.weight") && e.contains("NaN"), "{e}");
    }

    #[test]
    fn a_bf16_checkpoint_loads_as_f32() {
        let c = sample();
        let bytes = c.to_bytes().unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let halves: Vec<(String, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(name, t)| {
                let v = crate::model::tensor_file::as_f32(&t).unwrap();
                let b = v
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect();
                (name, t.shape().to_vec(), b)
            })
            .collect();
        let views: Vec<(&str, safetensors::tensor::TensorView)> = halves
            .iter()
            .map(|(n, s, b)| {
                let view = safetensors::tensor::TensorView::new(Dtype::BF16, s.clone(), b);
                (n.as_str(), view.unwrap())
            })
            .collect();
        let half_bytes = safetensors::serialize(views, header.metadata().clone()).unwrap();
        let back = Checkpoint::from_bytes(&half_bytes, "bf16.safetensors").unwrap();
        let rounded: Vec<f32> = c
            .params
            .iter()
            .map(|x| half::bf16::from_f32(*x).to_f32())
            .collect();
        assert_eq!(back.params, rounded);
        assert_ne!(
            back.params, c.params,
            "the sample has values bf16 cannot hold exactly"
        );
    }
}
