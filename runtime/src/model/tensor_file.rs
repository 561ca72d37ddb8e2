//! Sets of named `f32` tensors in safetensors files, flattened in name order — the form of
//! update files that `fedsilo aggregate` combines.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use super::{Layout, TensorSpec};
use crate::{Error, Result};

/// Named tensors flattened into one vector. Invariant: `values.len()` is the sum of the
/// shapes' products; tensors are in ascending name order.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSet {
    /// `(name, shape)` in ascending name order.
    pub tensors: Vec<(String, Vec<usize>)>,
    /// All values, tensor after tensor.
    pub values: Vec<f32>,
}

/// `layout`'s tensors in name order, as files keep them.
fn in_name_order(layout: &Layout) -> Vec<&TensorSpec> {
    let mut order: Vec<&TensorSpec> = layout.tensors.iter().collect();
    order.sort_by(|a, b| a.name.cmp(&b.name));
    order
}

/// A tensor's values as f32 when it is stored as F32, F16 or BF16 (exactly: every half-precision
/// value is an f32 value); `None` for other dtypes.
pub fn as_f32(t: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = t.data();
    match t.dtype() {
        Dtype::F32 => Some(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F16 => Some(
            data.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        Dtype::BF16 => Some(
            data.chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        _ => None,
    }
}

/// A safetensors file's tensors and their names in ascending order; errors (not a safetensors
/// file, no tensor) name `origin`.
fn parse<'a>(bytes: &'a [u8], origin: &str) -> Result<(SafeTensors<'a>, Vec<String>)> {
    let bad = |m: String| Error::Checkpoint {
        origin: origin.to_string(),
        message: m,
    };
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let mut names: Vec<String> = st.names().into_iter().map(|n| n.to_string()).collect();
    names.sort();
    if names.is_empty() {
        return Err(bad("holds no tensors".into()));
    }
    Ok((st, names))
}

impl TensorSet {
    /// Reads a safetensors file; tensors stored as F32, F16 or BF16 are read as f32 (exactly:
    /// every half-precision value is an f32 value). Errors name the file and tensor.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses safetensors bytes read from `origin` (named in errors); F32, F16 and BF16 tensors
    /// are read as f32.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let bad = |m: String| Error::Checkpoint {
            origin: origin.to_string(),
            message: m,
        };
        let (st, names) = parse(bytes, origin)?;
        let mut tensors = Vec::with_capacity(names.len());
        let mut values = Vec::new();
        for name in names {
            let t = st
                .tensor(&name)
                .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            let Some(v) = as_f32(&t) else {
                return Err(bad(format!(
                    "tensor `{name}` is {:?}; F32, F16 and BF16 are supported",
                    t.dtype()
                )));
            };
            values.extend(v);
            tensors.push((name, t.shape().to_vec()));
        }
        Ok(TensorSet { tensors, values })
    }

    /// Checks that `other` (read from `origin`) has the same tensor names and shapes as this
    /// reference set.
    pub fn check_same_layout(&self, other: &TensorSet, origin: &str) -> Result<()> {
        let bad = |m: String| Error::Checkpoint {
            origin: origin.to_string(),
            message: m,
        };
        for (name, shape) in &self.tensors {
            match other.tensors.iter().find(|(n, _)| n == name) {
                None => {
                    return Err(bad(format!(
                        "tensor `{name}` is missing (expected with shape {shape:?})"
                    )))
                }
                Some((_, s)) if s != shape => {
                    return Err(bad(format!(
                        "tensor `{name}` has shape {s:?}, expected {shape:?}"
                    )))
                }
                _ => {}
            }
        }
        if let Some((name, _)) = other
            .tensors
            .iter()
            .find(|(n, _)| !self.tensors.iter().any(|(m, _)| m == n))
        {
            return Err(bad(format!("tensor `{name}` is not expected here")));
        }
        Ok(())
    }

    /// The tensors of `layout` holding `params` (in name order, as files keep them).
    pub fn from_layout(layout: &Layout, params: &[f32]) -> Self {
        let order = in_name_order(layout);
        TensorSet {
            tensors: order
                .iter()
                .map(|t| (t.name.clone(), t.shape.clone()))
                .collect(),
            values: order
                .iter()
                .flat_map(|t| params[t.offset..t.offset + t.len()].iter().copied())
                .collect(),
        }
    }

    /// The parameters in `layout`'s order. The set must hold exactly `layout`'s tensors with
    /// their shapes, and finite values; errors name `origin` and the tensor.
    pub fn to_layout(&self, layout: &Layout, origin: &str) -> Result<Vec<f32>> {
        let expected = TensorSet {
            tensors: in_name_order(layout)
                .iter()
                .map(|t| (t.name.clone(), t.shape.clone()))
                .collect(),
            values: Vec::new(),
        };
        expected.check_same_layout(self, origin)?;
        let mut params = vec![0.0f32; layout.len];
        let mut at = 0;
        for (name, shape) in &self.tensors {
            let len: usize = shape.iter().product();
            let values = &self.values[at..at + len];
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(Error::Checkpoint {
                    origin: origin.to_string(),
                    message: format!("tensor `{name}` holds {} at index {i}", values[i]),
                });
            }
            // check_same_layout found every name in the layout.
            if let Some(t) = layout.tensors.iter().find(|t| t.name == *name) {
                params[t.offset..t.offset + len].copy_from_slice(values);
            }
            at += len;
        }
        Ok(params)
    }

    /// Writes `values` (same layout as `self`) to `path`, with `metadata`.
    pub fn write_like(
        &self,
        values: &[f32],
        path: &Path,
        metadata: HashMap<String, String>,
    ) -> Result<()> {
        let origin = path.display().to_string();
        let bad = |m: String| Error::Checkpoint {
            origin: origin.clone(),
            message: m,
        };
        // The values' bytes as they are in memory on a little-endian machine (no copy).
        let bytes: std::borrow::Cow<'_, [u8]> = if cfg!(target_endian = "little") {
            std::borrow::Cow::Borrowed(bytemuck::cast_slice(values))
        } else {
            std::borrow::Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        let mut views = Vec::with_capacity(self.tensors.len());
        let mut offset = 0;
        for (name, shape) in &self.tensors {
            let len: usize = shape.iter().product();
            let data = bytes.get(offset * 4..(offset + len) * 4).ok_or_else(|| {
                bad(format!(
                    "{} values for tensors of {}",
                    values.len(),
                    offset + len
                ))
            })?;
            let view =
                TensorView::new(Dtype::F32, shape.clone(), data).map_err(|e| bad(e.to_string()))?;
            views.push((name.clone(), view));
            offset += len;
        }
        // Written straight to a temporary file beside it, synced, then renamed into place.
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp"));
        safetensors::serialize_to_file(views, Some(metadata), &tmp)
            .map_err(|e| bad(e.to_string()))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming into place", path, e))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// A safetensors file mapped into memory (`fedsilo aggregate`'s inputs). When its tensors are
/// all F32, lie contiguous in name order and start 4-byte aligned — as safetensors writes them
/// — the values are read in place, with no copy; any other file is decoded once into memory.
///
/// The file must not be truncated while it is mapped (another process doing so ends this one
/// with SIGBUS): it is for files the operator hands to an offline command.
pub struct MappedSet {
    /// `(name, shape)` in ascending name order.
    pub tensors: Vec<(String, Vec<usize>)>,
    values: Values,
}

enum Values {
    Mapped {
        map: memmap2::Mmap,
        range: std::ops::Range<usize>,
    },
    Decoded(Vec<f32>),
}

impl MappedSet {
    /// Maps and checks a safetensors file; errors name the file and tensor.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("opening", path, e))?;
        // SAFETY: the map is read only, and only while the file stays as it is (see the type's
        // documentation).
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io("mapping", path, e))?;
        let origin = path.display().to_string();
        let in_place = Self::contiguous_f32(&map, &origin)?;
        match in_place {
            Some((tensors, range)) => Ok(MappedSet {
                tensors,
                values: Values::Mapped { map, range },
            }),
            None => {
                let set = TensorSet::from_bytes(&map, &origin)?;
                Ok(MappedSet {
                    tensors: set.tensors,
                    values: Values::Decoded(set.values),
                })
            }
        }
    }

    /// The byte range holding every tensor's values in name order, if they can be read in
    /// place; `None` if they must be decoded. Errors: not a safetensors file, no tensors.
    #[allow(clippy::type_complexity)]
    fn contiguous_f32(
        bytes: &[u8],
        origin: &str,
    ) -> Result<Option<(Vec<(String, Vec<usize>)>, std::ops::Range<usize>)>> {
        let bad = |m: String| Error::Checkpoint {
            origin: origin.to_string(),
            message: m,
        };
        let (st, names) = parse(bytes, origin)?;
        let base = bytes.as_ptr() as usize;
        let (mut tensors, mut range): (Vec<_>, Option<std::ops::Range<usize>>) = (vec![], None);
        for name in names {
            let t = st
                .tensor(&name)
                .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            let start = t.data().as_ptr() as usize - base;
            let end = start + t.data().len();
            let next = match &range {
                None => start..end,
                Some(r) if r.end == start => r.start..end,
                Some(_) => return Ok(None),
            };
            if t.dtype() != Dtype::F32 || cfg!(target_endian = "big") {
                return Ok(None);
            }
            range = Some(next);
            tensors.push((name, t.shape().to_vec()));
        }
        let range = range.unwrap_or(0..0);
        if bytemuck::try_cast_slice::<u8, f32>(&bytes[range.clone()]).is_err() {
            return Ok(None);
        }
        Ok(Some((tensors, range)))
    }

    /// The values, tensor after tensor in name order.
    pub fn values(&self) -> &[f32] {
        match &self.values {
            Values::Mapped { map, range } => {
                bytemuck::try_cast_slice(&map[range.clone()]).unwrap_or(&[])
            }
            Values::Decoded(v) => v,
        }
    }

    /// Whether the values are read in place (no copy).
    pub fn in_place(&self) -> bool {
        matches!(self.values, Values::Mapped { .. })
    }

    /// Its names and shapes, as a [`TensorSet`] without values (for layout checks and
    /// [`TensorSet::write_like`]).
    pub fn layout(&self) -> TensorSet {
        TensorSet {
            tensors: self.tensors.clone(),
            values: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_tensors_load_exactly_as_f32_and_other_dtypes_are_named() {
        let wanted = [0.5f32, -2.25, 1024.0, 0.0];
        let f16: Vec<u8> = wanted
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let bf16: Vec<u8> = wanted
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let f32b: Vec<u8> = wanted.iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![
            ("a", TensorView::new(Dtype::F16, vec![4], &f16).unwrap()),
            (
                "b",
                TensorView::new(Dtype::BF16, vec![2, 2], &bf16).unwrap(),
            ),
            ("c", TensorView::new(Dtype::F32, vec![4], &f32b).unwrap()),
        ];
        let bytes = safetensors::serialize(views, None).unwrap();
        let set = TensorSet::from_bytes(&bytes, "mixed.safetensors").unwrap();
        assert_eq!(set.values, [wanted, wanted, wanted].concat());
        assert_eq!(set.tensors[1], ("b".to_string(), vec![2, 2]));
        let ints: Vec<u8> = [1i64, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![("ids", TensorView::new(Dtype::I64, vec![2], &ints).unwrap())];
        let bytes = safetensors::serialize(views, None).unwrap();
        let e = TensorSet::from_bytes(&bytes, "ids.safetensors")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ids.safetensors") && e.contains("I64"), "{e}");
    }

    #[test]
    fn a_mapped_file_reads_in_place_what_a_decoded_one_reads() {
        let dir = tempfile::tempdir().unwrap();
        let set = TensorSet {
            tensors: vec![("a".into(), vec![2, 3]), ("b".into(), vec![4])],
            values: (0..10).map(|i| i as f32 * 0.5 - 1.0).collect(),
        };
        let path = dir.path().join("u.safetensors");
        set.write_like(&set.values, &path, HashMap::new()).unwrap();
        let m = MappedSet::open(&path).unwrap();
        assert!(
            m.in_place(),
            "safetensors writes F32 data contiguous and aligned"
        );
        assert_eq!(m.values(), set.values.as_slice());
        assert_eq!(m.layout().tensors, set.tensors);
        // Half precision is decoded, to the same f32 values.
        let halves: Vec<u8> = set
            .values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let view = TensorView::new(Dtype::F16, vec![10], &halves).unwrap();
        let data = safetensors::serialize([("w", view)], None).unwrap();
        let half_path = dir.path().join("h.safetensors");
        std::fs::write(&half_path, data).unwrap();
        let h = MappedSet::open(&half_path).unwrap();
        assert!(!h.in_place());
        assert_eq!(h.values(), set.values.as_slice());
        // Not a safetensors file: named.
        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"\x05\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
        let e = MappedSet::open(&junk).err().unwrap().to_string();
        assert!(e.contains("junk.safetensors"), "{e}");
    }
}
