//! Forward and backward passes of the MLP over a flat parameter vector.

use fedsilo::model::{Layout, ModelSpec};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis};

/// An MLP view of a [`ModelSpec`]: knows where each layer's weights sit in the flat vector.
#[derive(Debug, Clone)]
pub struct Mlp {
    spec: ModelSpec,
    layout: Layout,
}

impl Mlp {
    /// For `spec`.
    pub fn new(spec: &ModelSpec) -> Self {
        Self {
            spec: spec.clone(),
            layout: spec.layout(),
        }
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.layout.len
    }

    /// Whether the model has no parameters (never, for a valid spec).
    pub fn is_empty(&self) -> bool {
        self.layout.len == 0
    }

    /// Input width.
    pub fn inputs(&self) -> usize {
        self.spec.inputs
    }

    fn layers(&self) -> usize {
        self.layout.tensors.len() / 2
    }

    fn weight<'a>(&self, p: &'a [f32], l: usize) -> ArrayView2<'a, f32> {
        let t = &self.layout.tensors[2 * l];
        // The layout is derived from the spec; shapes always fit the slice.
        ArrayView2::from_shape((t.shape[0], t.shape[1]), &p[t.offset..t.offset + t.len()])
            .expect("layout shape")
    }

    fn bias<'a>(&self, p: &'a [f32], l: usize) -> ArrayView1<'a, f32> {
        let t = &self.layout.tensors[2 * l + 1];
        ArrayView1::from(&p[t.offset..t.offset + t.len()])
    }

    fn weight_mut<'a>(&self, g: &'a mut [f32], l: usize) -> ArrayViewMut2<'a, f32> {
        let t = &self.layout.tensors[2 * l];
        ArrayViewMut2::from_shape(
            (t.shape[0], t.shape[1]),
            &mut g[t.offset..t.offset + t.len()],
        )
        .expect("layout shape")
    }

    fn bias_mut<'a>(&self, g: &'a mut [f32], l: usize) -> ArrayViewMut1<'a, f32> {
        let t = &self.layout.tensors[2 * l + 1];
        ArrayViewMut1::from(&mut g[t.offset..t.offset + t.len()])
    }

    /// Predicted probabilities for each row of `x`.
    pub fn predict(&self, params: &[f32], x: ArrayView2<f32>) -> Array1<f32> {
        let (_, logits) = self.forward(params, x);
        logits.mapv(sigmoid)
    }

    /// Forward pass: the activations of every hidden layer (post-ReLU, input first) and the
    /// output logits.
    fn forward(&self, params: &[f32], x: ArrayView2<f32>) -> (Vec<Array2<f32>>, Array1<f32>) {
        let mut acts: Vec<Array2<f32>> = vec![x.to_owned()];
        let last = self.layers() - 1;
        for l in 0..last {
            let mut z = acts[l].dot(&self.weight(params, l));
            z += &self.bias(params, l);
            z.mapv_inplace(|v| v.max(0.0));
            acts.push(z);
        }
        let mut out = acts[last].dot(&self.weight(params, last));
        out += &self.bias(params, last);
        (acts, out.index_axis(Axis(1), 0).to_owned())
    }

    /// Mean binary cross-entropy of the batch, and its gradient written into `grad` (same
    /// layout as `params`, overwritten).
    pub fn loss_and_grad(
        &self,
        params: &[f32],
        x: ArrayView2<f32>,
        y: ArrayView1<f32>,
        grad: &mut [f32],
    ) -> f64 {
        let b = x.nrows().max(1) as f32;
        let (acts, logits) = self.forward(params, x);
        let loss = bce_from_logits(logits.view(), y);
        // dL/dlogit = (sigmoid(z) − y) / B
        let mut delta: Array2<f32> = (logits.mapv(sigmoid) - y)
            .mapv(|d| d / b)
            .insert_axis(Axis(1));
        for l in (0..self.layers()).rev() {
            let a_prev = &acts[l];
            self.weight_mut(grad, l).assign(&a_prev.t().dot(&delta));
            self.bias_mut(grad, l).assign(&delta.sum_axis(Axis(0)));
            if l > 0 {
                let mut d_prev = delta.dot(&self.weight(params, l).t());
                d_prev.zip_mut_with(a_prev, |d, a| {
                    if *a <= 0.0 {
                        *d = 0.0
                    }
                });
                delta = d_prev;
            }
        }
        loss
    }
}

/// Logistic function.
pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Mean binary cross-entropy computed stably from logits.
pub fn bce_from_logits(logits: ArrayView1<f32>, y: ArrayView1<f32>) -> f64 {
    let n = logits.len().max(1) as f64;
    logits
        .iter()
        .zip(y.iter())
        .map(|(&z, &t)| {
            let z = z as f64;
            z.max(0.0) - z * t as f64 + (-z.abs()).exp().ln_1p()
        })
        .sum::<f64>()
        / n
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo::model::initial_params;
    use ndarray::array;

    #[test]
    fn gradient_matches_finite_differences() {
        let spec = ModelSpec {
            inputs: 3,
            hidden: vec![4, 3],
        };
        let mlp = Mlp::new(&spec);
        let p = initial_params(&spec, 3);
        let x = array![[0.5f32, -1.0, 2.0], [1.5, 0.3, -0.7], [-0.2, 0.8, 0.1]];
        let y = array![1.0f32, 0.0, 1.0];
        let mut g = vec![0.0; mlp.len()];
        mlp.loss_and_grad(&p, x.view(), y.view(), &mut g);
        let mut scratch = vec![0.0; mlp.len()];
        for i in (0..p.len()).step_by(3) {
            let eps = 1e-2f32;
            let mut pp = p.clone();
            pp[i] += eps;
            let lp = mlp.loss_and_grad(&pp, x.view(), y.view(), &mut scratch);
            pp[i] -= 2.0 * eps;
            let lm = mlp.loss_and_grad(&pp, x.view(), y.view(), &mut scratch);
            let num = (lp - lm) / (2.0 * eps as f64);
            assert!(
                (num - g[i] as f64).abs() < 2e-3,
                "param {i}: numeric {num} vs analytic {}",
                g[i]
            );
        }
    }

    #[test]
    fn stable_bce() {
        let l = bce_from_logits(array![100.0f32, -100.0].view(), array![1.0f32, 0.0].view());
        assert!(l.is_finite() && l < 1e-10);
    }
}
