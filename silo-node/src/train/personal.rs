//! Personalisation, FedPer-style (Arivazhagan et al. 2019): the body of the model is the
//! federation's, the head (the last dense layer) is the silo's own. Whenever the silo scores a
//! candidate it puts its own head on that body, fine-tunes the head alone on its training
//! split, and scores the result beside the candidate. The fine-tuned head is kept only if the
//! candidate becomes the model the next round trains from: a rejected candidate leaves the
//! silo's head as it was.
//!
//! [`PersonalHead`] keeps the heads of any architecture (the MLP's last layer, a text
//! classifier's head), keyed by the architecture they belong to; how a head is fine-tuned is
//! the trainer's business (`ModelTrainer::personalise`).

use std::collections::VecDeque;

use fedsilo::model::{Architecture, Digest};

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
    use fedsilo::model::ModelSpec;

    #[test]
    fn a_head_is_the_silos_once_its_candidate_is_trained_from_and_only_for_its_architecture() {
        let mlp = |h: usize| {
            Architecture::Mlp(ModelSpec {
                inputs: 2,
                hidden: vec![h],
            })
        };
        let (v1, v2) = (Digest::of_bytes(b"v1"), Digest::of_bytes(b"v2"));
        let mut mine = PersonalHead::default();
        mine.stage(v1, mlp(6), vec![1.0, 2.0]);
        assert_eq!(mine.own(&mlp(6)), None, "staged, not yet the silo's");
        mine.adopt(v2);
        assert_eq!(
            mine.own(&mlp(6)),
            None,
            "another candidate was trained from"
        );
        mine.adopt(v1);
        assert_eq!(mine.own(&mlp(6)), Some(&[1.0, 2.0][..]));
        assert_eq!(
            mine.own(&mlp(3)),
            None,
            "another architecture starts from the global head"
        );
        // Restaging a candidate replaces its head; only the last few wait.
        mine.stage(v2, mlp(6), vec![3.0]);
        mine.stage(v2, mlp(6), vec![4.0]);
        for i in 0..STAGED {
            mine.stage(Digest::of_bytes(&[i as u8]), mlp(6), vec![]);
        }
        mine.adopt(v2);
        assert_eq!(
            mine.own(&mlp(6)),
            Some(&[1.0, 2.0][..]),
            "v2's head was dropped"
        );
    }
}
