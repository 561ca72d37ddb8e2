//! # Which model a federation trains, as the coordinator and the wire see it
//!
//! Either the built-in tabular MLP, known by its [`ModelSpec`], or a model described by a
//! [`Manifest`](super::manifest::Manifest), known only by the manifest's digest and the names
//! and shapes of its trainable tensors. Everything above the trainers — rounds, kernels,
//! secure aggregation, DP, compression, checkpoints, registry and audit — needs no more than
//! [`Architecture::layout`] and [`Architecture::describe`]; only a silo's trainer knows what
//! the tensors mean.

use serde::{Deserialize, Serialize};

use super::{Digest, Layout, ModelError, ModelSpec, TensorSpec, MAX_PARAMETERS};

/// A model described by a manifest: what travels of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Described {
    /// The manifest's `architecture`, e.g. `fedsilo.text-classifier`.
    pub architecture: String,
    /// SHA-256 of the manifest file: every silo must hold the same one.
    pub manifest: Digest,
    /// The trainable tensors, name and shape, in order.
    pub tensors: Vec<(String, Vec<usize>)>,
}

impl Described {
    /// The trainable tensors as a flat layout.
    pub fn layout(&self) -> Layout {
        let mut offset = 0;
        let tensors = self
            .tensors
            .iter()
            .map(|(name, shape)| {
                let t = TensorSpec {
                    name: name.clone(),
                    shape: shape.clone(),
                    offset,
                };
                offset += t.len();
                t
            })
            .collect();
        Layout {
            tensors,
            len: offset,
        }
    }
}

/// The model a federation trains. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// The built-in tabular MLP.
    Mlp(ModelSpec),
    /// A model described by a manifest.
    Described(Described),
}

impl From<Described> for Architecture {
    fn from(d: Described) -> Self {
        Architecture::Described(d)
    }
}

impl From<ModelSpec> for Architecture {
    fn from(spec: ModelSpec) -> Self {
        Architecture::Mlp(spec)
    }
}

impl Architecture {
    /// The flat layout of what trains and travels.
    pub fn layout(&self) -> Layout {
        match self {
            Architecture::Mlp(spec) => spec.layout(),
            Architecture::Described(d) => d.layout(),
        }
    }

    /// A short description: `mlp 68-32-1`, or `fedsilo.text-classifier (manifest 1a2b3c4d…,
    /// 6,146 trainable)`.
    pub fn describe(&self) -> String {
        match self {
            Architecture::Mlp(spec) => spec.describe(),
            Architecture::Described(d) => format!(
                "{} (manifest {}, {} trainable values)",
                d.architecture,
                d.manifest.short(),
                d.layout().len
            ),
        }
    }

    /// Checks sizes before anything is allocated (the MLP's widths; a manifest's total).
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            Architecture::Mlp(spec) => spec.validate(),
            Architecture::Described(d) => {
                let total = d.tensors.iter().try_fold(0usize, |acc, (_, s)| {
                    s.iter()
                        .try_fold(1usize, |a, x| a.checked_mul(*x))
                        .and_then(|n| acc.checked_add(n))
                });
                match total {
                    Some(n) if n <= MAX_PARAMETERS => Ok(()),
                    _ => Err(ModelError::TooLarge(d.architecture.clone())),
                }
            }
        }
    }

    /// The built-in MLP's spec, if this is the MLP.
    pub fn mlp(&self) -> Option<&ModelSpec> {
        match self {
            Architecture::Mlp(spec) => Some(spec),
            Architecture::Described(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_described_layout_is_contiguous_in_manifest_order() {
        let a = Architecture::Described(Described {
            architecture: "x".into(),
            manifest: Digest::of_bytes(b"m"),
            tensors: vec![("b".into(), vec![2, 3]), ("a".into(), vec![4])],
        });
        let l = a.layout();
        assert_eq!(l.len, 10);
        assert_eq!(l.tensors[0].name, "b");
        assert_eq!(l.tensors[1].offset, 6);
        assert!(a.mlp().is_none());
        assert!(a.describe().contains("10 trainable values"));
        let huge = Architecture::Described(Described {
            architecture: "x".into(),
            manifest: Digest::of_bytes(b"m"),
            tensors: vec![("w".into(), vec![usize::MAX, 2])],
        });
        assert!(huge.validate().is_err());
    }
}
