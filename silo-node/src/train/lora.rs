//! LoRA adapters (Hu et al. 2021) for the built-in MLP's dense layers.
//!
//! A layer's frozen weight W `[in, out]` is used as W + (α/r)·A·B, with A `[in, r]` and
//! B `[r, out]` the adapter: only A and B are trained (and, in a federation, sent), r·(in + out)
//! values instead of in·out. A starts small and random, B at zero, so an adapted model starts
//! exactly as its base. Gradients come from the full model's: with G = ∂L/∂W,
//! ∂L/∂A = (α/r)·G·Bᵀ and ∂L/∂B = (α/r)·Aᵀ·G.

use fedsilo::model::ModelSpec;
use ndarray::{ArrayView1, ArrayView2};
use rand::{Rng, SeedableRng};

use super::Mlp;

/// Which layers get adapters, and how large.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// r: the adapters' rank (≥ 1).
    pub rank: usize,
    /// The dense layers adapted, by index (0 = the first).
    pub layers: Vec<usize>,
    /// α: the adapters' output is scaled by α/r.
    pub alpha: f32,
}

/// One adapted layer: where its weight sits in the model, and its A and B in the adapters.
#[derive(Debug, Clone, PartialEq)]
struct Adapted {
    weight: usize,
    fan_in: usize,
    fan_out: usize,
    a: usize,
    b: usize,
}

/// The adapters of one model: their layout in a flat vector.
#[derive(Debug, Clone)]
pub struct Lora {
    rank: usize,
    scale: f32,
    layers: Vec<Adapted>,
    len: usize,
    mlp: Mlp,
}

impl Lora {
    /// Adapters for `model` as `spec` asks; a layer that does not exist or a rank of 0 is an
    /// error that says what is allowed.
    pub fn new(model: &ModelSpec, spec: &LoraSpec) -> Result<Self, String> {
        let layout = model.layout();
        let dense = layout.tensors.len() / 2;
        if spec.rank == 0 {
            return Err("lora rank 0: must be at least 1".into());
        }
        let mut layers = Vec::new();
        let mut at = 0;
        for &l in &spec.layers {
            let Some(w) = layout.tensors.get(2 * l) else {
                return Err(format!(
                    "lora layer {l}: the model `{}` has dense layers 0 to {}",
                    model.describe(),
                    dense.saturating_sub(1)
                ));
            };
            let (fan_in, fan_out) = (w.shape[0], w.shape[1]);
            layers.push(Adapted {
                weight: w.offset,
                fan_in,
                fan_out,
                a: at,
                b: at + fan_in * spec.rank,
            });
            at += spec.rank * (fan_in + fan_out);
        }
        Ok(Lora {
            rank: spec.rank,
            scale: spec.alpha / spec.rank as f32,
            layers,
            len: at,
            mlp: Mlp::new(model),
        })
    }

