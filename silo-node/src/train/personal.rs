//! Personalisation, FedPer-style (Arivazhagan et al. 2019): the body of the model is the
//! federation's, the head (the last dense layer) is the silo's own. Whenever the silo scores a
//! candidate it puts its own head on that body, fine-tunes the head alone on its training
//! split, and scores the result beside the candidate. The fine-tuned head is kept only if the
//! candidate becomes the model the next round trains from: a rejected candidate leaves the
//! silo's head as it was.
//!
//! [`PersonalHead`] keeps the heads of any architecture (the MLP's last layer, a text
//! classifier's head), keyed by the architecture they belong to; how a head is fine-tuned is
//! the trainer's business — for the MLP, [`PersonalHead::personalise`] here.

use std::collections::VecDeque;

use fedsilo::model::{Architecture, Digest, ModelSpec};
use ndarray::{Array1, Array2};

use super::{train, Mlp, Sgd};

/// Candidates whose fine-tuned heads wait to learn whether they were committed.
const STAGED: usize = 3;

/// A silo's own head, kept between rounds (in memory: a restarted silo starts again from the
/// global head).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersonalHead {
    head: Option<(Architecture, Vec<f32>)>,
    staged: VecDeque<(Digest, Architecture, Vec<f32>)>,
}

impl PersonalHead {
    /// This silo's own head for models of `arch`, if it has one.
    pub fn own(&self, arch: &Architecture) -> Option<&[f32]> {
        match &self.head {
            Some((a, h)) if a == arch => Some(h),
            _ => None,
        }
    }

    /// `head`, fine-tuned on candidate `model` (of `arch`), waits until [`PersonalHead::adopt`]
    /// names `model`.
    pub fn stage(&mut self, model: Digest, arch: Architecture, head: Vec<f32>) {
        self.staged.retain(|(d, _, _)| *d != model);
        self.staged.push_back((model, arch, head));
        while self.staged.len() > STAGED {
            self.staged.pop_front();
        }
    }

    /// The personalised model for `global` (of `spec`, digest `model`): the global body with
    /// this silo's head, the head fine-tuned on `(x, y)` as `sgd` says (its `train_from` is set
    /// here). The fine-tuned head waits until [`PersonalHead::adopt`] names `model`.
    pub fn personalise(
        &mut self,
        model: Digest,
        spec: &ModelSpec,
        global: &[f32],
        x: &Array2<f32>,
        y: &Array1<f32>,
        sgd: Sgd,
    ) -> Vec<f32> {
        let arch = Architecture::Mlp(spec.clone());
        let layout = spec.layout();
        // The last layer's weight then bias: the end of the flat vector.
        let from = layout.tensors.iter().rev().nth(1).map_or(0, |t| t.offset);
        let mut params = global.to_vec();
        if let Some(head) = self.own(&arch) {
            if head.len() == params.len() - from {
                params[from..].copy_from_slice(head);
            }
        }
        let sgd = Sgd {
            train_from: from,
            ..sgd
        };
        train(&Mlp::new(spec), &mut params, x, y, sgd);
        self.stage(model, arch, params[from..].to_vec());
        params
    }

    /// The round trains from `model`: the head fine-tuned on it, if any, becomes this silo's.
    pub fn adopt(&mut self, model: Digest) {
        if let Some(i) = self.staged.iter().position(|(d, _, _)| *d == model) {
            if let Some((_, arch, head)) = self.staged.remove(i) {
                self.head = Some((arch, head));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::evaluate;
    use fedsilo::model::initial_params;

    #[test]
    fn only_the_head_is_trained_and_it_is_kept_between_rounds() {
        let (x, y) = crate::train::separable(300, 4);
        let spec = ModelSpec {
            inputs: 2,
            hidden: vec![6],
        };
        let global = initial_params(&spec, 5);
        let sgd = Sgd {
            epochs: 5,
            batch_size: 16,
            learning_rate: 0.5,
            prox_mu: 0.0,
            train_from: 0,
            seed: 1,
        };
        let mut mine = PersonalHead::default();
        let v1 = Digest::of_f32(&global);
        let first = mine.personalise(v1, &spec, &global, &x, &y, sgd);
        let head_from = 2 * 6 + 6;
        assert_eq!(
            first[..head_from],
            global[..head_from],
            "the body is frozen"
        );
        assert_ne!(first[head_from..], global[head_from..], "the head moved");
        let mlp = Mlp::new(&spec);
        let (g, p) = (
            evaluate(&mlp, &global, &x, &y).loss,
            evaluate(&mlp, &first, &x, &y).loss,
        );
        assert!(p < g, "personalised {p} vs global {g}");
        // Until the candidate is trained from, the silo's head stays the global one.
        let again = mine.personalise(v1, &spec, &global, &x, &y, Sgd { epochs: 0, ..sgd });
        assert_eq!(again[head_from..], global[head_from..]);
        // Once it is, the next round's head starts where fine-tuning ended.
        mine.personalise(v1, &spec, &global, &x, &y, sgd);
        mine.adopt(v1);
        let second = mine.personalise(v1, &spec, &global, &x, &y, Sgd { epochs: 0, ..sgd });
        assert_eq!(second[head_from..], first[head_from..]);
        // Another architecture starts again from the global head.
        let other = ModelSpec {
            inputs: 2,
            hidden: vec![3],
        };
        let g2 = initial_params(&other, 5);
        let fresh = mine.personalise(
            Digest::of_f32(&g2),
            &other,
            &g2,
            &x,
            &y,
            Sgd { epochs: 0, ..sgd },
        );
        assert_eq!(fresh, g2);
    }
}
