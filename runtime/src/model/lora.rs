//! LoRA adapters (Hu et al. 2021) for the MLP's dense layers: their layout in a flat vector,
//! their initialisation, and the merge into a full model.
//!
//! A layer's frozen weight W `[in, out]` is used as W + (α/r)·A·B, with A `[in, r]` and
//! B `[r, out]`: r·(in + out) values instead of in·out. A starts small and random and B at
//! zero, so fresh adapters leave the base model exactly as it is. The merge is plain loops in
//! a fixed order, so the coordinator and every silo compute the same bits.

use super::ModelError;
use serde::{Deserialize, Serialize};

use super::ModelSpec;

/// Checkpoint metadata holding a LoRA version's adapters.
pub const ADAPTERS_KEY: &str = "fedsilo.lora.adapters";

/// Adapters as checkpoint metadata: hex of their little-endian f32 bytes.
pub fn adapters_to_hex(adapters: &[f32]) -> String {
    hex::encode(
        adapters
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
}

/// The adapters [`adapters_to_hex`] wrote (`None`: not hex, or not whole f32 values).
pub fn adapters_from_hex(text: &str) -> Option<Vec<f32>> {
    let bytes = hex::decode(text).ok()?;
    (bytes.len() % 4 == 0).then(|| {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

/// The largest rank accepted (far above any useful one; it bounds the arithmetic).
pub const MAX_RANK: usize = 4096;

/// Which layers get adapters, and how large (`[plan.lora]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraPlan {
    /// r: the adapters' rank (≥ 1).
    pub rank: usize,
    /// The dense layers adapted, by index (0 = the first).
    pub layers: Vec<usize>,
    /// α: the adapters' product is scaled by α/r (default: r, a scale of 1).
    #[serde(default)]
    pub alpha: Option<f32>,
}

/// One adapted layer: where its weight sits in the model, and its A and B in the adapters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptedLayer {
    /// Offset of the layer's weight in the model.
    pub weight: usize,
    /// Its input width.
    pub fan_in: usize,
    /// Its output width.
    pub fan_out: usize,
    /// Offset of A in the adapters.
    pub a: usize,
    /// Offset of B in the adapters.
    pub b: usize,
}

/// The adapters of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapters {
    /// r.
    pub rank: usize,
    /// α/r.
    pub scale: f32,
    /// The adapted layers.
    pub layers: Vec<AdaptedLayer>,
    /// Number of adapter values.
    pub len: usize,
}

impl Adapters {
    /// The adapters `plan` asks for on `model`; a rank of 0, a layer that does not exist or
    /// one named twice is an error that says what is allowed.
    pub fn new(model: &ModelSpec, plan: &LoraPlan) -> Result<Self, ModelError> {
        let layout = model.layout();
        let dense = layout.tensors.len() / 2;
        if plan.rank == 0 || plan.rank > MAX_RANK {
            return Err(ModelError::LoraRank(plan.rank));
        }
        if plan.layers.is_empty() {
            return Err(ModelError::LoraNoLayers);
        }
        let alpha = plan.alpha.unwrap_or(plan.rank as f32);
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(ModelError::LoraAlpha(alpha));
        }
        let mut layers = Vec::new();
        let mut at = 0;
        for (k, &l) in plan.layers.iter().enumerate() {
            if plan.layers[..k].contains(&l) {
                return Err(ModelError::LoraLayerTwice(l));
            }
            let Some(w) = (l < dense).then(|| &layout.tensors[2 * l]) else {
                return Err(ModelError::LoraNoSuchLayer {
                    layer: l,
                    model: model.describe(),
                    last: dense.saturating_sub(1),
                });
            };
            let (fan_in, fan_out) = (w.shape[0], w.shape[1]);
            layers.push(AdaptedLayer {
                weight: w.offset,
                fan_in,
                fan_out,
                a: at,
                b: at + fan_in * plan.rank,
            });
            at += plan.rank * (fan_in + fan_out);
        }
        Ok(Adapters {
            rank: plan.rank,
            scale: alpha / plan.rank as f32,
            layers,
            len: at,
        })
    }

    /// Fresh adapters: A uniform in ±1/√in (from `seed`), B zero.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut out = vec![0.0f32; self.len];
        for l in &self.layers {
            let bound = 1.0 / (l.fan_in as f32).sqrt();
            for v in &mut out[l.a..l.b] {
                *v = rng.random_range(-bound..bound);
            }
        }
        out
    }

    /// The full model: `base` with W + (α/r)·A·B in every adapted layer.
    pub fn merge(&self, base: &[f32], adapters: &[f32]) -> Vec<f32> {
        let mut out = base.to_vec();
        let r = self.rank;
        for l in &self.layers {
            for i in 0..l.fan_in {
                for j in 0..l.fan_out {
                    let mut d = 0.0f32;
                    for k in 0..r {
                        d += adapters[l.a + i * r + k] * adapters[l.b + k * l.fan_out + j];
                    }
                    out[l.weight + i * l.fan_out + j] += self.scale * d;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::initial_params;

    fn churn() -> ModelSpec {
        ModelSpec {
            inputs: 22,
            hidden: vec![32],
        }
    }

    #[test]
    fn fresh_adapters_leave_the_base_exactly_and_are_small() {
        let plan = LoraPlan {
            rank: 4,
            layers: vec![0],
            alpha: None,
        };
        let a = Adapters::new(&churn(), &plan).unwrap();
        assert_eq!(a.len, 4 * (22 + 32));
        let base = initial_params(&churn(), 1);
        assert_eq!(a.merge(&base, &a.init(2)), base);
        for (plan, hint) in [
            (
                LoraPlan {
                    rank: 0,
                    ..plan.clone()
                },
                "between 1 and",
            ),
            (
                LoraPlan {
                    rank: 1 << 62,
                    ..plan.clone()
                },
                "between 1 and",
            ),
            (
                LoraPlan {
                    layers: vec![usize::MAX],
                    ..plan.clone()
                },
                "does not exist",
            ),
            (
                LoraPlan {
                    layers: vec![2],
                    ..plan.clone()
                },
                "dense layers 0 to 1",
            ),
            (
                LoraPlan {
                    layers: vec![0, 0],
                    ..plan.clone()
                },
                "twice",
            ),
            (
                LoraPlan {
                    layers: vec![],
                    ..plan.clone()
                },
                "at least one",
            ),
            (
                LoraPlan {
                    alpha: Some(-1.0),
                    ..plan.clone()
                },
                "positive",
            ),
        ] {
            let e = Adapters::new(&churn(), &plan).unwrap_err();
            assert!(e.to_string().contains(hint), "{e}");
        }
    }

    #[test]
    fn the_merge_adds_the_scaled_product() {
        let spec = ModelSpec {
            inputs: 2,
            hidden: vec![],
        };
        let plan = LoraPlan {
            rank: 1,
            layers: vec![0],
            alpha: Some(2.0),
        };
        let a = Adapters::new(&spec, &plan).unwrap();
        // A = [1, 2]ᵀ, B = [3]: W += 2·[3, 6]ᵀ; the bias is untouched.
        let merged = a.merge(&[0.5, 0.5, 0.1], &[1.0, 2.0, 3.0]);
        assert_eq!(merged, vec![6.5, 12.5, 0.1]);
    }
}