    /// Number of adapter values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none (no layer adapted).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fresh adapters: A uniform in ±1/√in, B zero (the adapted model equals its base).
    pub fn init(&self, seed: u64) -> Vec<f32> {
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

    fn a<'v>(&self, l: &Adapted, adapters: &'v [f32]) -> ArrayView2<'v, f32> {
        // The layout is derived from the spec; shapes always fit the slice.
        ArrayView2::from_shape((l.fan_in, self.rank), &adapters[l.a..l.b]).expect("A shape")
    }

    fn b<'v>(&self, l: &Adapted, adapters: &'v [f32]) -> ArrayView2<'v, f32> {
        ArrayView2::from_shape(
            (self.rank, l.fan_out),
            &adapters[l.b..l.b + self.rank * l.fan_out],
        )
        .expect("B shape")
    }

    /// The full model: `base` with W + (α/r)·A·B in every adapted layer.
    pub fn merge(&self, base: &[f32], adapters: &[f32]) -> Vec<f32> {
        let mut out = base.to_vec();
        for l in &self.layers {
            let ab = self.a(l, adapters).dot(&self.b(l, adapters));
            for (w, d) in out[l.weight..l.weight + l.fan_in * l.fan_out]
                .iter_mut()
                .zip(ab.iter())
            {
                *w += self.scale * d;
            }
        }
        out
    }

    /// Mean loss of the adapted model on a batch, and its gradient with respect to the
    /// adapters written into `grad` (`len()` values, overwritten). `base` stays frozen.
    pub fn loss_and_grad(
        &self,
        base: &[f32],
        adapters: &[f32],
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        grad: &mut [f32],
    ) -> f64 {
        let merged = self.merge(base, adapters);
        let mut full = vec![0.0f32; merged.len()];
        let loss = self.mlp.loss_and_grad(&merged, x, y, &mut full);
        for l in &self.layers {
            let g = ArrayView2::from_shape(
                (l.fan_in, l.fan_out),
                &full[l.weight..l.weight + l.fan_in * l.fan_out],
            )
            .expect("weight shape");
            let da = g.dot(&self.b(l, adapters).t()) * self.scale;
            let db = self.a(l, adapters).t().dot(&g) * self.scale;
            grad[l.a..l.b]
                .iter_mut()
                .zip(da.iter())
                .for_each(|(o, v)| *o = *v);
            grad[l.b..l.b + self.rank * l.fan_out]
                .iter_mut()
                .zip(db.iter())
                .for_each(|(o, v)| *o = *v);
        }
        loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo::model::initial_params;
    use ndarray::array;

    fn setup() -> (ModelSpec, Lora) {
        let model = ModelSpec {
            inputs: 3,
            hidden: vec![4],
        };
        let lora = Lora::new(
            &model,
            &LoraSpec {
                rank: 2,
                layers: vec![0, 1],
                alpha: 2.0,
            },
        )
        .unwrap();
        (model, lora)
    }

    #[test]
    fn fresh_adapters_leave_the_base_unchanged_and_are_small() {
        let (model, lora) = setup();
        let base = initial_params(&model, 1);
        assert_eq!(lora.merge(&base, &lora.init(3)), base);
        // r·(in + out) per layer: 2·(3+4) + 2·(4+1) = 24 values, against 21 weights here; on
        // the churn model (22-32-1, rank 4 on layer 0) 216 against 704.
        assert_eq!(lora.len(), 24);
        let churn = ModelSpec {
            inputs: 22,
            hidden: vec![32],
        };
        let small = Lora::new(
            &churn,
            &LoraSpec {
                rank: 4,
                layers: vec![0],
                alpha: 4.0,
            },
        )
        .unwrap();
        assert_eq!(small.len(), 4 * (22 + 32));
        let e = Lora::new(
            &churn,
            &LoraSpec {
                rank: 4,
                layers: vec![2],
                alpha: 4.0,
            },
        )
        .unwrap_err();
        assert!(e.contains("dense layers 0 to 1"), "{e}");
    }

    /// The adapters' gradient against finite differences of the adapted model's loss.
    #[test]
    fn adapter_gradients_match_finite_differences() {
        let (model, lora) = setup();
        let base = initial_params(&model, 1);
        // Non-zero B, so that both factors have a gradient.
        let adapters: Vec<f32> = lora
            .init(3)
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.1 * ((i % 5) as f32 - 2.0))
            .collect();
        let x = array![[0.5f32, -1.0, 2.0], [1.5, 0.3, -0.7], [-0.2, 0.8, 0.1]];
        let y = array![1.0f32, 0.0, 1.0];
        let mut g = vec![0.0; lora.len()];
        lora.loss_and_grad(&base, &adapters, x.view(), y.view(), &mut g);
        let mut scratch = vec![0.0; lora.len()];
        for i in 0..adapters.len() {
            let eps = 1e-2f32;
            let mut p = adapters.clone();
            p[i] += eps;
            let lp = lora.loss_and_grad(&base, &p, x.view(), y.view(), &mut scratch);
            p[i] -= 2.0 * eps;
            let lm = lora.loss_and_grad(&base, &p, x.view(), y.view(), &mut scratch);
            let num = (lp - lm) / (2.0 * eps as f64);
            assert!(
                (num - g[i] as f64).abs() < 2e-3,
                "adapter value {i}: numeric {num} vs analytic {}",
                g[i]
            );
        }
    }
}
